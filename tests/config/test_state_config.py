"""``key`` and ``state`` on a sink: the model they become and the located errors they raise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from topology.config import StateSpec, check

HANDLERS = """\
def count(event, state):
    state["n"] = state.get("n", 0) + 1

def forward(event):
    return None

def user(event):
    return event.json()["user"]

def two(event, other):
    return ""
"""


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A config folder with its handlers module; sys.path and sys.modules left as found."""
    path, modules = list(sys.path), set(sys.modules)
    (tmp_path / "st_handlers.py").write_text(HANDLERS)
    yield tmp_path
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def _check(folder: Path, sink: str) -> tuple[object, list[str]]:
    text = f"""\
version: 1
name: t
streams:
  clicks: {{}}
  out: {{}}
sinks:
  s:
    streams: [clicks]
    outputs: [out]
{sink}"""
    path = folder / "t.yaml"
    path.write_text(text)
    topology, problems = check(path)
    return topology, [str(p) for p in problems]


def test_state_with_a_dotted_key_and_a_ttl_becomes_the_model(folder: Path) -> None:
    topology, problems = _check(
        folder,
        "    handler: st_handlers:count\n    key: customer.id\n    state: {ttl: 7d}\n",
    )
    assert problems == []
    sink = topology.sinks["s"]  # type: ignore[attr-defined]
    assert sink.key == "customer.id"
    assert sink.state == StateSpec(ttl=7 * 86400.0)


def test_state_without_ttl_and_sinks_without_state(folder: Path) -> None:
    topology, problems = _check(
        folder, "    handler: st_handlers:count\n    key: st_handlers:user\n    state: {}\n"
    )
    assert problems == []
    assert topology.sinks["s"].state == StateSpec(ttl=None)  # type: ignore[attr-defined]
    topology, _ = _check(folder, "    handler: st_handlers:forward\n")
    assert topology.sinks["s"].state is None and topology.sinks["s"].key is None  # type: ignore[attr-defined]


def test_state_without_key_is_a_located_error(folder: Path) -> None:
    topology, problems = _check(folder, "    handler: st_handlers:count\n    state: {}\n")
    assert topology is None
    assert any(
        p.startswith(f"{folder / 't.yaml'}:11:5: sinks.s.state: state needs a key")
        for p in problems
    ), problems


def test_an_unimportable_key_function_is_a_located_error(folder: Path) -> None:
    topology, problems = _check(
        folder, "    handler: st_handlers:count\n    key: st_handlers:usr\n    state: {}\n"
    )
    assert topology is None
    assert any(
        ":11:10: sinks.s.key:" in p and "has no attribute 'usr' (did you mean 'user'?)" in p
        for p in problems
    ), problems


def test_a_key_function_must_take_the_event(folder: Path) -> None:
    topology, problems = _check(
        folder, "    handler: st_handlers:count\n    key: st_handlers:two\n    state: {}\n"
    )
    assert topology is None
    assert any(
        "sinks.s.key: st_handlers:two(event, other) cannot be called as key(event)" in p
        for p in problems
    )


def test_a_stateful_handler_must_take_event_and_state(folder: Path) -> None:
    topology, problems = _check(
        folder, "    handler: st_handlers:forward\n    key: user\n    state: {}\n"
    )
    assert topology is None
    assert any(
        ":10:14: sinks.s.handler: st_handlers:forward(event) cannot be called as "
        "handler(event, state)" in p
        for p in problems
    ), problems


def test_key_without_state_is_a_warning(folder: Path) -> None:
    topology, problems = _check(folder, "    handler: st_handlers:forward\n    key: user\n")
    assert topology is not None
    assert any("warning" in p and "key without state" in p for p in problems), problems


def test_state_is_a_mapping_with_only_ttl(folder: Path) -> None:
    topology, problems = _check(
        folder, "    handler: st_handlers:count\n    key: user\n    state: {ttl: 7 days}\n"
    )
    assert topology is None
    assert any("sinks.s.state.ttl" in p for p in problems), problems
    topology, problems = _check(
        folder, "    handler: st_handlers:count\n    key: user\n    state: {size: 3}\n"
    )
    assert topology is None
    assert any("sinks.s.state" in p and "size" in p for p in problems), problems


def test_a_handler_taking_state_needs_state(folder: Path) -> None:
    topology, problems = _check(folder, "    handler: st_handlers:count\n")
    assert topology is None
    assert any(
        "sinks.s.handler: st_handlers:count(event, state) cannot be called as handler(event)" in p
        for p in problems
    ), problems


@pytest.mark.parametrize("key", ["customer..id", ".id", "customer."])
def test_a_key_path_with_an_empty_field_is_a_located_error(folder: Path, key: str) -> None:
    topology, problems = _check(
        folder, f"    handler: st_handlers:count\n    key: '{key}'\n    state: {{}}\n"
    )
    assert topology is None
    assert any(f":11:10: sinks.s.key: invalid key path {key!r}" in p for p in problems), problems
