"""``*_test.yaml`` files: read, located, validated, turned into test cases.

The same pipeline as a config file, so a test file's errors read like
``validate``'s: the located YAML walk of ``topology.config``, the published
JSON Schema (``schemas/topology-test.schema.json``), then checks against the
config under test (stream and sink names, with a did-you-mean). Every problem
is collected in one pass; a file with any error runs no test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from topology.config import Problem, Topology, check, parse_duration
from topology.config._loader import read
from topology.config._problems import NodePath, format_path
from topology.config._schema import schema_errors
from topology.config._yaml import Document, Raw, parse

__all__ = [
    "TEST_FILE_GLOB",
    "TEST_SCHEMA",
    "ExpectedEvent",
    "GivenEvent",
    "TestCase",
    "TestFile",
    "check_test_file",
    "find_test_files",
]

#: What a test file is called: beside its config, ending in ``_test.yaml``.
TEST_FILE_GLOB = "*_test.yaml"
#: The published schema of test files (``schemas/``).
TEST_SCHEMA = "topology-test.schema.json"

#: Marks an expected event that says nothing about the payload.
_ANY = object()


@dataclass(frozen=True)
class GivenEvent:
    """An event a test adds to a stream before the sinks start."""

    name: str
    payload: Any = None
    topic: str | None = None


@dataclass(frozen=True)
class ExpectedEvent:
    """What one event of a stream must look like; unset fields match anything."""

    name: str | None = None
    topic: str | None = None
    payload: Any = _ANY
    payload_contains: Mapping[str, Any] | None = None

    @property
    def has_payload(self) -> bool:
        return self.payload is not _ANY


@dataclass(frozen=True)
class TestCase:
    """One entry of ``tests:``."""

    __test__ = False  # not a pytest test class

    name: str
    given: Mapping[str, tuple[GivenEvent, ...]] = field(default_factory=dict)
    expect: Mapping[str, tuple[ExpectedEvent, ...]] = field(default_factory=dict)
    state: Mapping[str, Mapping[str, Any]] | None = None
    sources: bool = False
    ordered: bool = False
    timeout: float | None = None
    line: int = 1


@dataclass(frozen=True)
class TestFile:
    """A valid test file and the validated config it tests."""

    __test__ = False

    path: Path
    topology: Topology
    tests: tuple[TestCase, ...]


def find_test_files(paths: list[Path]) -> tuple[list[Path], list[Problem]]:
    """Test files named by ``paths``: files named ``*_test.yaml``, folders searched recursively.

    Passing a config file by mistake is a located problem, not a page of schema errors.
    Hidden folders (an embedded server's ``.ponos-data``, ``.git``) are skipped.
    """
    found: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob(TEST_FILE_GLOB))
                if not any(part.startswith(".") for part in p.relative_to(path).parts[:-1])
            )
        elif path.name.endswith("_test.yaml"):
            found.append(path)  # missing: check_test_file says it cannot be read
        elif path.exists():
            hint = f"{path.name.rsplit('.', 1)[0]}_test.yaml"
            message = f"not a test file: tests are named *_test.yaml (e.g. {hint} beside a config)"
            problems.append(Problem(str(path), 1, 1, "(file)", message))
        else:
            problems.append(Problem(str(path), 1, 1, "(file)", "no such file or folder"))
    unique = list(dict.fromkeys(found))
    return unique, problems


def check_test_file(
    path: str | Path, env: Mapping[str, str] | None = None
) -> tuple[TestFile | None, tuple[Problem, ...]]:
    """The test file at ``path`` (None on any error) and every problem found.

    Problems of the config under test are included as ``validate`` reports
    them (located in the config file). Never raises for bad input.
    """
    file = str(path)
    text, problem = read(path)
    if text is None:
        assert problem is not None
        return None, (problem,)
    doc, raws = parse(text, os.environ if env is None else env)
    if doc.data is not None or not raws:
        raws.extend(schema_errors(doc, TEST_SCHEMA))
    checker = _Checker(doc, Path(path))
    topology, config_problems = checker.load_config()
    if topology is not None:
        checker.check_names(topology)
    problems = _located(file, raws + checker.raws) + config_problems
    if topology is None or any(p.is_error for p in problems):
        return None, problems
    return TestFile(Path(path), topology, checker.cases()), problems


def _located(file: str, raws: list[Raw]) -> tuple[Problem, ...]:
    problems = {
        Problem(file, max(r.line, 1), max(r.col, 1), format_path(r.path), r.message, r.severity)
        for r in raws
    }
    return tuple(sorted(problems, key=lambda p: (p.line, p.col, p.message)))


def _hint(name: str, known: list[str]) -> str:
    close = get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    """Checks a schema-valid document against its config; builds the test cases."""

    def __init__(self, doc: Document, path: Path) -> None:
        self.doc = doc
        self.path = path
        self.raws: list[Raw] = []

    def problem(self, path: NodePath, message: str, *, key: bool = False) -> None:
        line, col = self.doc.where_key(path) if key else self.doc.where(path)
        self.raws.append(Raw(line, col, path, message))

    def load_config(self) -> tuple[Topology | None, tuple[Problem, ...]]:
        data = self.doc.data
        written = data.get("config") if isinstance(data, dict) else None
        if not isinstance(written, str) or not written:
            return None, ()  # the schema said why
        config = self.path.parent / written
        if not config.is_file():
            siblings = sorted(
                p.name for p in self.path.parent.glob("*.y*ml") if not p.name.endswith("_test.yaml")
            )
            self.problem(("config",), f"no config file {written!r} here{_hint(written, siblings)}")
            return None, ()
        return check(config)

    def check_names(self, topology: Topology) -> None:
        """Names the schema cannot know: streams and sinks of the config, unique test names.

        Runs on documents the schema rejected too (every problem in one pass),
        so each step skips what does not have the shape it needs.
        """
        tests = self.doc.data.get("tests")
        seen: dict[str, int] = {}
        for i, test in enumerate(tests if isinstance(tests, list) else []):
            if not isinstance(test, dict):
                continue
            name = test.get("name")
            if isinstance(name, str) and name in seen:
                first = self.doc.where(("tests", seen[name]))[0]
                self.problem(
                    ("tests", i, "name"), f"duplicate test name {name!r} (first at line {first})"
                )
            elif isinstance(name, str):
                seen[name] = i
            for part in ("given", "expect"):
                self._check_streams(("tests", i, part), test.get(part), topology)
            self._check_sinks(("tests", i, "state"), test.get("state"), topology)

    def _check_streams(self, path: NodePath, streams: Any, topology: Topology) -> None:
        known = sorted(topology.streams)
        for stream, events in streams.items() if isinstance(streams, dict) else ():
            if stream not in topology.streams:
                message = f"unknown stream {stream!r}{_hint(stream, known)}"
                self.problem((*path, stream), message, key=True)
            for j, event in enumerate(events if isinstance(events, list) else []):
                if isinstance(event, dict) and "payload" in event and "payload_contains" in event:
                    where = (*path, stream, j, "payload_contains")
                    self.problem(where, "give payload or payload_contains, not both", key=True)

    def _check_sinks(self, path: NodePath, sinks: Any, topology: Topology) -> None:
        known = sorted(topology.sinks)
        for sink in sinks if isinstance(sinks, dict) else ():
            if sink not in topology.sinks:
                self.problem((*path, sink), f"unknown sink {sink!r}{_hint(sink, known)}", key=True)

    def cases(self) -> tuple[TestCase, ...]:
        out = []
        for i, test in enumerate(self.doc.data["tests"]):
            given = {
                stream: tuple(
                    GivenEvent(e["name"], e.get("payload"), e.get("topic")) for e in events
                )
                for stream, events in (test.get("given") or {}).items()
            }
            expect = {
                stream: tuple(
                    ExpectedEvent(
                        e.get("name"),
                        e.get("topic"),
                        e.get("payload", _ANY),
                        e.get("payload_contains"),
                    )
                    for e in events
                )
                for stream, events in (test.get("expect") or {}).items()
            }
            timeout = test.get("timeout")
            out.append(
                TestCase(
                    name=test["name"],
                    given=given,
                    expect=expect,
                    state=test.get("state"),
                    sources=bool(test.get("sources", False)),
                    ordered=bool(test.get("ordered", False)),
                    timeout=parse_duration(timeout) if timeout is not None else None,
                    line=self.doc.where(("tests", i))[0],
                )
            )
        return tuple(out)
