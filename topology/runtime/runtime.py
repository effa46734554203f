"""The runtime: applies plans to running actors and sources.

There is one way to change what runs: :meth:`Runtime.apply` takes the new
topology, computes ``topology.plan.diff(current, new)`` — the same function
``ponos-topology plan`` prints — and applies only what changed. Starting is
applying the plan from ``Topology.empty()``, so every start exercises the
reload path (the file watcher, SIGHUP and ``run --deployment`` call the same method).

An apply is all-or-nothing for the caller: handlers and matchers are imported
before anything is touched (a handler that no longer imports changes nothing),
and every step that did run records its undo; if a later step fails (Redis
refusing a command...), the undo log runs backwards, the previous topology is
running again, and :class:`ApplyError` says what failed. The process keeps
running either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from topology.callables import CallableImportError, import_callable
from topology.config.model import SinkSpec, SourceSpec, StreamSpec, Topology
from topology.plan import Plan, SinkChange, diff
from topology.runtime.actor import Actor
from topology.runtime.handlers import runner_for
from topology.runtime.keys import EngineKeys
from topology.runtime.metrics import Metrics
from topology.runtime.state import (
    StatefulRunner,
    StateWiring,
    key_function,
    log_state_change,
    state_layout,
)
from topology.runtime.workers import ConsumerOwners
from topology.streams import Connection, GroupLag, read_group_lag

__all__ = ["ApplyError", "Runtime"]

log = logging.getLogger("topology.runtime")

#: How long a reload waits for a removed/restarted sink's actors to finish their batch.
DEFAULT_DRAIN_TIMEOUT = 30.0
#: Size of the shared pool for sync handlers when one is asked for (``handler_threads``);
#: by default each actor has a thread of its own instead (see ``HandlerThread``).
HANDLER_THREADS = 64
#: Poll period while a stream removal waits for the actors to let go of its events.
SETTLE_POLL = 0.005

Undo = Callable[[], Awaitable[None]]


class ApplyError(RuntimeError):
    """A plan could not be applied; the previous topology is running again."""


class _Prepared:
    """What starting a sink's actors needs, imported before anything changes."""

    __slots__ = ("handler", "matcher", "spec", "state")

    def __init__(
        self,
        spec: SinkSpec,
        handler: Callable[..., Any],
        matcher: Any,
        state: StateWiring | None = None,
    ) -> None:
        self.spec = spec
        self.handler = handler
        self.matcher = matcher
        self.state = state


def trim_option(spec: StreamSpec | None) -> str:
    """The stream's options that trim it, or who else may have."""
    return (spec.trimmed_by if spec is not None else "") or "trimmed outside this config"


class Runtime:
    """Actors and sources of one worker process, driven by :meth:`apply`."""

    def __init__(
        self,
        conn: Connection,
        *,
        deployment: str,
        worker_id: str,
        base_dir: Path | None = None,
        metrics: Metrics | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        handler_threads: int | None = None,
    ) -> None:
        """``handler_threads``: run sync handlers in one shared pool of that many threads
        instead of one thread per actor (the default: a cheaper hop per batch)."""
        self.conn = conn
        self.deployment = deployment
        self.worker_id = worker_id
        self.base_dir = base_dir
        self.keys = EngineKeys(deployment)
        self.owners = ConsumerOwners(conn.redis, deployment, worker_id)
        self.metrics = metrics or Metrics()
        self.drain_timeout = drain_timeout
        self.topology = Topology.empty(deployment)
        self.generation = 0
        self._actors: dict[str, list[Actor]] = {}
        self._prepared: dict[str, _Prepared] = {}
        self._sources: dict[str, Any] = {}
        self._stream_specs: Mapping[str, StreamSpec] = {}
        self._trimmed_seen: set[tuple[str, str, str | None]] = set()
        self._lock = asyncio.Lock()
        self._executor = (
            ThreadPoolExecutor(handler_threads, thread_name_prefix="ponos-handler")
            if handler_threads
            else None
        )
        self._started = time.monotonic()
        self._closed = False

    # -- views ---------------------------------------------------------------------------

    def actors(self, sink: str | None = None) -> list[Actor]:
        if sink is not None:
            return list(self._actors.get(sink, ()))
        return [a for actors in self._actors.values() for a in actors]

    @property
    def sources(self) -> Mapping[str, Any]:
        return dict(self._sources)

    def streams(self) -> Mapping[str, StreamSpec]:
        """Stream options the committers trim outputs with (the applying topology's)."""
        return self._stream_specs

    def handled(self) -> dict[str, int]:
        """Events handled and committed per sink since this runtime started."""
        return self.metrics.totals(self.metrics.handled)

    def idle_for(self) -> float:
        """Seconds since any actor read or committed anything; 0 while anything is in flight.

        Also 0 while a source of this worker still runs. ``--stop-when-idle``
        combines it with :meth:`pending` (nothing pending in Redis either).
        """
        actors = self.actors()
        if any(a.in_hand for a in actors):
            return 0.0
        if any(not _ended(s) for s in self._sources.values()):
            return 0.0
        last = max((a.last_activity for a in actors), default=self._started)
        return max(0.0, time.monotonic() - max(last, self._started))

    async def pending(self) -> int:
        """Events pending (delivered, not acked) in every group of the running sinks."""
        redis = self.conn.redis
        pipe = redis.pipeline(transaction=False)
        count = 0
        for sink in self.topology.sinks.values():
            for stream in sink.stream_names:
                pipe.xpending(self.conn.stream_key(stream), sink.name)
                count += 1
        if not count:
            return 0
        total = 0
        for reply in await pipe.execute(raise_on_error=False):
            if isinstance(reply, dict):
                total += int(reply.get("pending", 0))
        return total

    async def lag(self) -> dict[str, int]:
        """Entries not yet delivered to each sink's groups, per sink.

        Read with :func:`~topology.streams.read_group_lag`: a group whose last
        delivered id is the stream's last one is caught up whatever lag Redis
        reports, and entries trimmed away unread are not counted (they are
        reported once, as a WARNING and ``ponos_events_trimmed_unread_total``).
        A lag that cannot be known counts as 1: not caught up.
        """
        result: dict[str, int] = {}
        for sink in self.topology.sinks.values():
            total = 0
            for stream in sink.stream_names:
                try:
                    state = await read_group_lag(self.conn, self.conn.stream_key(stream), sink.name)
                except Exception:
                    continue
                if state is None:
                    continue
                total += 0 if state.caught_up else max(1, state.lag or 0)
                self.report_trimmed(sink.name, stream, state)
            result[sink.name] = total
        return result

    def report_trimmed(self, sink: str, stream: str, state: GroupLag) -> None:
        """One WARNING and the metric per gap trimming left in a sink's stream (its
        actors and the lag check may each see it: the group's position tells)."""
        trimmed = state.trimmed_unread or 0
        gap = (sink, stream, state.last_delivered_id)
        if not trimmed or gap in self._trimmed_seen:
            return
        self._trimmed_seen.add(gap)
        self.metrics.add_trimmed_unread(sink, stream, state.trimmed_surely)
        log.warning(
            "sink %s: %s entries of stream %s were trimmed away before it read them (%s); "
            "they are lost to this sink. Raise the option, add consumers, or mark the "
            "stream `lossy: true` if that is accepted",
            sink,
            state.trimmed_text,
            stream,
            trim_option(self._stream_specs.get(stream)),
        )

    # -- applying plans ------------------------------------------------------------------

    async def apply(self, new: Topology) -> Plan:
        """Take the running topology to ``new``, changing only what differs.

        Returns the plan applied. Raises :class:`ApplyError` (after rolling back
        to the previous topology) when it cannot be applied.
        """
        async with self._lock:
            if self._closed:
                raise ApplyError("the runtime is closed")
            old = self.topology
            try:
                plan = diff(old, new)
            except Exception as exc:  # a model the graph cannot build: nothing touched yet
                self.metrics.reloads.labels("rolled_back").inc()
                raise ApplyError(f"nothing changed: cannot plan the change: {exc}") from exc
            for reason in plan.unsupported:
                log.warning("reload: cannot apply live, ignored: %s", reason)
            if not plan.has_live_changes:
                self.topology = new
                return plan
            for line in plan.describe():
                if not line.startswith("unsupported:"):
                    log.info("plan: %s", line)
            try:
                prepared = self._prepare(plan, new)
            except CallableImportError as exc:
                self.metrics.reloads.labels("rolled_back").inc()
                raise ApplyError(f"nothing changed: {exc}") from None
            undo: list[Undo] = []
            self._stream_specs = {**old.streams, **new.streams}
            try:
                await self._apply_sinks(plan, old, new, prepared, undo)
                await self._apply_sources(plan, old, new, undo)
            except Exception as exc:
                log.error("apply failed (%s: %s); rolling back", type(exc).__name__, exc)
                for step in reversed(undo):
                    try:
                        await step()
                    except Exception as undo_exc:
                        log.error("rollback step failed: %r", undo_exc)
                self._stream_specs = dict(old.streams)
                self.metrics.reloads.labels("rolled_back").inc()
                raise ApplyError(
                    f"applying generation {self.generation + 1} failed "
                    f"({type(exc).__name__}: {exc}); generation {self.generation} is running"
                ) from exc
            self._stream_specs = dict(new.streams)
            self.topology = new
            self.generation += 1
            self.metrics.generation.set(self.generation)
            self.metrics.reloads.labels("applied").inc()
            log.info(
                "generation %d running: %d sinks, %d actors, %d sources",
                self.generation,
                len(new.sinks),
                len(self.actors()),
                len(self._sources),
            )
            return plan

    def _prepare(self, plan: Plan, new: Topology) -> dict[str, _Prepared]:
        """Import the handler/matcher of every sink about to (re)start; raises before any change."""
        base_dir = new.base_dir or self.base_dir
        reload = self.generation > 0
        names = list(plan.sinks_added) + [c.name for c in plan.sinks_changed if c.needs_restart]
        reloaded: set[str] = set()
        prepared: dict[str, _Prepared] = {}

        def load(ref: str) -> Callable[..., Any]:
            module = ref.split(":", 1)[0]
            fresh = reload and module not in reloaded
            reloaded.add(module)
            return import_callable(ref, base_dir, reload=fresh)

        for name in (*plan.sinks_removed, *names):
            old = self.topology.sinks.get(name)
            log_state_change(self.deployment, old, new.sinks.get(name), self.conn.stream_key)
        for name in names:
            spec = new.sinks[name]
            handler = load(spec.handler)
            matcher = load(spec.matcher) if spec.matcher else None
            state = None
            if spec.state is not None and spec.key is not None:
                layout = state_layout(self.deployment, spec, self.conn.stream_key)
                state = StateWiring(key_function(spec.key, base_dir, load), layout)
            prepared[name] = _Prepared(spec, handler, matcher, state)
        return prepared

    def _new_actor(self, prepared: _Prepared, index: int, spec: SinkSpec | None = None) -> Actor:
        spec = spec or prepared.spec
        state = prepared.state
        pool = self._executor
        handler = (
            runner_for(prepared.handler, spec.outputs, executor=pool)
            if state is None
            else StatefulRunner(prepared.handler, spec.outputs, state.layout, executor=pool)
        )
        return Actor(
            spec,
            index,
            conn=self.conn,
            handler=handler,
            attempts_key=self.keys.attempts(spec.name),
            streams=self.streams,
            metrics=self.metrics,
            matcher=prepared.matcher,
            state=state,
            owners=self.owners,
            on_trimmed=self.report_trimmed,
        )

    async def _start_actors(
        self, prepared: _Prepared, indexes: range, undo: list[Undo], spec: SinkSpec | None = None
    ) -> None:
        name = prepared.spec.name
        for index in indexes:
            actor = self._new_actor(prepared, index, spec)
            await actor.start()
            self._actors.setdefault(name, []).append(actor)
            self.metrics.actors.labels(name).set(len(self._actors[name]))

            async def stop(actor: Actor = actor) -> None:
                await actor.drain(self.drain_timeout)
                actors = self._actors.get(actor.spec.name, [])
                if actor in actors:
                    actors.remove(actor)

            undo.append(stop)

    async def _drain_actors(self, name: str, actors: list[Actor], undo: list[Undo]) -> None:
        """Drain ``actors`` of sink ``name`` (in parallel); undo restarts equivalents."""
        current = self._actors.get(name, [])
        for actor in actors:
            if actor in current:
                current.remove(actor)
        if not current:
            self._actors.pop(name, None)
        self.metrics.actors.labels(name).set(len(current))
        await asyncio.gather(*(a.drain(self.drain_timeout) for a in actors))
        prepared = self._prepared.get(name)

        async def restart() -> None:
            if prepared is None:
                return
            for actor in actors:
                clone = self._new_actor(prepared, actor.index, actor.spec)
                await clone.start()
                self._actors.setdefault(name, []).append(clone)
            self._actors[name].sort(key=lambda a: a.index)

        undo.append(restart)

    async def _apply_sinks(
        self,
        plan: Plan,
        old: Topology,
        new: Topology,
        prepared: dict[str, _Prepared],
        undo: list[Undo],
    ) -> None:
        for name in plan.sinks_removed:
            await self._drain_actors(name, self.actors(name), undo)
            previous = self._prepared.pop(name, None)
            undo.append(_setter(self._prepared, name, previous))
        for change in plan.sinks_changed:
            if change.needs_restart:
                await self._restart_sink(prepared[change.name], undo)
            else:
                await self._change_sink(
                    change, old.sinks[change.name], new.sinks[change.name], undo
                )
        for name in plan.sinks_added:
            self._prepared[name] = prepared[name]
            undo.append(_setter(self._prepared, name, None))
            await self._start_actors(prepared[name], range(new.sinks[name].consumers), undo)

    async def _restart_sink(self, prepared: _Prepared, undo: list[Undo]) -> None:
        """A change running actors cannot take: drain them, start new ones."""
        name = prepared.spec.name
        await self._drain_actors(name, self.actors(name), undo)
        previous = self._prepared.get(name)
        self._prepared[name] = prepared
        undo.append(_setter(self._prepared, name, previous))
        await self._start_actors(prepared, range(prepared.spec.consumers), undo)

    async def _change_sink(
        self, change: SinkChange, old: SinkSpec, spec: SinkSpec, undo: list[Undo]
    ) -> None:
        """A change the running actors take live: streams, spec, number of consumers."""
        name = change.name
        running = self.actors(name)
        await self._change_streams(change, old, running, undo)
        for actor in running:  # later rescales start actors of the current spec
            undo.append(_setattr(actor, "spec", actor.spec))
            actor.spec = spec
        current = self._prepared.get(name)
        if current is not None:
            undo.append(_setter(self._prepared, name, current))
            self._prepared[name] = _Prepared(spec, current.handler, current.matcher)
        if change.consumers is not None:
            before, after = change.consumers
            if after > before:
                await self._start_actors(self._prepared[name], range(before, after), undo)
            else:
                extra = [a for a in running if a.index >= after]
                await self._drain_actors(name, extra, undo)

    async def _change_streams(
        self, change: SinkChange, old: SinkSpec, running: list[Actor], undo: list[Undo]
    ) -> None:
        for ref in change.streams_added:
            for actor in running:
                await actor.add_stream(ref.name, ref.start)
                undo.append(_call(actor.remove_stream, ref.name))
        for stream in change.streams_removed:
            start = old.start_of(stream)
            for actor in running:
                await actor.remove_stream(stream)
                undo.append(_call(actor.add_stream, stream, start))
        if change.streams_removed:
            await self._settle_removed(running, set(change.streams_removed))

    async def _settle_removed(self, actors: list[Actor], streams: set[str]) -> None:
        """Return once ``actors`` hold no read-but-uncommitted event of ``streams``.

        ``remove_stream`` is a barrier for reads (nothing of the stream is read
        after it), but events read before it may still sit in the sink's buffer
        or in a batch being handled: they finish and commit (nothing in flight
        is lost). Waiting for that here makes "the reload is done" mean "that
        sink handles no further event of the removed stream".

        Redis is the witness, not the actor's internals: the events of a removed
        stream this consumer may still handle are exactly those pending on it
        with an idle time under ack_grace — a commit acks them; entries the sink
        hands back (delivered by an interrupted read, never seen) are re-marked
        idle past ack_grace, and events waiting for a retry backoff are left
        pending by design (they keep their attempt count). Bounded by the drain
        timeout: past it the reload goes on and a late commit may still land.
        """
        deadline = time.monotonic() + self.drain_timeout
        redis = self.conn.redis
        for actor in actors:
            sink = actor.sink
            if sink is None:
                continue
            grace_ms = int(actor.spec.ack_grace * 1000)
            waiting: set[tuple[str, str]] | None = None
            while actor.running and time.monotonic() < deadline:
                retrying = actor.retrying()
                current: set[tuple[str, str]] = set()
                for stream in streams:
                    try:
                        rows = await redis.xpending_range(
                            self.conn.stream_key(stream),
                            actor.spec.name,
                            min="-",
                            max="+",
                            count=100_000,
                            consumername=sink.consumer,
                        )
                    except Exception as exc:  # NOGROUP, Redis away: nothing to wait for
                        log.debug("settle %s/%s: %r", actor.name, stream, exc)
                        continue
                    for row in rows:
                        entry_id = row["message_id"]
                        if isinstance(entry_id, bytes):
                            entry_id = entry_id.decode()
                        if int(row["time_since_delivered"]) < grace_ms:
                            current.add((stream, entry_id))
                current -= retrying
                # Only what was in hand at the first look counts: a hand-back marks
                # entries idle, a commit acks them; nothing of the stream is added.
                waiting = current if waiting is None else waiting & current
                if not waiting:
                    break
                await asyncio.sleep(SETTLE_POLL)  # polling Redis for the commits
            if time.monotonic() >= deadline:
                log.warning(
                    "actor %s: events of removed stream(s) %s still in hand after %.0fs",
                    actor.name,
                    ", ".join(sorted(streams)),
                    self.drain_timeout,
                )

    async def _apply_sources(
        self, plan: Plan, old: Topology, new: Topology, undo: list[Undo]
    ) -> None:
        for name in (*plan.sources_removed, *plan.sources_changed):
            runner = self._sources.pop(name, None)
            if runner is not None:
                await runner.stop()
                undo.append(self._source_starter(old.sources[name], old))
        for name in (*plan.sources_changed, *plan.sources_added):
            await self._source_starter(new.sources[name], new)()
            undo.append(self._source_stopper(name))

    def _source_starter(self, spec: SourceSpec, topology: Topology) -> Undo:
        async def start() -> None:
            from topology.runtime.sources import SourceRunner

            runner = SourceRunner(spec, topology, self.conn, worker_id=self.worker_id)
            runner.start()
            self._sources[spec.name] = runner
            log.info("source %s started", spec.name)

        return start

    def _source_stopper(self, name: str) -> Undo:
        async def stop() -> None:
            runner = self._sources.pop(name, None)
            if runner is not None:
                await runner.stop()

        return stop

    # -- stopping --------------------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop sources and reading; let every actor finish and commit its batch.

        True when every actor finished within ``timeout``; those that did not
        leave their events pending for redelivery.
        """
        async with self._lock:
            for name in list(self._sources):
                await self._source_stopper(name)()
            actors = self.actors()
            log.info("draining %d actors", len(actors))
            results = await asyncio.gather(*(a.drain(timeout) for a in actors))
            self._actors.clear()
            return all(results)

    async def close(self) -> None:
        """Stop everything now (after :meth:`drain`, nothing is left to stop)."""
        self._closed = True
        for name in list(self._sources):
            runner = self._sources.pop(name)
            try:
                await runner.stop()
            except Exception as exc:
                log.warning("source %s: stop failed: %r", name, exc)
        await asyncio.gather(*(a.stop_now() for a in self.actors()), return_exceptions=True)
        self._actors.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _ended(source: Any) -> bool:
    """A source that finished (here or in another worker) or failed for good."""
    return bool(getattr(source, "done", True)) or getattr(source, "failed", None) is not None


def _setter(mapping: dict[str, Any], key: str, value: Any) -> Undo:
    async def restore() -> None:
        if value is None:
            mapping.pop(key, None)
        else:
            mapping[key] = value

    return restore


def _setattr(obj: object, attr: str, value: Any) -> Undo:
    async def restore() -> None:
        setattr(obj, attr, value)

    return restore


def _call(fn: Callable[..., Awaitable[None]], *args: Any) -> Undo:
    async def run() -> None:
        await fn(*args)

    return run
