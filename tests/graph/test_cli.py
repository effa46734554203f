"""``graph`` and ``plan`` on the command line: outputs, files, and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from topology.cli import main
from topology.config import load
from topology.graph import build, cycles

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.endswith("_test.yaml"))
NASTY = Path(__file__).with_name("nasty-names.yaml")

VALID = """\
version: 1
name: small
streams:
  orders: {}
  out: {}
sinks:
  copy:
    streams: [orders]
    handler: small_handlers:copy
    consumers: {consumers}
    outputs: [out]
  tail:
    streams: [out]
    handler: small_handlers:copy
"""
HANDLERS = "def copy(event):\n    return None\n"


@pytest.fixture
def write(tmp_path: Path):
    (tmp_path / "small_handlers.py").write_text(HANDLERS)

    def write(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def small(consumers: int = 2) -> str:
    return VALID.replace("{consumers}", str(consumers))


BROKEN = small().replace("streams: [out]", "streams: [ou]")  # line 13, column 15


def test_examples_exist() -> None:
    assert ROOT / "configs" / "pipeline.yaml" in EXAMPLES


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda p: p.name)
def test_every_example_renders_in_every_format(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["graph", str(config)]) == 0
    assert capsys.readouterr().out.startswith("flowchart LR\n")
    assert main(["graph", str(config), "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith("digraph ")
    assert main(["graph", str(config), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    topology = load(config)
    actors = [n for n in data["nodes"] if n["kind"] == "actor"]
    assert len(actors) == topology.actor_count()


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda p: p.name)
def test_every_example_graph_is_consistent_with_its_model(config: Path) -> None:
    topology = load(config)
    graph = build(topology)
    for sink in topology.sinks.values():
        reads = [e for _, _, e in graph.in_edges(f"sink:{sink.name}", data=True)]
        assert sorted(e["stream"] for e in reads) == sorted(sink.stream_names)
    if not topology.allow_cycles:
        assert cycles(graph) == []


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda p: p.name)
def test_plan_from_an_example_to_itself_is_no_changes(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", str(config), str(config)]) == 0
    assert capsys.readouterr().out == "no changes\n"


def test_graph_writes_the_output_file(write, tmp_path: Path, capsys) -> None:
    config = write("small.yaml", small())
    target = tmp_path / "out.mmd"
    assert main(["graph", config, "-o", str(target)]) == 0
    assert capsys.readouterr().out == ""
    assert target.read_text().startswith("flowchart LR\n")
    assert "subgraph sink_copy" in target.read_text()


def test_graph_of_nasty_names_renders(capsys) -> None:
    assert main(["graph", str(NASTY)]) == 0
    out = capsys.readouterr().out
    assert "subgraph sink_u1f680" in out


def test_graph_of_an_invalid_config_exits_2_with_located_errors(write, capsys) -> None:
    config = write("broken.yaml", BROKEN)
    assert main(["graph", config]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{config}:13:15: sinks.tail.streams[0]: unknown stream 'ou'" in captured.err


def test_graph_of_a_missing_file_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["graph", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_graph_to_an_unwritable_file_exits_1(write, tmp_path: Path, capsys) -> None:
    config = write("small.yaml", small())
    assert main(["graph", config, "-o", str(tmp_path / "no-dir" / "out.mmd")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_graph_rejects_an_unknown_format(write, capsys) -> None:
    config = write("small.yaml", small())
    with pytest.raises(SystemExit) as exc:
        main(["graph", config, "--format", "svg"])
    assert exc.value.code == 2


def test_plan_prints_the_changes(write, capsys) -> None:
    old = write("old.yaml", small(consumers=2))
    new = write("new.yaml", small(consumers=4))
    assert main(["plan", old, new]) == 0
    assert capsys.readouterr().out == "sink copy: consumers 2 -> 4\n"


def test_plan_as_json(write, capsys) -> None:
    old = write("old.yaml", small(consumers=2))
    new = write(
        "new.yaml",
        small(consumers=4).replace(
            "handler: small_handlers:copy\n    consumers",
            "handler: small_handlers:copy\n    batch: 10\n    consumers",
        ),
    )
    assert main(["plan", old, new, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sinks_changed"] == [
        {
            "name": "copy",
            "streams_added": [],
            "streams_removed": [],
            "consumers": [2, 4],
            "restart": ["batch"],
            "needs_restart": True,
            "starts_changed": [],
            "code_changed": [],
        }
    ]
    assert data["empty"] is False


def test_plan_with_an_invalid_config_exits_2_reporting_both_files(write, capsys) -> None:
    old = write("old.yaml", BROKEN)
    new = write("new.yaml", BROKEN.replace("name: small", "name: small\nbogus: 1"))
    assert main(["plan", old, new]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{old}:13:15:" in captured.err
    assert f"{new}:" in captured.err and "bogus" in captured.err


def test_plan_between_two_deployments_says_the_rename_is_unsupported(capsys) -> None:
    fanout, pipeline = ROOT / "configs" / "fanout.yaml", ROOT / "configs" / "pipeline.yaml"
    if not fanout.exists():
        pytest.skip("configs/fanout.yaml not there")
    assert main(["plan", str(pipeline), str(fanout)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"unsupported: name {load(pipeline).name} -> {load(fanout).name}")
    assert any(line.endswith(": removed") for line in lines)
    assert any(": added" in line for line in lines)


def test_nasty_names_config_has_the_cycles_it_allows() -> None:
    topology = load(NASTY)
    assert topology.allow_cycles
    found = cycles(build(topology))
    assert ["sink:o", "stream:x", "sink:x", "stream:o"] in found


def test_graph_command_offers_every_renderer_format() -> None:
    from topology.cli.graph import _FORMATS
    from topology.render import FORMATS

    assert _FORMATS == FORMATS


def test_plan_says_when_only_the_handler_code_changed(tmp_path: Path, capsys) -> None:
    text = (
        "version: 1\nname: code\nstreams: {a: {}}\n"
        "sinks:\n  copy:\n    streams: [a]\n    handler: plan_code_handlers:handle\n"
    )
    paths = []
    for version in ("old", "new"):
        folder = tmp_path / version
        folder.mkdir()
        (folder / "plan_code_handlers.py").write_text(
            f"def handle(event):\n    return {version!r}\n"
        )
        (folder / "code.yaml").write_text(text)
        paths.append(str(folder / "code.yaml"))
    assert main(["plan", *paths]) == 0
    assert (
        capsys.readouterr().out
        == "sink copy: handler code changed (plan_code_handlers) (restart)\n"
    )
    assert main(["plan", paths[1], paths[1], "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["empty"] is True
