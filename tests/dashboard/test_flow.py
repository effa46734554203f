"""Rates, history and reloads from successive polls (``topology.dashboard._flow``), no Redis."""

from __future__ import annotations

from typing import Any

from topology.dashboard._flow import Flow
from topology.runtime.workers import GenerationLog


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


def test_reloads_come_from_generation_logs_polls_and_published_versions() -> None:
    flow = Flow(1.0)
    v1 = {"version": 1, "applied_at": 5.0, "sha256": "a" * 64, "source": "x.yaml"}
    logged = {
        **beat(10.0, 0, generation=2),
        "generations": [{"generation": 2, "at": 8.0}, {"generation": 1, "at": 1.0}],
    }
    flow.update(10.0, poll({"w": logged, "old": beat(10.0, 0, generation=1)}, published=v1))
    # A page opened after the reload still lists it; generation 1 is a start, not a reload.
    assert flow.reloads == [
        {"time": 8.0, "worker": "w", "generation": 2, "what": "generation"},
        {"time": 5.0, "version": 1, "sha256": "a" * 12, "what": "published"},
    ]
    flow.update(11.0, poll({"w": logged, "old": beat(11.0, 0, generation=1)}, published=v1))
    assert len(flow.reloads) == 2  # nothing new
    v2 = {**v1, "version": 2, "applied_at": 11.5}
    flow.update(12.0, poll({"w": logged, "old": beat(12.0, 0, generation=2)}, published=v2))
    # A worker without a log: its new generation is seen between two polls.
    assert flow.reloads[:2] == [
        {"time": 12.0, "worker": "old", "generation": 2, "what": "generation"},
        {"time": 11.5, "version": 2, "sha256": "a" * 12, "what": "published"},
    ]


def test_a_worker_logs_each_new_generation_once_newest_first() -> None:
    log = GenerationLog(keep=2)
    assert log(0) == []  # nothing applied yet
    first = log(1)
    assert [e["generation"] for e in first] == [1]
    assert log(1) == first  # the same generation at the next beat
    assert [e["generation"] for e in log(2)] == [2, 1]
    assert [e["generation"] for e in log(3)] == [3, 2]  # keeps the last two
