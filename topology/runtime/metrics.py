"""The runtime's counters, for Prometheus and for the end-of-run summary.

Each :class:`Metrics` owns its own ``CollectorRegistry`` (not the process-wide
default one) so several runtimes can live in one process — tests do that —
without "Duplicated timeseries" errors. Plain per-sink totals are kept beside
the Prometheus objects because reading a counter's value back from
prometheus_client goes through private attributes.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

__all__ = ["Metrics"]


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
        self.trimmed_unread = Counter(
            "ponos_events_trimmed_unread",
            "Entries trimmed from a stream (max_len, ttl) before the sink read them",
            ["sink", "stream"],
            registry=r,
        )
        self.reloads = Counter("ponos_reloads", "Plans applied, by result", ["result"], registry=r)
        self.generation = Gauge("ponos_generation", "Applied topology generation", registry=r)
        self.actors = Gauge("ponos_actors", "Running actors", ["sink"], registry=r)
        self.handled: Tally[str] = Tally()
        self.failed: Tally[str] = Tally()
        self.dead: Tally[str] = Tally()
        self.conflicts: Tally[str] = Tally()
        #: Actors count from their handler threads too (the direct path).
        self._lock = threading.Lock()

    def totals(self, tally: Tally[str]) -> dict[str, int]:
        """A copy of one of the tallies, taken while no thread adds to it."""
        with self._lock:
            return dict(tally)

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

    def add_trimmed_unread(self, sink: str, stream: str, n: int) -> None:
        if n:
            self.trimmed_unread.labels(sink, stream).inc(n)

    def serve(self, port: int, addr: str = "0.0.0.0") -> Any:
        """Expose ``/metrics`` on ``port`` (a daemon thread); returns the server."""
        return start_http_server(port, addr=addr, registry=self.registry)
