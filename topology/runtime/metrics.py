"""The runtime's counters, for Prometheus and for the end-of-run summary.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (not the process-wide
default one) so several runtimes can live in one process — tests do that —
without "Duplicated timeseries" errors. Plain per-sink totals are kept beside
the Prometheus objects because reading a counter's value back from
prometheus_client goes through private attributes.

Under ``run --workers`` every child writes its samples for the parent to sum
(prometheus-client's multiprocess mode); each gauge says how the children's
values combine: the lowest generation any live worker runs (a reload that has
not reached them all shows), the running actors summed, lag and pending as the
one value every worker samples from Redis.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics"]

#: Seconds: from a fast in-memory handler to one that calls a slow service.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_handled = Counter(
            "ponos_events_handled", "Events handled and committed", ["sink"], registry=r
        )
        self.events_failed = Counter(
            "ponos_events_failed", "Handler calls that raised", ["sink"], registry=r
        )
        self.dead_lettered = Counter(
            "ponos_dead_lettered", "Events sent to the dead-letter stream", ["sink"], registry=r
        )
        self.commit_conflicts = Counter(
            "ponos_commit_conflicts",
            "Events claimed by another consumer before this one committed them",
            ["sink"],
            registry=r,
        )
        self.state_conflicts = Counter(
            "ponos_state_conflicts",
            "Events handled again because their key's state changed before the commit",
            ["sink"],
            registry=r,
        )
        self.trimmed_unread = Counter(
            "ponos_events_trimmed_unread",
            "Entries trimmed from a stream (max_len, ttl) before the sink read them "
            "(those known for certain when the server cannot tell how many)",
            ["sink", "stream"],
            registry=r,
        )
        self.reloads = Counter("ponos_reloads", "Plans applied, by result", ["result"], registry=r)
        self.generation = Gauge(
            "ponos_generation",
            "Applied topology generation",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.actors = Gauge(
            "ponos_actors", "Running actors", ["sink"], registry=r, multiprocess_mode="livesum"
        )
        self.handler_seconds = Histogram(
            "ponos_handler_seconds",
            "Time the handler took over one chunk of a batch (the events it was given at once)",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "ponos_commit_seconds",
            "Time an actor waited for a commit (outputs + acks script) to be answered",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "ponos_retries", "Failed events queued for another attempt", ["sink"], registry=r
        )
        self.lag = Gauge(
            "ponos_lag",
            "Entries not yet delivered to the sink's groups (sampled)",
            ["sink"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.pending = Gauge(
            "ponos_pending",
            "Events delivered to the sink, not yet acked (sampled)",
            ["sink"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.handled: Tally[str] = Tally()
        self.failed: Tally[str] = Tally()
        self.dead: Tally[str] = Tally()
        self.conflicts: Tally[str] = Tally()
        self.state_moved: Tally[str] = Tally()
        #: Actors count from their handler threads too (the direct path).
        self._lock = threading.Lock()

    def totals(self, tally: Tally[str]) -> dict[str, int]:
        """A copy of one of the tallies, taken while no thread adds to it."""
        with self._lock:
            return dict(tally)

    def counters(self) -> dict[str, dict[str, int]]:
        """Every per-sink tally by name, for the worker's heartbeat (the dashboard's rates)."""
        with self._lock:
            return {
                "handled": dict(self.handled),
                "failed": dict(self.failed),
                "dead_lettered": dict(self.dead),
                "conflicts": dict(self.conflicts),
            }

    def add_handled(self, sink: str, n: int) -> None:
        if n:
            with self._lock:
                self.handled[sink] += n
            self.events_handled.labels(sink).inc(n)

    def add_failed(self, sink: str, n: int) -> None:
        if n:
            with self._lock:
                self.failed[sink] += n
            self.events_failed.labels(sink).inc(n)

    def add_dead(self, sink: str, n: int) -> None:
        if n:
            with self._lock:
                self.dead[sink] += n
            self.dead_lettered.labels(sink).inc(n)

    def add_conflicts(self, sink: str, n: int) -> None:
        if n:
            with self._lock:
                self.conflicts[sink] += n
            self.commit_conflicts.labels(sink).inc(n)

    def add_state_conflicts(self, sink: str, n: int) -> None:
        if n:
            with self._lock:
                self.state_moved[sink] += n
            self.state_conflicts.labels(sink).inc(n)

    def add_trimmed_unread(self, sink: str, stream: str, n: int) -> None:
        if n:
            self.trimmed_unread.labels(sink, stream).inc(n)

    def observe_handler(self, sink: str, seconds: float) -> None:
        self.handler_seconds.labels(sink).observe(seconds)

    def observe_commit(self, sink: str, seconds: float) -> None:
        self.commit_seconds.labels(sink).observe(seconds)

    def add_retries(self, sink: str, n: int) -> None:
        if n:
            self.retries.labels(sink).inc(n)

    def serve(self, port: int, addr: str = "0.0.0.0") -> Any:
        """Expose ``/metrics`` on ``port`` (a daemon thread); returns the server."""
        return start_http_server(port, addr=addr, registry=self.registry)
