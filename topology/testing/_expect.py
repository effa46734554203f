"""Comparing the events a topology wrote with the events a test expects.

A stream's events are compared as a multiset by default: the engine runs
consumers concurrently, so the order of events on a stream is an accident of
scheduling unless the topology makes it otherwise. With ``ordered`` the order
counts. In both modes the diff names what is missing and what is unexpected,
which is what a person fixing a handler wants to read, rather than a dump of
both lists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from topology.streams import Event
from topology.testing._file import ExpectedEvent

__all__ = [
    "compact_json",
    "compare_stream",
    "contains",
    "json_equal",
    "matches",
    "show_event",
    "show_expected",
]


def json_equal(expected: Any, actual: Any) -> bool:
    """Equality of JSON values: ``true`` is not ``1``, ``2`` is ``2.0``."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return expected == actual
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(json_equal(v, actual[k]) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(json_equal(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return type(expected) is type(actual) and expected == actual


def contains(expected: Mapping[str, Any], actual: Any) -> bool:
    """``actual`` is an object holding every key of ``expected``; nested objects likewise."""
    if not isinstance(actual, dict):
        return False
    for key, value in expected.items():
        if key not in actual:
            return False
        if isinstance(value, dict):
            if not contains(value, actual[key]):
                return False
        elif not json_equal(value, actual[key]):
            return False
    return True


_NOT_JSON = object()


def _decoded(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return _NOT_JSON


def matches(expected: ExpectedEvent, event: Event) -> bool:
    if expected.name is not None and expected.name != event.name:
        return False
    if expected.topic is not None and expected.topic != event.topic:
        return False
    if expected.has_payload:
        if isinstance(expected.payload, str):
            return event.payload.decode("utf-8", errors="replace") == expected.payload
        return json_equal(expected.payload, _decoded(event.payload))
    if expected.payload_contains is not None:
        return contains(expected.payload_contains, _decoded(event.payload))
    return True


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False, sort_keys=True)


def show_expected(expected: ExpectedEvent) -> str:
    parts = []
    if expected.name is not None:
        parts.append(f"name={expected.name}")
    if expected.topic is not None:
        parts.append(f"topic={expected.topic}")
    if expected.has_payload:
        parts.append(f"payload={compact_json(expected.payload)}")
    if expected.payload_contains is not None:
        parts.append(f"payload_contains={compact_json(expected.payload_contains)}")
    return " ".join(parts) or "(any event)"


def show_event(event: Event) -> str:
    parts = [f"name={event.name}"]
    if event.topic is not None:
        parts.append(f"topic={event.topic}")
    value = _decoded(event.payload)
    text = (
        event.payload.decode("utf-8", errors="replace")
        if value is _NOT_JSON
        else compact_json(value)
    )
    parts.append(f"payload={text}")
    parts.append(f"(id {event.id})")
    return " ".join(parts)


@dataclass
class _Matching:
    """Maximum bipartite matching of expected to actual events (augmenting paths).

    Greedy first-fit is wrong as soon as one expectation is looser than another
    (``payload_contains: {id: 1}`` can take the event the exact one needed).
    """

    edges: list[list[int]]
    owner: list[int | None]

    def augment(self, i: int, seen: set[int]) -> bool:
        for j in self.edges[i]:
            if j in seen:
                continue
            seen.add(j)
            holder = self.owner[j]
            if holder is None or self.augment(holder, seen):
                self.owner[j] = i
                return True
        return False


def _unordered(
    expected: Sequence[ExpectedEvent], actual: Sequence[Event]
) -> tuple[list[int], list[int]]:
    edges = [[j for j, e in enumerate(actual) if matches(x, e)] for x in expected]
    matching = _Matching(edges, [None] * len(actual))
    missing = [i for i in range(len(expected)) if not matching.augment(i, set())]
    unexpected = [j for j, holder in enumerate(matching.owner) if holder is None]
    return missing, unexpected


def _ordered(
    expected: Sequence[ExpectedEvent], actual: Sequence[Event]
) -> tuple[list[int], list[int]]:
    """The longest common subsequence under :func:`matches`; the rest is the diff."""
    n, m = len(expected), len(actual)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            if matches(expected[i], actual[j]):
                table[i][j] = table[i + 1][j + 1] + 1
            else:
                table[i][j] = max(table[i + 1][j], table[i][j + 1])
    missing: list[int] = []
    unexpected: list[int] = []
    i = j = 0
    while i < n and j < m:
        if matches(expected[i], actual[j]) and table[i][j] == table[i + 1][j + 1] + 1:
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            missing.append(i)
            i += 1
        else:
            unexpected.append(j)
            j += 1
    return missing + list(range(i, n)), unexpected + list(range(j, m))


def _count(n: int) -> str:
    return f"{n} event" if n == 1 else f"{n} events"


def compare_stream(
    stream: str, expected: Sequence[ExpectedEvent], actual: Sequence[Event], *, ordered: bool
) -> list[str]:
    """Diff lines for one stream; empty when it matches."""
    if not expected:
        if not actual:
            return []
        return [f"{stream}: expected no events, got {_count(len(actual))}"] + [
            f"  + unexpected: {show_event(e)}" for e in actual
        ]
    missing, unexpected = (_ordered if ordered else _unordered)(expected, actual)
    if not missing and not unexpected:
        return []
    where = " (in order)" if ordered else ""
    lines = [f"{stream}: expected {_count(len(expected))}{where}, got {len(actual)}"]
    lines += [
        f"  - missing{f' at #{i + 1}' if ordered else ''}: {show_expected(expected[i])}"
        for i in missing
    ]
    lines += [
        f"  + unexpected{f' at #{j + 1}' if ordered else ''}: {show_event(actual[j])}"
        for j in unexpected
    ]
    return lines
