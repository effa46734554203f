"""Rates, history and reloads from successive polls (``topology.dashboard._flow``), no Redis."""

from __future__ import annotations

from typing import Any

from topology.dashboard._flow import Flow


def poll(
    workers: dict[str, dict[str, Any]],
    lengths: dict[str, int] | None = None,
    published: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "streams": {k: {"length": v} for k, v in (lengths or {}).items()},
        "workers": workers,
        "published": published,
    }


def beat(at: float, handled: int, failed: int = 0, generation: int = 1) -> dict[str, Any]:
    return {
        "beat": at,
        "live": True,
        "generation": generation,
        "handled": {"work": handled},
        "failed": {"work": failed},
        "dead_lettered": {},
        "conflicts": {},
    }


def test_sink_rate_is_the_difference_of_two_beats_over_their_time() -> None:
    flow = Flow(1.0)
    flow.update(10.0, poll({"w1": beat(100.0, 0)}))
    flow.update(11.0, poll({"w1": beat(100.0, 0)}))  # the same beat seen again
    flow.update(12.0, poll({"w1": beat(102.0, 50, failed=4)}))
    sink = flow.sink("work", live={"w1"})
    assert sink["handled_per_s"] == 25.0
    assert sink["failed_per_s"] == 2.0
    assert sink["handled"] == 50 and sink["failed"] == 4


def test_rates_add_up_over_live_workers_and_ignore_stale_ones() -> None:
    flow = Flow(1.0)
    flow.update(0.0, poll({"a": beat(0.0, 0), "b": beat(0.0, 0)}))
    flow.update(2.0, poll({"a": beat(2.0, 20), "b": beat(2.0, 40)}))
    assert flow.sink("work", live={"a", "b"})["handled_per_s"] == 30.0
    stale_b = flow.sink("work", live={"a"})
    assert stale_b["handled_per_s"] == 10.0
    assert stale_b["handled"] == 60  # totals still count every listed worker


def test_stream_rate_is_growth_and_never_negative() -> None:
    flow = Flow(1.0)
    flow.update(0.0, poll({}, {"in": 10}))
    flow.update(2.0, poll({}, {"in": 30}))
    assert flow.stream_rate("in") == 10.0
    flow.update(4.0, poll({}, {"in": 0}))  # trimmed or deleted
    assert flow.stream_rate("in") == 0.0


def test_history_keeps_the_last_minutes_only() -> None:
    flow = Flow(1.0, history=5.0)
    for i in range(8):
        history = flow.record("work", float(i), 0.0)
    assert history["handled_per_s"] == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert history["step"] == 1.0


def test_a_new_generation_and_a_new_published_version_are_reloads() -> None:
    flow = Flow(1.0)
    v1 = {"version": 1, "applied_at": 5.0, "sha256": "a" * 64, "source": "x.yaml"}
    flow.update(10.0, poll({"w": beat(10.0, 0, generation=1)}, published=v1))
    assert [r["what"] for r in flow.reloads] == ["published"]
    flow.update(11.0, poll({"w": beat(11.0, 0, generation=1)}, published=v1))
    assert len(flow.reloads) == 1  # nothing changed
    v2 = {**v1, "version": 2, "applied_at": 11.5}
    flow.update(12.0, poll({"w": beat(12.0, 0, generation=2)}, published=v2))
    newest, second = flow.reloads[0], flow.reloads[1]
    assert newest == {"time": 11.5, "version": 2, "sha256": "a" * 12, "what": "published"}
    assert second == {"time": 12.0, "worker": "w", "generation": 2, "what": "generation"}
