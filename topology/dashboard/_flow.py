"""Rates and sparkline history from the counters successive polls see.

Sink rates come from the workers' heartbeats: each beat carries the worker's
cumulative tallies (handled, failed, dead-lettered, conflicts per sink) and the
Redis server time of the beat, so a rate is a difference of two beats of one
worker divided by the time between them — exact, whatever the poll period,
and blind to clock skew between machines. A worker that restarts is a new id
(its tallies start again at zero), so no difference ever spans a restart.

Stream rates are the growth of the stream's length between polls, never
below zero: a stream trimmed to its ``max_len`` shows what is added beyond the
trimming only, which the page says next to the figure.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

__all__ = ["COUNTERS", "Flow"]

#: The per-sink tallies a heartbeat carries (``Metrics.counters``).
COUNTERS = ("handled", "failed", "dead_lettered", "conflicts")
#: A rate spans the beats of the last this many seconds (at least two beats).
WINDOW = 10.0
#: Seconds of history the sparklines draw.
HISTORY = 300.0
#: Reloads kept for the page, newest first.
RELOADS_KEPT = 10


class Flow:
    """Everything a poll alone cannot say: rates, history, the reloads seen happen."""

    def __init__(
        self, interval: float, *, window: float = WINDOW, history: float = HISTORY
    ) -> None:
        self.interval = interval
        self.window = window
        self._keep = max(2, math.ceil(history / interval))
        #: worker id -> deque of (beat, {counter: {sink: n}}), one item per distinct beat.
        self._beats: dict[str, deque[tuple[float, dict[str, dict[str, int]]]]] = {}
        #: stream -> deque of (poll time, length).
        self._lengths: dict[str, deque[tuple[float, int]]] = {}
        #: sink -> {"handled_per_s": deque, "failed_per_s": deque}
        self._history: dict[str, dict[str, deque[float]]] = {}
        self._generations: dict[str, int] = {}
        #: (worker or "published", generation or version) -> the reload, as the page shows it.
        self._reloads: dict[tuple[str, str], dict[str, Any]] = {}

    # -- feeding -------------------------------------------------------------------------

    def update(self, now: float, data: dict[str, Any]) -> None:
        """Take in one poll (``topology.observe.collect``'s data) made at ``now``."""
        for name, stream in data["streams"].items():
            points = self._lengths.setdefault(name, deque())
            points.append((now, int(stream["length"])))
            while len(points) > 2 and now - points[0][0] > self.window:
                points.popleft()
        for name in set(self._lengths) - set(data["streams"]):
            del self._lengths[name]
        workers = data["workers"]
        for wid, entry in workers.items():
            self._beat(wid, entry)
        for wid in set(self._beats) - set(workers):
            del self._beats[wid]
        self._seen_reloads(now, workers, data.get("published"))

    def _beat(self, wid: str, entry: dict[str, Any]) -> None:
        beat = float(entry.get("beat", 0.0))
        beats = self._beats.setdefault(wid, deque())
        if beats and beats[-1][0] >= beat:
            return  # the same beat seen by another poll
        counts = {k: _ints(entry.get(k)) for k in COUNTERS}
        beats.append((beat, counts))
        while len(beats) > 2 and beat - beats[0][0] > self.window:
            beats.popleft()

    def _seen_reloads(
        self, now: float, workers: dict[str, Any], published: dict[str, Any] | None
    ) -> None:
        """Reloads from the workers' generation logs, or seen happen between two polls.

        Generation 1 is a start, not a reload. A worker too old to publish its
        log still shows its reloads once the page watches.
        """
        for wid, entry in workers.items():
            generation = entry.get("generation")
            if not isinstance(generation, int):
                continue
            for logged in entry.get("generations") or ():
                self._reload(wid, int(logged["generation"]), float(logged["at"]))
            before = self._generations.get(wid)
            if before is not None and generation > before:
                self._reload(wid, generation, now)
            self._generations[wid] = generation
        for wid in set(self._generations) - set(workers):
            del self._generations[wid]
        if published is not None:
            key = ("published", str(published["version"]))
            self._reloads.setdefault(
                key,
                {
                    "time": published["applied_at"],
                    "version": published["version"],
                    "sha256": published["sha256"][:12],
                    "what": "published",
                },
            )
        self._forget_old_reloads()

    def _reload(self, wid: str, generation: int, at: float) -> None:
        if generation > 1:
            self._reloads.setdefault(
                (wid, str(generation)),
                {"time": at, "worker": wid, "generation": generation, "what": "generation"},
            )

    def _forget_old_reloads(self) -> None:
        newest = sorted(self._reloads.items(), key=lambda kv: kv[1]["time"], reverse=True)
        self._reloads = dict(newest[:RELOADS_KEPT])

    @property
    def reloads(self) -> list[dict[str, Any]]:
        """The last reloads seen, newest first."""
        return list(self._reloads.values())

    # -- reading -------------------------------------------------------------------------

    def stream_rate(self, name: str) -> float:
        points = self._lengths.get(name)
        if not points or len(points) < 2:
            return 0.0
        (t0, n0), (t1, n1) = points[0], points[-1]
        return max(0.0, (n1 - n0) / (t1 - t0)) if t1 > t0 else 0.0

    def sink(self, name: str, live: set[str]) -> dict[str, Any]:
        """Totals over every worker the registry lists, rates over the ``live`` ones."""
        totals = dict.fromkeys(COUNTERS, 0)
        rates = dict.fromkeys(COUNTERS, 0.0)
        for wid, beats in self._beats.items():
            last = beats[-1][1]
            for counter in COUNTERS:
                totals[counter] += last[counter].get(name, 0)
            if wid not in live or len(beats) < 2:
                continue
            (b0, first), (b1, _) = beats[0], beats[-1]
            if b1 <= b0:
                continue
            for counter in COUNTERS:
                grew = last[counter].get(name, 0) - first[counter].get(name, 0)
                rates[counter] += max(0, grew) / (b1 - b0)
        out: dict[str, Any] = dict(totals)
        out.update({f"{counter}_per_s": round(rates[counter], 2) for counter in COUNTERS})
        return out

    def record(self, name: str, handled_per_s: float, failed_per_s: float) -> dict[str, Any]:
        """Add this poll's rates to the sink's sparkline; the history, oldest first."""
        series = self._history.setdefault(
            name,
            {
                "handled_per_s": deque(maxlen=self._keep),
                "failed_per_s": deque(maxlen=self._keep),
            },
        )
        series["handled_per_s"].append(round(handled_per_s, 2))
        series["failed_per_s"].append(round(failed_per_s, 2))
        return {"step": self.interval, **{k: list(v) for k, v in series.items()}}

    def forget_sinks(self, keep: set[str]) -> None:
        for name in set(self._history) - keep:
            del self._history[name]


def _ints(value: Any) -> dict[str, int]:
    """A heartbeat's ``{sink: count}`` tally; anything else (an older worker) is empty."""
    if not isinstance(value, dict):
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, (int, float))}
