"""An actor: one consumer of one sink, reading chunks and handing them to a lane.

The loop reads a chunk (``read_batch(room)``) and hands it to a lane
(:mod:`topology.runtime.pipeline`), which runs it through :meth:`Actor.steps`:
handler on the whole chunk, then one commit script (outputs + acks + dead
letters). Reads are half a batch (a chunk) and a chunk is handled while the
previous one commits, so the server's work (read, commit script) overlaps the
handler's instead of following it; the handler still sees one chunk at a time,
in read order, and commits land in read order. The actor never holds more than
``batch`` un-acked events, counting what the server delivered to its consumer
(the sink reads at most a chunk): events waiting for a retry count against that
room, so a sink whose handler keeps failing slows its own reads and no one else's.

Failures never hold up the rest of a chunk: the successes are committed; each
failure's attempt count is incremented in Redis and it waits in the
:class:`~topology.runtime.retry.RetryQueue` for its backoff while the loop
keeps reading. The read runs as a task beside that queue so a due retry does
not wait for a blocking read to return.

Where each part of a chunk's way lives: read (:meth:`Actor._read_ahead`, the
sink's ``read_batch``), matched (the sink's filter), handled
(:mod:`~topology.runtime.handlers`) and committed (:mod:`~topology.runtime.commit`)
by a lane (:mod:`~topology.runtime.pipeline`) running :meth:`Actor.steps`,
retried or dead-lettered (:mod:`~topology.runtime.retry`), settled
(:meth:`~topology.runtime.pipeline.InHand.settle`). A new step of every chunk
goes into :meth:`Actor.steps`, and each lane learns to run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Generator, Mapping
from functools import partial
from typing import Any

from topology.config.model import SinkSpec, StreamSpec
from topology.redact import redact_text
from topology.runtime.commit import Committer
from topology.runtime.handlers import Failure, HandlerRunner, Outcome
from topology.runtime.logs import bind_fields, event_fields
from topology.runtime.metrics import Metrics
from topology.runtime.pipeline import Chunk, InHand, Lane, LoopLane, Step, Steps, ThreadLane
from topology.runtime.retry import TRIES_WHEN_STOPPING, FailurePlan, RedisRetry, RetryQueue
from topology.runtime.sizing import ReadSizer
from topology.runtime.state import (
    AheadStates,
    Applied,
    KeyState,
    KnownStates,
    StateWiring,
    drop_keys,
    event_keys,
    keyed_batch,
)
from topology.runtime.timeouts import isolate_redelivered, over_delivered
from topology.runtime.workers import ConsumerOwners
from topology.streams import Connection, Event, GroupLag, Sink, Stream, describe_error, pause

__all__ = ["Actor"]

log = logging.getLogger("topology.runtime")

#: Blocking read period of an idle actor (close/add_stream interrupt it at once).
READ_BLOCK = 5.0
#: Batches at least this large are read in two overlapping halves (see the module doc).
PIPELINE_MIN_BATCH = 32
#: A keyed chunk's events whose key keeps moving under them are handled again at
#: most this many times in a row, then left pending (redelivered after the ack grace).
STATE_CONFLICT_ROUNDS = 50


class Actor:
    """Consumer ``index`` of sink ``spec.name`` in this worker process."""

    def __init__(
        self,
        spec: SinkSpec,
        index: int,
        *,
        conn: Connection,
        handler: HandlerRunner,
        attempts_key: str,
        streams: Callable[[], Mapping[str, StreamSpec]],
        metrics: Metrics,
        matcher: Callable[[Event], bool] | None = None,
        state: StateWiring | None = None,
        owners: ConsumerOwners | None = None,
        on_trimmed: Callable[[str, str, GroupLag], None] | None = None,
    ) -> None:
        self.spec = spec
        self.state = state
        self._known = KnownStates()
        self._ahead = AheadStates()
        #: State keys of the chunks in this actor's lane and not done yet.
        self._in_flight: Counter[str] = Counter()
        self.owners = owners
        self.on_trimmed = on_trimmed
        self.index = index
        self.conn = conn
        self.handler = handler.limit(spec.timeout, f"actor {spec.name}/{index}")
        self.attempts_key = attempts_key
        self._streams = streams
        self.metrics = metrics
        self.matcher = matcher
        self.sink: Sink | None = None
        self.committer: Committer | None = None
        self.redis_retry = RedisRetry(self.name, self._give_up)
        self._lane: Lane | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._draining = False
        self._halted = False  # stop_now: what is not committed yet is left pending
        self._retries = RetryQueue()
        self._in_hand = InHand(self._retries)
        self._failures = FailurePlan(metrics)
        self._read: asyncio.Future[list[Event]] | None = None
        self._read_backoff = RedisRetry.backoff()
        self._backlog = True  # until a read comes back short
        #: Events per read: half a batch, so one chunk is handled while the
        #: previous one commits, and never more than ``batch`` in hand. A small
        #: batch is not split: its per-read cost outweighs what overlapping saves.
        self._chunk = (spec.batch + 1) // 2 if spec.batch >= PIPELINE_MIN_BATCH else spec.batch
        self._sizer = ReadSizer(spec.max_batch_bytes, self._chunk)
        self._ever_read: set[str] = set(spec.stream_names)  # for the drain's pending flush
        self.last_activity = time.monotonic()
        self.handled = 0

    def __repr__(self) -> str:
        return f"<Actor {self.spec.name}#{self.index}>"

    @property
    def name(self) -> str:
        return f"{self.spec.name}#{self.index}"

    @property
    def sink_name(self) -> str:
        return self.spec.name

    @property
    def in_hand(self) -> int:
        """Un-acked events this actor holds (being handled, committed or awaiting a retry)."""
        return int(self._in_hand)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def halted(self) -> bool:
        return self._halted

    @property
    def _direct(self) -> bool:
        """Chunks are handled and committed on the handler's own thread."""
        return isinstance(self._lane, ThreadLane)

    def retrying(self) -> set[tuple[str, str]]:
        """``(stream, id)`` of the events waiting for a retry backoff: pending on purpose."""
        return self._retries.held()

    def _give_up(self, tries: int) -> bool:
        """Whether a Redis step that failed ``tries`` times in a row stops being retried."""
        return self._halted or (self._stopping and tries >= TRIES_WHEN_STOPPING)

    def _stream(self, name: str) -> Stream:
        spec = self._streams().get(name)
        if spec is None:
            return self.conn.stream(name)
        return self.conn.stream(name, max_len=spec.max_len, ttl=spec.ttl)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Create the sink (its groups on every stream) and start the loop."""
        spec = self.spec
        first, *rest = spec.streams
        sink = await self._stream(first.name).new_sink(
            spec.name,
            start=spec.start_of(first.name),
            block=READ_BLOCK,
            count=self._chunk,
            buffer=spec.batch,
            ack_grace=spec.ack_grace,
            topic=spec.topic,
            topic_pattern=spec.topic_pattern,
            matcher=self.matcher,
            held=self._retries.held,
            on_trimmed=None if self.on_trimmed is None else partial(self.on_trimmed, spec.name),
            **self._owner_hooks(),
        )
        try:
            for ref in rest:
                await sink.add_stream(self._stream(ref.name), start=spec.start_of(ref.name))
        except BaseException:
            await sink.close()
            raise
        self.sink = sink
        await self._sizer.sample(self.conn.redis, map(self.conn.stream_key, spec.stream_names))
        self.committer = Committer(
            self.conn.redis,
            group=spec.name,
            consumer=sink.consumer,
            attempts_key=self.attempts_key,
            stream_key=self.conn.stream_key,
            streams=self._streams,
        )
        self._retries.owned_by(self.conn.redis, spec.name, sink.consumer, self.conn.stream_key)
        self._lane = self._new_lane(self.committer)
        self._task = asyncio.create_task(self._run(), name=f"actor {self.name}")
        self._task.add_done_callback(self._on_exit)
        log.info("actor %s started (consumer %s)", self.name, sink.consumer)

    def _owner_hooks(self) -> dict[str, Any]:
        """The consumer's name (its worker's id first) and the heartbeat check that tells
        a claim pass whether another consumer's worker is dead."""
        if self.owners is None:
            return {}
        return {
            "consumer": self.owners.consumer_name(self.name),
            "consumer_alive": self.owners.alive,
        }

    def _new_lane(self, committer: Committer) -> Lane:
        """The thread lane when the handler has a thread of its own and the committer a
        blocking side (a plain client), else the loop lane."""
        runner = self.handler.own_thread
        if runner is not None and committer.can_block:
            return ThreadLane(self, committer, self._in_hand, runner, asyncio.get_running_loop())
        return LoopLane(self, committer, self._in_hand, self.handler)

    def _on_exit(self, task: asyncio.Task[None]) -> None:
        """An actor that stops without being told to is a bug: say it loudly."""
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        log.error(
            "actor %s stopped unexpectedly (%r); its in-hand events stay pending for redelivery",
            self.name,
            exc,
            exc_info=exc,
        )

    async def add_stream(self, name: str, start: str | None = None) -> None:
        assert self.sink is not None
        self._ever_read.add(name)
        await self.sink.add_stream(self._stream(name), start=start or self.spec.start_of(name))

    async def remove_stream(self, name: str) -> None:
        """Stop reading ``name``; events of it already in hand still commit."""
        assert self.sink is not None
        await self.sink.remove_stream(self._stream(name))

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop reading, finish the batch in hand, commit it, close. True if it finished in time.

        Events waiting for a retry are left pending (their attempt count is in
        Redis): another consumer, or this sink after a restart, takes them over.
        """
        self._stopping = True
        self._draining = True
        if self.sink is not None:
            await self.sink.close()  # interrupts a blocking read at once
        task = self._task
        if task is None:
            return True
        done, _ = await asyncio.wait((task,), timeout=timeout)
        if not done:
            log.warning("actor %s: drain timed out; in-hand events stay pending", self.name)
            await self.stop_now()
            return False
        if not task.cancelled() and task.exception() is not None:
            log.error("actor %s had failed: %r", self.name, task.exception())
        log.info("actor %s drained", self.name)
        return True

    async def stop_now(self) -> None:
        """Stop at once: whatever is in hand stays pending for redelivery."""
        self._stopping = True
        self._halted = True
        if self.sink is not None:
            await self.sink.close()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        assert self.sink is not None and self._lane is not None
        bind_fields(sink=self.spec.name)  # this task's lines, and its children's
        try:
            while True:
                self._read_ahead()
                timeout = await self._retries.wake_in(self.spec.ack_grace / 3)
                waits = self._in_hand.waits(self._read, self._stopping)
                if waits:
                    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                elif self._retries and not self._stopping:
                    await asyncio.sleep(timeout or 0.0)  # a backoff, not a synchronisation
                else:
                    break
                events = await self._take_read()
                self._dispatch(events)
                self._dispatch(self._retries.pop_due())
                if self._stopping and self._read is None and not (events or self._in_hand.in_lanes):
                    break
            if self._draining:
                await self._flush_own_pending()
        finally:
            if self._read is not None and not self._read.done():
                self._read.cancel()
            await self._lane.close()

    def _read_ahead(self) -> None:
        """Start a read if none is in flight, there is room for one and commits go through.

        Read ahead (overlap) only with a backlog: a short read means the stream
        is caught up, and reading again at once would fetch the next event
        alone; waiting for the chunk in hand lets what arrives meanwhile come in
        one read. Fewer reads for the same events.
        """
        sink = self.sink
        if self._read is not None or self._stopping or sink is None or sink.closed:
            return
        if self.redis_retry.failing:  # a chunk's commit is refused: the backlog waits in Redis
            return
        room = self.spec.batch - self.in_hand
        if room > 0 and (self._backlog or not self._in_hand.in_lanes):
            fits = self._sizer.count()  # large events: fewer per read (max_batch_bytes)
            sink.count = min(fits, self._chunk)
            sink.buffer = self.spec.batch if fits >= self._chunk else fits
            self._read = asyncio.ensure_future(sink.read_batch(min(room, sink.count)))

    async def _take_read(self) -> list[Event]:
        """The events of the read, if it is done (a failed read is retried after a backoff)."""
        read = self._read
        if read is None or not read.done():
            return []
        self._read = None
        try:
            events = read.result()
        except Exception as exc:  # read errors the sink did not retry itself
            delay = self._read_backoff.next()
            log.error(
                "actor %s: read failed (retrying in %.1fs): %s",
                self.name,
                delay,
                redact_text(describe_error(exc)),
            )
            await pause(delay)
            events = []
        else:
            self._read_backoff.reset()
            self._sizer.measure(events)
            self._backlog = len(events) >= min(self._chunk, self._sizer.count())
        if not events and self.sink is not None and self.sink.closed:
            self._stopping = True
        return events

    def _dispatch(self, events: list[Event], done: asyncio.Future[None] | None = None) -> None:
        """Hand ``events`` to the lane (counted in hand from now on until settled)."""
        if not events:
            return
        assert self._lane is not None
        self.last_activity = time.monotonic()
        for part in isolate_redelivered(events) if done is None else (events,):
            self._in_hand.handed(len(part))
            self._lane.dispatch(Chunk(part, done))

    # -- one chunk: the steps a lane runs ------------------------------------------------

    def steps(self, chunk: Chunk) -> Steps:
        """Handle, count the failures, commit: each step yielded to the lane, which
        runs it (on the loop or on the handler thread) and sends back its result."""
        if self.state is not None:
            yield from self._keyed_steps(chunk, self.state)
            return
        failed = chunk.take((yield from self._handle(chunk.events)))
        if failed:
            spec = self.spec
            self.metrics.add_failed(spec.name, len(failed))
            counts = yield Step.COUNT, [event for event, _ in failed]
            dead, chunk.retries = self._failures.plan(spec, failed, counts, stopping=self._stopping)
            chunk.entries += dead
        if chunk.entries:
            self._committed(chunk, (yield Step.COMMIT, chunk.entries))

    def _keyed_steps(self, chunk: Chunk, wiring: StateWiring) -> Steps:
        """:meth:`steps` of a stateful sink: read the chunk's keys' states, handle, commit
        with the states; events whose key's state moved meanwhile are handled again
        from the current state (their first attempt's outputs were never written).

        A key an earlier chunk still holds starts from the state that chunk's handler
        left (:class:`AheadStates`), checked once that chunk is committed."""
        keys, names = self._keys(chunk.events, wiring)
        in_flight = self._in_flight
        shared = [name for name in names if name in in_flight]
        in_flight.update(names)
        published: list[KeyState] = []
        try:
            yield from self._keyed_rounds(chunk, wiring, keys, names, shared, published)
        finally:
            self._ahead.retire(published)
            in_flight.subtract(names)
            for name in names:
                if in_flight[name] <= 0:
                    del in_flight[name]

    def _keyed_rounds(
        self,
        chunk: Chunk,
        wiring: StateWiring,
        keys: list[str | Failure],
        names: list[str],
        shared: list[str],
        published: list[KeyState],
    ) -> Steps:
        spec = self.spec
        events = chunk.events
        held = set(shared)
        for round_ in range(STATE_CONFLICT_ROUNDS):
            based: dict[str, str | None] = {}
            if round_:  # every earlier chunk is done: start from what they committed
                keys, names = self._keys(events, wiring)
                stored = yield from self._stored(names)
            else:
                stored = yield from self._stored([n for n in names if n not in held])
                if shared:
                    stored.update((yield from self._ahead_of(shared, based)))
            applied = yield Step.HANDLE, (events, keys, stored)
            if not round_:
                published += self._ahead.publish(applied)
            again: list[Event] = []
            if based:
                yield Step.AFTER_PREVIOUS, None  # the states it started from are committed
                stale = AheadStates.stale(based, applied, self._known)
                if stale:  # an earlier commit did not write what they started from
                    redo, applied = drop_keys(applied, stale)
                    again = [events[i] for i in redo]
                    skip = set(redo)
                    events = [e for i, e in enumerate(events) if i not in skip]
            if events:
                moved = yield from self._commit_round(chunk, wiring, events, applied)
                self.metrics.add_state_conflicts(spec.name, len(moved))
                again += moved
            if not again:
                return
            order = {id(e): i for i, e in enumerate(chunk.events)}
            events = sorted(again, key=lambda e: order[id(e)])
        log.warning(
            "sink %s: actor %s: the state of %d event(s)' keys kept changing before their "
            "commit; they stay pending for redelivery",
            spec.name,
            self.name,
            len(events),
        )

    def _stored(self, names: list[str]) -> Generator[tuple[str, Any], Any, dict[str, KeyState]]:
        """The states of ``names``: those this actor knows, the others read."""
        stored, misses = self._known.split(names)
        if misses:
            stored.update((yield Step.READ_STATE, misses))
        return stored

    def _ahead_of(
        self, names: list[str], based: dict[str, str | None]
    ) -> Generator[tuple[str, Any], Any, dict[str, KeyState]]:
        """The states of ``names``, keys earlier chunks of this actor hold: once the chunk
        before is handled, what the earlier chunks' handlers left (recorded in ``based``:
        checked after their commits), else what they committed."""
        yield Step.AFTER_HANDLED, None
        stored: dict[str, KeyState] = {}
        rest = []
        for name in names:
            ks = self._ahead.get(name)
            if ks is None:
                rest.append(name)
            else:
                stored[name] = ks
                based[name] = ks.text
        if rest:
            stored.update((yield from self._stored(rest)))
        return stored

    def _commit_round(
        self, chunk: Chunk, wiring: StateWiring, events: list[Event], applied: Applied
    ) -> Generator[tuple[str, Any], Any, list[Event]]:
        """Count the failures, commit the rest with their states; the events left out
        because their key's state moved (to handle again)."""
        spec = self.spec
        part = Chunk(events)
        failed = part.take(applied.outcomes)
        entry_keys: list[str | None] = [
            applied.keys[i] for i, o in enumerate(applied.outcomes) if type(o) is list
        ]
        if failed:
            self.metrics.add_failed(spec.name, len(failed))
            counts = yield Step.COUNT, [event for event, _ in failed]
            dead, retries = self._failures.plan(spec, failed, counts, stopping=self._stopping)
            part.entries += dead
            entry_keys += [None] * len(dead)
            chunk.retries += retries
        if not part.entries:
            return []
        batch = keyed_batch(part.entries, entry_keys, applied, wiring.layout)
        result = yield Step.COMMIT_KEYED, batch
        self._known.committed(batch, result.conflicts + result.moved, result.version)
        self._committed(part, result.conflicts, len(result.moved))
        return [part.entries[i].event for i in result.moved]

    def _keys(
        self, events: list[Event], wiring: StateWiring
    ) -> tuple[list[str | Failure], list[str]]:
        """Each event's state key (or the failure that dead-letters it without a call: no
        key, or delivered more than ``max_deliveries`` times), and the distinct state keys'
        Redis names."""
        keys = event_keys(events, wiring.key_of)
        over = over_delivered(events, self.spec.max_deliveries)
        if over is not None:
            for i, failure in over.items():
                keys[i] = failure
        return keys, list(dict.fromkeys(wiring.layout.name(k) for k in keys if type(k) is str))

    def _handle(self, events: list[Event]) -> Generator[tuple[str, Any], Any, list[Outcome]]:
        """The handler's outcomes for ``events``; an event delivered more than
        ``max_deliveries`` times is a failure without a call, and the rest of its
        batch is handled as usual."""
        over = over_delivered(events, self.spec.max_deliveries)
        if over is None:
            return (yield Step.HANDLE, events)
        rest = [e for i, e in enumerate(events) if i not in over]
        handled = iter((yield Step.HANDLE, rest) if rest else ())
        return [over[i] if i in over else next(handled) for i in range(len(events))]

    def _committed(self, chunk: Chunk, conflicts: list[int], moved: int = 0) -> None:
        """Count a commit: handler successes, and events claimed away meanwhile
        (``moved``: successes not committed because their key's state moved)."""
        handled = chunk.handled - moved - sum(1 for i in conflicts if i < chunk.handled)
        if handled:
            self.handled += handled
            self.metrics.add_handled(self.spec.name, handled)
        self.last_activity = time.monotonic()
        if conflicts:
            first = chunk.entries[conflicts[0]].event
            self.metrics.add_conflicts(self.spec.name, len(conflicts))
            log.warning(
                "sink %s: %d event(s) were claimed by another consumer before actor %s "
                "committed them; their outputs from this actor were discarded (first: %s/%s)",
                self.spec.name,
                len(conflicts),
                self.name,
                first.stream_name,
                first.id,
                extra=event_fields(self.spec.name, first),
            )

    # -- around the loop -------------------------------------------------------------------

    async def _flush_own_pending(self) -> None:
        """On drain, handle what the server delivered to this consumer but never reached us
        (a read cancelled by ``close()``, the dropped buffer): left alone it would wait a
        whole ack grace for a claim, or for a removed sink, until it is added again.
        Events waiting for a retry keep their backoff."""
        assert self.sink is not None
        names = dict.fromkeys((*self.sink.streams, *sorted(self._ever_read)))
        held = self._retries.held()
        async for events in self.sink.own_pending(names, count=self.spec.batch, skip=held):
            log.info(
                "actor %s: handling %d delivered-but-unread events before stopping",
                self.name,
                len(events),
            )
            done = asyncio.get_running_loop().create_future()
            self._dispatch(events, done)
            await done
