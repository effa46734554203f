"""Matching expected events: JSON equality, nested subsets, multisets, order."""

from __future__ import annotations

import json
from typing import Any

from topology.streams import Event
from topology.testing import ExpectedEvent, contains, json_equal
from topology.testing._expect import compare_stream


def event(name: str, payload: Any, topic: str | None = None, n: int = 1) -> Event:
    raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    return Event(f"1-{n}", name, raw, stream_name="s", topic=topic)


def test_json_equality_tells_booleans_from_numbers_but_not_ints_from_floats() -> None:
    assert json_equal({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not json_equal(True, 1) and not json_equal(0, False)
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
    assert not json_equal([1, 2], [2, 1])
    assert not json_equal(None, 0) and json_equal(None, None)


def test_contains_is_a_nested_subset_of_objects() -> None:
    actual = {"id": 1, "customer": {"id": 7, "tier": "gold"}, "lines": [1, 2]}
    assert contains({"customer": {"tier": "gold"}}, actual)
    assert contains({}, actual)
    assert not contains({"customer": {"tier": "silver"}}, actual)
    assert not contains({"lines": [1]}, actual)  # lists compare whole
    assert not contains({"missing": None}, actual)
    assert not contains({"id": 1}, [1])


def test_a_string_payload_is_compared_as_text() -> None:
    assert (
        compare_stream("s", [ExpectedEvent(payload="hello")], [event("x", "hello")], ordered=False)
        == []
    )
    diff = compare_stream("s", [ExpectedEvent(payload="1")], [event("x", 1)], ordered=False)
    assert diff == []  # the text of the JSON number 1 is "1"
    assert compare_stream("s", [ExpectedEvent(payload=1)], [event("x", "01")], ordered=False)


def test_a_loose_expectation_does_not_take_the_event_an_exact_one_needs() -> None:
    expected = [
        ExpectedEvent(payload_contains={"id": 1}),
        ExpectedEvent(payload={"id": 1, "v": 2}),
    ]
    actual = [event("x", {"id": 1, "v": 2}, n=1), event("x", {"id": 1, "v": 3}, n=2)]
    assert compare_stream("s", expected, actual, ordered=False) == []


def test_unordered_diff_names_missing_and_unexpected_events() -> None:
    expected = [ExpectedEvent(name="a", payload={"id": 1}), ExpectedEvent(name="b", topic="t")]
    actual = [event("a", {"id": 2}, n=1), event("b", {}, topic="t", n=2)]
    assert compare_stream("s", expected, actual, ordered=False) == [
        "s: expected 2 events, got 2",
        '  - missing: name=a payload={"id": 1}',
        '  + unexpected: name=a payload={"id": 2} (id 1-1)',
    ]


def test_ordered_diff_gives_positions() -> None:
    expected = [ExpectedEvent(name="a"), ExpectedEvent(name="b"), ExpectedEvent(name="c")]
    actual = [event("b", {}, n=1), event("a", {}, n=2), event("c", {}, n=3)]
    assert compare_stream("s", expected, actual, ordered=False) == []
    assert compare_stream("s", expected, actual, ordered=True) == [
        "s: expected 3 events (in order), got 3",
        "  - missing at #1: name=a",
        "  + unexpected at #2: name=a payload={} (id 1-2)",
    ]


def test_an_empty_expectation_lists_every_event_found() -> None:
    assert compare_stream("s", [], [], ordered=False) == []
    assert compare_stream("s", [], [event("a", "x")], ordered=True) == [
        "s: expected no events, got 1 event",
        "  + unexpected: name=a payload=x (id 1-1)",
    ]
