"""Bounded cost for any input: size before parsing, node count and depth while composing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from topology.cli import main
from topology.config import MAX_BYTES, check, check_text
from topology.config._semantic import MAX_CYCLES
from topology.config._yaml import MAX_DEPTH, MAX_NODES

HEAD = "version: 1\nname: t\n"


def test_a_file_over_the_byte_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    # Not YAML at all past the limit: parsing it would report a syntax error instead.
    path.write_bytes(HEAD.encode() + b"#" * MAX_BYTES + b"\n: [")
    topology, problems = check(path)
    assert topology is None
    assert [(p.line, p.col, p.message) for p in problems] == [
        (1, 1, "file too large: a config may hold at most 1000000 bytes (1 MB)")
    ]


def test_text_over_the_byte_limit_is_refused_too() -> None:
    # apply, a deployment's published text and a reload all go through check_text.
    text = HEAD + "# " + "é" * (MAX_BYTES // 2) + "\n"  # under the limit in characters
    topology, problems = check_text(text, env={})
    assert topology is None and "file too large" in problems[0].message


def test_a_file_at_the_limit_is_read() -> None:
    text = HEAD + "#" * (MAX_BYTES - len(HEAD) - 1) + "\n"
    _, problems = check_text(text, env={})
    assert all("too large" not in p.message for p in problems)


def test_node_count_is_bounded_while_composing() -> None:
    items = MAX_NODES * 2
    text = HEAD + "streams: [" + "1," * items + "]\n"
    _, problems = check_text(text, env={})
    (problem,) = problems
    assert problem.message == f"document too large: more than {MAX_NODES} nodes"
    # Located at the first node over the bound, not at the end: composing stopped there.
    assert problem.line == 3 and problem.col < len("streams: [") + 2 * MAX_NODES + 1


@pytest.mark.parametrize("opening", ["[", "{a: ", "- "])
def test_deep_nesting_is_a_located_error(opening: str) -> None:
    if opening == "- ":
        nested = "".join(" " * i + "-\n" for i in range(200))
        text = HEAD + "streams:\n" + nested
    else:
        text = HEAD + "streams: " + opening * 1000 + "\n"
    topology, problems = check_text(text, env={})
    assert topology is None
    (problem,) = problems
    assert problem.message == f"nested too deeply: more than {MAX_DEPTH} levels"
    assert problem.line >= 3 and problem.col >= 1


def test_nesting_through_aliases_is_bounded_as_well() -> None:
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 2 * MAX_DEPTH)]
    _, problems = check_text("\n".join(lines) + "\n", env={})
    assert any("nested too deeply" in p.message for p in problems)


def test_binary_garbage_is_located_at_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"version: 1\nname: ab\xff\xfe\n")
    _, problems = check(path)
    assert [(p.line, p.col, p.message) for p in problems] == [
        (2, 9, "not UTF-8 text: byte 0xff (a config is UTF-8)")
    ]


def test_deep_nesting_on_the_command_line_exits_2_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(HEAD + "streams: " + "[" * 1000 + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "topology.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr
        == f"{path}:3:{10 + MAX_DEPTH - 1}: (root): nested too deeply: more than 64 levels\n"
    )


def test_apply_refuses_an_oversized_file_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_BYTES + 1))
    # A closed port: had apply tried to connect, it would fail with exit 1.
    assert main(["apply", str(path), "--redis-url", "redis://127.0.0.1:1"]) == 2
    assert (
        capsys.readouterr().err
        == f"{path}:1:1: (file): file too large: a config may hold at most 1000000 bytes (1 MB)\n"
    )


def test_a_dense_graph_lists_the_first_cycles_and_says_there_are_more() -> None:
    # Every sink reads and writes every stream: more elementary cycles than atoms.
    names = [f"s{i}" for i in range(12)]
    streams = "".join(f"  {n}: {{}}\n" for n in names)
    sinks = "".join(
        f"  k{i}:\n    streams: [{', '.join(names)}]\n    handler: h:f\n"
        f"    outputs: [{', '.join(names)}]\n"
        for i in range(12)
    )
    text = f"{HEAD}streams:\n{streams}sinks:\n{sinks}"
    topology, problems = check_text(text, env={}, import_callables=False)
    assert topology is None
    cycles = [p for p in problems if p.message.startswith("cycle: ")]
    assert len(cycles) == MAX_CYCLES
    assert [p.message for p in problems if not p.message.startswith("cycle: ")] == [
        f"more cycles: only the first {MAX_CYCLES} are listed"
    ]


def test_a_cycle_closed_by_a_dead_letter_stream_is_located_there() -> None:
    text = HEAD + (
        "streams: {orders: {}, dlq: {}}\nsinks:\n"
        "  enrich: {streams: [orders], handler: 'h:f', dead_letter: dlq}\n"
        "  redrive: {streams: [dlq], handler: 'h:f', outputs: [orders]}\n"
    )
    _, problems = check_text(text, env={}, import_callables=False)
    assert [(p.line, p.path, p.message) for p in problems] == [
        (
            6,
            "sinks.redrive.outputs[0]",
            "cycle: orders -> enrich -> dlq -> redrive -> orders "
            "(set allow_cycles: true if it is intended)",
        )
    ]
