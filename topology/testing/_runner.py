"""Running the cases of test files, one after the other, on one server.

A case: a clean place on the server (``TestServer.scope``), the topology
started with its given events, a wait until idle (or the timeout), then every
listed stream and state compared. Whatever goes wrong inside a case (the
timeout, a handler that will not import, Redis refusing a command) fails that
case with the reason in its diff; the next case still runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from topology.redact import redact_text
from topology.runtime.connect import RedisUnavailableError
from topology.testing._expect import compact_json, compare_stream, json_equal
from topology.testing._file import TestCase, TestFile
from topology.testing._harness import DEFAULT_TIMEOUT, IdleTimeout, TopologyUnderTest
from topology.testing._server import TestServer
from topology.testing._state import StateUnavailable

__all__ = ["TestResult", "display_path", "run_case", "run_files"]


def display_path(path: Path) -> str:
    """The path as the user would type it: relative to the current folder when under it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)
    return str(path) if relative.startswith("..") else relative


@dataclass
class TestResult:
    """The outcome of one case; ``diff`` is empty when it passed."""

    __test__ = False  # not a pytest test class

    file: str
    name: str
    diff: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.diff

    @property
    def id(self) -> str:
        return f"{self.file}::{self.name}"


async def _compare_state(harness: TopologyUnderTest, case: TestCase) -> list[str]:
    lines: list[str] = []
    for sink, expected in (case.state or {}).items():
        try:
            actual = await harness.state(sink)
        except StateUnavailable as exc:
            lines.append(f"state of {sink}: {exc}")
            continue
        for key in sorted(set(expected) - set(actual)):
            lines.append(f"state of {sink}: missing key {key!r}")
        for key in sorted(set(actual) - set(expected)):
            lines.append(f"state of {sink}: unexpected key {key!r}: {compact_json(actual[key])}")
        for key in sorted(set(expected) & set(actual)):
            if not json_equal(expected[key], actual[key]):
                lines.append(
                    f"state of {sink}[{key!r}]: expected {compact_json(expected[key])}, "
                    f"got {compact_json(actual[key])}"
                )
    return lines


async def _check(harness: TopologyUnderTest, case: TestCase, timeout: float) -> list[str]:
    diff: list[str] = []
    try:
        await harness.wait_idle(case.timeout if case.timeout is not None else timeout)
    except IdleTimeout as exc:
        diff.append(f"timeout: {exc}")
    diff += harness.failures()
    for stream, expected in case.expect.items():
        actual = await harness.events(stream)
        diff += compare_stream(stream, expected, actual, ordered=case.ordered)
    return diff + await _compare_state(harness, case)


async def run_case(
    server: TestServer, file: TestFile, case: TestCase, timeout: float = DEFAULT_TIMEOUT
) -> TestResult:
    """Run one case on ``server``; never raises for a failure of the topology under test.

    Raises ``RedisUnavailableError`` when the server cannot be reached (or started).
    """
    result = TestResult(display_path(file.path), case.name)
    started = time.monotonic()
    try:
        async with server.scope(file.topology) as (topology, connected):
            harness = TopologyUnderTest(topology, connected.conn, sources=case.sources)
            try:
                await harness.start(case.given)
                result.diff = await _check(harness, case, timeout)
            finally:
                await harness.stop()
    except RedisUnavailableError:
        raise  # no test can run: the caller stops the run
    except Exception as exc:
        result.diff.append(f"error: {type(exc).__name__}: {redact_text(str(exc))}")
    result.seconds = time.monotonic() - started
    return result


async def run_files(
    files: Sequence[TestFile],
    *,
    redis_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    report: Callable[[TestResult], Any] | None = None,
) -> list[TestResult]:
    """Every case of ``files``, in order, on one server; ``report`` hears each result."""
    results: list[TestResult] = []
    with TestServer(redis_url) as server:
        for file in files:
            for case in file.tests:
                result = await run_case(server, file, case, timeout)
                results.append(result)
                if report is not None:
                    report(result)
    return results
