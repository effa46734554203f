"""A topology running for a test: add events, wait until idle, read streams and state.

Both ``ponos-topology test`` and the pytest helper drive this class, so what a
YAML test checks and what a pytest test checks run the same way: the real
runtime (``Runtime.apply`` from the empty topology, as ``run`` starts), real
consumer groups and commits, on a real server.

Each start imports the handler modules afresh (module-level counters and
caches of one test do not leak into the next), and creates every sink's
consumer groups at the sink's start position before any given event is added:
a sink reading from ``newest`` then sees the given events as events that
arrived while it ran, and one reading from ``oldest`` sees them all the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from topology.callables import import_callable
from topology.config import load
from topology.config.model import Topology
from topology.runtime import Runtime, new_worker_id
from topology.streams import Connection, Event, decode_entry
from topology.testing._file import GivenEvent
from topology.testing._idle import look
from topology.testing._server import TestServer
from topology.testing._state import read_state

__all__ = ["DEFAULT_TIMEOUT", "IdleTimeout", "TopologyUnderTest", "run_topology"]

#: Default seconds to wait for idle (``--timeout``).
DEFAULT_TIMEOUT = 30.0
#: Seconds between two looks at Redis while waiting for idle.
POLL = 0.01


class IdleTimeout(AssertionError):
    """The topology was still busy at the deadline; ``busy`` says with what."""

    def __init__(self, timeout: float, busy: Sequence[str]) -> None:
        self.timeout = timeout
        self.busy = list(busy)
        detail = "; ".join(self.busy) or "no progress could be observed"
        super().__init__(f"not idle after {timeout:g}s: {detail}")


def _fresh_modules(topology: Topology) -> None:
    """Re-import the modules of the topology's callables (module state starts empty)."""
    refs = [spec.handler for spec in topology.sources.values()]
    for sink in topology.sinks.values():
        refs += [sink.handler] + ([sink.matcher] if sink.matcher else [])
    done: set[str] = set()
    for ref in refs:
        module = ref.split(":", 1)[0]
        if module not in done:
            done.add(module)
            import_callable(ref, topology.base_dir, reload=True)


def _as_entry(event: GivenEvent | Mapping[str, Any]) -> tuple[str, Any, str | None]:
    if isinstance(event, GivenEvent):
        return event.name, event.payload, event.topic
    return event["name"], event.get("payload"), event.get("topic")


class TopologyUnderTest:
    """One topology on a test server; use it between :meth:`start` and :meth:`stop`.

    ``sources=False`` leaves the config's sources out: a test feeds the streams
    itself (``given`` events, :meth:`add`).
    """

    __test__ = False  # not a pytest test class

    def __init__(self, topology: Topology, conn: Connection, *, sources: bool = False) -> None:
        self.topology = topology
        self.conn = conn
        self.running = topology if sources else replace(topology, sources={})
        self.runtime = Runtime(
            conn,
            deployment=topology.name,
            worker_id=new_worker_id(),
            base_dir=topology.base_dir,
        )

    async def start(
        self, given: Mapping[str, Sequence[GivenEvent | Mapping[str, Any]]] | None = None
    ) -> None:
        """Groups first, then the ``given`` events (per stream, in order), then the actors.

        A given event is a :class:`GivenEvent` or a mapping with ``name``,
        ``payload``, ``topic``, as in a test file.
        """
        _fresh_modules(self.running)
        await self._create_groups()
        for stream, events in (given or {}).items():
            if events:
                await self._stream(stream).add_many(_as_entry(e) for e in events)
        await self.runtime.apply(self.running)

    async def _create_groups(self) -> None:
        for sink in self.running.sinks.values():
            for stream in sink.stream_names:
                group = await self._stream(stream).new_sink(sink.name, start=sink.start_of(stream))
                await group.close()

    def _stream(self, name: str) -> Any:
        spec = self.topology.streams.get(name)
        if spec is None:
            return self.conn.stream(name)
        return self.conn.stream(name, max_len=spec.max_len, ttl=spec.ttl)

    async def add(
        self, stream: str, name: str, payload: Any = None, *, topic: str | None = None
    ) -> str:
        """Add one event to ``stream`` (a string payload as UTF-8 text, anything else as JSON)."""
        return await self._stream(stream).add(name, payload, topic=topic)

    async def wait_idle(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Return once nothing is in hand, pending or unread; raise IdleTimeout past ``timeout``."""
        deadline = time.monotonic() + timeout
        previous: list[tuple[str, ...]] | None = None
        while True:
            busy = self._busy_in_process()
            if not busy:
                current = await look(self.conn, self.running)
                busy = current.busy
            if busy:
                previous = None
            elif previous == current.positions:
                return
            else:
                previous = current.positions
            if time.monotonic() >= deadline:
                busy = self._busy_in_process() + (await look(self.conn, self.running)).busy
                raise IdleTimeout(timeout, busy or ["activity did not settle"])
            await asyncio.sleep(POLL)  # Redis is the witness: there is no event to await

    def _busy_in_process(self) -> list[str]:
        busy = [
            f"actor {actor.name}: {actor.in_hand} event(s) in hand"
            for actor in self.runtime.actors()
            if actor.in_hand
        ]
        for name, source in self.runtime.sources.items():
            if not (getattr(source, "done", True) or getattr(source, "failed", None)):
                busy.append(f"source {name} still running")
        return busy

    def failures(self) -> list[str]:
        """Sources that failed for good: a test of their output cannot pass for the right reason."""
        return [
            f"source {name} failed: {type(source.failed).__name__}: {source.failed}"
            for name, source in self.runtime.sources.items()
            if getattr(source, "failed", None) is not None
        ]

    async def events(self, stream: str) -> list[Event]:
        """Every event on ``stream`` now, oldest first."""
        key = self.conn.stream_key(stream)
        entries = await self.conn.execute_raw(key, b"XRANGE", key, "-", "+")
        out = []
        for raw_id, flat in entries or ():
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            name, payload, topic, fields = decode_entry(list(flat), stream, entry_id)
            out.append(
                Event(entry_id, name, payload, stream_name=stream, topic=topic, fields=fields)
            )
        return out

    async def state(self, sink: str) -> dict[str, Any]:
        """Keyed state of stateful sink ``sink``: ``{key: state}``."""
        return await read_state(self.conn, self.running, sink)

    async def stop(self) -> None:
        """Stop the actors and sources now; events in flight stay pending (a test is over)."""
        await self.runtime.close()


@asynccontextmanager
async def run_topology(
    config: str | Path | Topology,
    *,
    sources: bool = False,
    given: Mapping[str, Sequence[GivenEvent | Mapping[str, Any]]] | None = None,
    server: TestServer | None = None,
    redis_url: str | None = None,
) -> AsyncIterator[TopologyUnderTest]:
    """The topology of ``config`` running on a clean server until the block ends.

    ``server``: a :class:`TestServer` to share between tests (flushed here
    before use); else one is started for this block (or ``redis_url`` is used,
    under a key prefix of the block's own, removed after). ``sources=True``
    runs the config's sources too. ``given`` events are added before the sinks
    start (``GivenEvent`` or ``{name, payload, topic}``). An invalid config
    raises ``topology.config.ConfigError``.
    """
    topology = config if isinstance(config, Topology) else load(config)
    own = server is None
    where = TestServer(redis_url) if server is None else server
    try:
        async with where.scope(topology) as (scoped, connected):
            harness = TopologyUnderTest(scoped, connected.conn, sources=sources)
            try:
                await harness.start(given)
                yield harness
            finally:
                await harness.stop()
    finally:
        if own:
            where.stop()
