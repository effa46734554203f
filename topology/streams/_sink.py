"""``Sink``: one member of a consumer group spread over one or more streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence, Set
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from topology.streams._consumer import Consumer, event_filter, is_nogroup
from topology.streams._event import Event
from topology.streams._lag import GroupLag, read_group_lag
from topology.streams._lease import EXTEND_LEASE_SCRIPT, RELEASE_LEASE_SCRIPT
from topology.streams._options import SinkOptions
from topology.streams._position import parse_start, validate_start
from topology.streams._retry import RETRYABLE_ERRORS
from topology.streams._wire import decode_event, entries_of

if TYPE_CHECKING:
    from topology.streams._connection import Connection
    from topology.streams._stream import Stream

__all__ = ["ConsumerAlive", "Sink"]

log = logging.getLogger("topology.streams")

#: Remove a consumer only if it has nothing pending, checked atomically: deleting
#: a consumer drops its pending entries, so a consumer that just received events
#: between our XINFO and the delete must be left alone.
DELETE_IDLE_CONSUMER_SCRIPT = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return -1
"""

#: Without a ``consumer_alive`` hook, a consumer with nothing pending is taken for
#: dead once idle this long (seconds), or this many ack graces if that is longer:
#: far past any pause of a live one (a long handler, a stalled network, a worker
#: waiting for Redis to come back).
STALE_AFTER = 3600.0
STALE_AFTER_GRACES = 100

#: Whether consumer ``name`` of the group, idle ``idle_ms``, still has a live owner.
ConsumerAlive = Callable[[str, int], Awaitable[bool]]

#: Idle time (ms) given to entries handed back (``XCLAIM ... IDLE``): past any
#: sensible ack grace, so the next claim pass of any instance takes them, and far
#: below the entries' age (Redis resets an IDLE beyond "now" to 0).
HAND_BACK_IDLE_MS = 24 * 3600 * 1000
#: Errors a hand-back shrugs off (best effort: the claim pass is the fallback).
HAND_BACK_ERRORS: tuple[type[BaseException], ...] = (*RETRYABLE_ERRORS, ResponseError)
#: Reads of one stream's pending history per :meth:`Sink.own_pending` (a bound, not a goal).
OWN_PENDING_PASSES = 1000


def _consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Sink(Consumer):
    """A member of consumer group ``name`` on each of its streams.

    Every instance with the same name shares the events (each goes to one of
    them); different names each get every event. Events this sink delivers are
    pending on consumer :attr:`consumer` of group :attr:`name` until acked.
    Un-acked events are re-claimed after ``ack_grace`` seconds by one instance
    (the holder of the claim lease) and delivered again. Events the filter does
    not match are acked at once (pulse leaves them pending forever).

    Hooks for a caller that knows more than the streams do: ``consumer`` names
    this instance's consumer (default ``host-pid-random``); ``held`` returns the
    ``(stream, id)`` of events the caller still holds on purpose (e.g. waiting
    for a retry), which a claim pass never hands it again; ``consumer_alive``
    tells whether another consumer of the group still has a live owner. A
    consumer is only ever removed from the group when it has nothing pending and
    its owner is dead: by default, when it has been idle for
    :data:`STALE_AFTER` seconds (or :data:`STALE_AFTER_GRACES` ack graces).
    ``on_trimmed(stream, state)`` hears of entries a stream's own trimming
    removed before the group read them (default: a WARNING).
    """

    def __init__(
        self,
        conn: Connection,
        name: str,
        *,
        start: str = SinkOptions.start,
        block: float = SinkOptions.block,
        count: int = SinkOptions.count,
        buffer: int = SinkOptions.buffer,
        ack_grace: float = SinkOptions.ack_grace,
        topic: str | None = SinkOptions.topic,
        topic_pattern: str | None = SinkOptions.topic_pattern,
        matcher: Callable[[Event], bool] | None = SinkOptions.matcher,
        no_ack: bool = SinkOptions.no_ack,
        consumer: str | None = None,
        held: Callable[[], Set[tuple[str, str]]] | None = None,
        consumer_alive: ConsumerAlive | None = None,
        on_trimmed: Callable[[str, GroupLag], None] | None = None,
    ) -> None:
        if not name:
            raise ValueError("a sink needs a name")
        options = SinkOptions(
            start=start,
            block=block,
            count=count,
            buffer=buffer,
            ack_grace=ack_grace,
            topic=topic,
            topic_pattern=topic_pattern,
            matcher=matcher,
            no_ack=no_ack,
        )
        super().__init__(conn, options, event_filter(topic, topic_pattern, matcher))
        self.name = name
        self.consumer = consumer or _consumer_name()
        self._held = held
        self._consumer_alive = consumer_alive or self._idle_not_too_long
        self._on_trimmed = on_trimmed
        self._trim_seen: dict[str, str | None] = {}  # stream -> group position reported
        self.ack_grace = ack_grace
        self.no_ack = no_ack
        self.topic = topic
        self.topic_pattern = topic_pattern
        self._starts: dict[str, str] = {}
        self._last_entries: dict[str, Any] = {}  # stream -> raw [id, fields] last delivered
        self._acker = None if no_ack else self._ack_one
        redis = conn.redis
        self._release_lease = redis.register_script(RELEASE_LEASE_SCRIPT)
        self._extend_lease = redis.register_script(EXTEND_LEASE_SCRIPT)
        self._delete_idle_consumer = redis.register_script(DELETE_IDLE_CONSUMER_SCRIPT)
        self._lease_key = conn.keys.claim_lease(name)
        self._claim_task: asyncio.Task[None] | None = None
        # Entries of removed streams delivered to us but not to our caller, by key.
        self._hand_back: dict[str, list[str]] = {}
        self.claimed = 0  # events this instance re-claimed from idle consumers (stats)

    def __repr__(self) -> str:
        return f"<Sink {self.name!r} consumer={self.consumer!r} streams={list(self._streams)}>"

    # -- stream set ------------------------------------------------------------------

    async def add_stream(self, stream: Stream, *, start: str | None = None) -> None:
        """Read ``stream`` too, from now on (interrupts a blocking read).

        A group that does not exist yet is created at ``start`` (default: the
        sink's start); an existing group keeps its position, so re-adding a
        removed stream resumes after the last event delivered to the group.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        position = validate_start(start if start is not None else self.start)
        await self._create_group(stream.key, parse_start(position))
        self._starts[stream.name] = position
        self._set_stream(stream)
        if self._claim_task is None and not self.no_ack:
            self._claim_task = asyncio.ensure_future(self._claim_loop())

    async def remove_stream(self, stream: Stream) -> None:
        """Stop reading ``stream``: a barrier (interrupts a blocking read at once).

        When this returns, the read in flight at the call has ended, and no
        later ``read_batch`` returns an event of ``stream`` read after the call:
        entries the interrupted read (or a claim pass) got from the server are
        not delivered but handed back (pending on this consumer with an idle
        time past ack_grace, so the next claim pass of any instance takes them).
        Events already in the local buffer, read before the call, are still
        delivered: the server counts them as delivered to this consumer, and
        handing them to the caller is the quickest way to get them handled.

        The consumer group and its position stay: other instances and a later
        ``add_stream`` carry on from there. Never ``XGROUP DESTROY``.
        """
        if self._unset_stream(stream):
            await self._settle_read()

    async def _create_group(self, key: str, group_start: str) -> bool:
        try:
            await self.conn.execute_raw(
                key, b"XGROUP", "CREATE", key, self.name, group_start, "MKSTREAM"
            )
        except ResponseError as exc:
            if str(exc).startswith("BUSYGROUP"):
                return False
            raise
        return True

    async def _recover_lost_group(self, exc: BaseException) -> None:
        """Re-create groups lost on the server (flush, restart without persistence)."""
        log.warning(
            "sink %r: consumer group missing on the server (%s); re-creating it and resuming",
            self.name,
            exc,
        )
        for name, stream in list(self._streams.items()):
            position = await self._resume_position(name, stream.key)
            if await self._create_group(stream.key, position):
                log.warning(
                    "sink %r: re-created group on stream %r at %s", self.name, name, position
                )

    async def _resume_position(self, name: str, key: str) -> str:
        """Where a re-created group starts on stream ``name``.

        Right after the last event this instance delivered when that entry is
        still there (the group was destroyed, the stream survived). When it is
        gone the stream itself was lost (flush, restart without persistence) and
        every entry now in it is new, whatever its id (a re-created stream
        restarts ids, possibly below ours): start at the beginning. If ours was
        trimmed instead, every entry left is newer than it (trimming removes the
        oldest first), so the beginning is right then too.
        """
        last = self._last_entries.get(name)
        if last is None:
            return parse_start(self._starts.get(name, self.start))
        last_id = last[0].decode()
        found = await self.conn.execute_raw(key, b"XRANGE", key, last_id, last_id, "COUNT", 1)
        # Same id AND same fields: a fast re-created stream can reuse an id (same ms).
        if found and list(found[0][1]) == list(last[1]):
            return last_id
        return "0"

    async def _after_interrupted_read(self, keys: list[str]) -> None:
        """Deliver entries an interrupted XREADGROUP handed us but whose reply was dropped.

        Cancelling the read (add/remove_stream, a claim) races with the server's
        reply: when it loses, entries are pending on this consumer yet were never
        seen here. They would come back after ack_grace via the claim; this finds
        them at once instead. They are the entries of our pending list newer than
        the last one a ``>`` read gave us, delivered exactly once (claimed ones
        have a delivery count above 1).
        """
        if self.no_ack:
            return
        execute_raw = self.conn.execute_raw
        group, consumer = self.name, self.consumer
        for key in keys:
            name = self._names_by_key.get(key.encode()) or self._name_of_key(key)
            last = self._last_entries.get(name)
            start = "(" + last[0].decode() if last is not None else "-"
            pending = await execute_raw(
                key, b"XPENDING", key, group, start, "+", self.count, consumer
            )
            lost = [entry[0] for entry in pending or () if int(entry[3]) == 1]
            if not lost:
                continue
            if key.encode() not in self._names_by_key:  # removed meanwhile: not ours to deliver
                self._hand_back.setdefault(key, []).extend(x.decode() for x in lost)
                continue
            entries = await execute_raw(key, b"XCLAIM", key, group, consumer, 0, *lost)
            log.info("sink %r: recovered %d entries of an interrupted read", self.name, len(lost))
            unmatched = self._to_events(((key.encode(), entries),), self._buffer, track=True)
            if unmatched:
                await self._xack(unmatched)

    async def _before_read(self) -> None:
        await self._check_trimmed()
        await self._hand_back_removed()

    async def _check_trimmed(self) -> None:
        """Before reading a stream that trims itself (``max_len``, ``ttl``): has trimming
        overtaken the group, removing entries it never read?

        Only knowable before the read that skips the gap (the server keeps no
        trace of it afterwards), hence here, one ``XINFO`` pair per such stream
        and read. Each gap is reported once (by the group's position), to
        ``on_trimmed`` or as a WARNING.
        """
        if self.no_ack:
            return
        for name, stream in list(self._streams.items()):
            if stream.max_len is None and stream.ttl is None:
                continue
            try:
                state = await read_group_lag(self.conn, stream.key, self.name)
            except Exception as exc:  # a check that fails never stops the read after it
                log.debug("sink %r: trimming check of %s skipped: %s", self.name, name, exc)
                continue
            if state is None or not state.trimmed_unread:
                continue
            if self._trim_seen.get(name) == state.last_delivered_id:
                continue
            self._trim_seen[name] = state.last_delivered_id
            if self._on_trimmed is not None:
                self._on_trimmed(name, state)
            else:
                log.warning(
                    "sink %r: %s entries of stream %r were trimmed before it read them",
                    self.name,
                    state.trimmed_text,
                    name,
                )

    async def _hand_back_removed(self) -> None:
        """Hand back entries of removed streams (see :meth:`remove_stream`).

        ``XCLAIM ... IDLE JUSTID`` to ourselves: they stay pending (nothing is
        lost, the delivery count is unchanged) but look abandoned, so the next
        claim pass of any instance reading the stream takes them. Best effort:
        if it fails they are claimed after ack_grace like any pending entry.
        """
        if not self._hand_back:
            return
        hand_back, self._hand_back = self._hand_back, {}
        idle = max(HAND_BACK_IDLE_MS, int(self.ack_grace * 1000) + 1)
        for key, ids in hand_back.items():
            try:
                await self.conn.execute_raw(
                    key,
                    b"XCLAIM",
                    key,
                    self.name,
                    self.consumer,
                    0,
                    *dict.fromkeys(ids),
                    "IDLE",
                    idle,
                    "JUSTID",
                )
            except HAND_BACK_ERRORS as exc:
                log.debug("sink %r: hand-back of %d entries failed: %s", self.name, len(ids), exc)
            else:
                log.info(
                    "sink %r: handed back %d entries of removed stream %r",
                    self.name,
                    len(ids),
                    self._name_of_key(key),
                )

    # -- reading ---------------------------------------------------------------------

    def _read_args(self, keys: list[str]) -> list[Any]:
        args: list[Any] = [
            b"XREADGROUP",
            "GROUP",
            self.name,
            self.consumer,
            "COUNT",
            min(self.count, self.buffer),
            "BLOCK",
            self._block_ms,
        ]
        if self.no_ack:
            args.append("NOACK")
        args.append("STREAMS")
        args.extend(keys)
        args.extend([">"] * len(keys))
        return args

    async def _ingest(self, reply: Any) -> None:
        unmatched = self._to_events(entries_of(reply), self._buffer, track=True)
        if unmatched:
            await self._ack_unmatched(unmatched)

    def _to_events(
        self, items: Any, out: Any, *, track: bool, skip: set[tuple[str, str]] | None = None
    ) -> dict[str, list[str]] | None:
        """Decode raw entries into ``out``; returns unmatched ids by stream (to ack)."""
        unmatched: dict[str, list[str]] | None = None
        for key, entries in items:
            if not entries:
                continue
            stream_name = self._names_by_key.get(key)
            if stream_name is None:
                # Removed since this read began: never delivered (remove_stream is
                # a barrier), handed back instead.
                self._hand_back.setdefault(key.decode(), []).extend(
                    raw_id.decode() for raw_id, flat in entries if flat is not None
                )
                stream_name = self._name_of_key(key)
            else:
                missed = self._decode_into(out, stream_name, entries, skip)
                if missed:
                    unmatched = unmatched or {}
                    unmatched[stream_name] = missed
            if track:
                self._last_entries[stream_name] = entries[-1]
        return unmatched

    def _decode_into(
        self,
        out: Any,
        stream_name: str,
        entries: Any,
        skip: set[tuple[str, str]] | None = None,
    ) -> list[str]:
        """Append the events of ``entries`` the filter accepts to ``out``; the unmatched ids."""
        accept = self._accept
        acker = self._acker
        sink_name = self.name
        unmatched: list[str] = []
        for raw_id, flat in entries:
            if flat is None:  # deleted while pending (XREADGROUP history)
                continue
            event = decode_event(raw_id, flat, stream_name, sink_name=sink_name, acker=acker)
            if skip is not None and (stream_name, event.id) in skip:
                continue
            if accept is None or accept(event):
                out.append(event)
            elif acker is not None:
                unmatched.append(event.id)
        return unmatched

    async def own_pending(
        self,
        stream_names: Iterable[str],
        *,
        count: int | None = None,
        skip: set[tuple[str, str]] | None = None,
    ) -> AsyncIterator[list[Event]]:
        """Chunks of what the server delivered to this consumer and nobody acked yet.

        What a cancelled read or the buffer dropped by :meth:`close` leaves
        pending here: the server counts it as delivered, so it would wait a
        whole ack grace for a claim. Reading it back lets the owner handle it
        before it stops; streams no longer read work too. Events the filter
        rejects are acked, ``skip`` (stream, id) ones left alone. A stream whose
        history cannot be read (no group, Redis away) is left to the claim pass.
        """
        for name in stream_names:
            after: str | None = "0"
            for _ in range(OWN_PENDING_PASSES):  # bounded: the caller acks what it gets
                try:
                    events, after = await self._read_own_pending(name, after or "0", count, skip)
                except Exception as exc:
                    log.debug("sink %r: pending history of %s not read: %r", self.name, name, exc)
                    break
                if events:
                    yield events
                if after is None:
                    break

    async def _read_own_pending(
        self, name: str, after: str, count: int | None, skip: set[tuple[str, str]] | None
    ) -> tuple[list[Event], str | None]:
        """One ``XREADGROUP ... <after>`` of this consumer's history: the accepted events
        and the id to read after next (None: no more)."""
        key = self.conn.stream_key(name)
        reply = await self.conn.execute_raw(
            key,
            b"XREADGROUP",
            "GROUP",
            self.name,
            self.consumer,
            "COUNT",
            count or self.count,
            "STREAMS",
            key,
            after,
        )
        events: list[Event] = []
        last: str | None = None
        for _, entries in entries_of(reply):
            if not entries:
                continue
            last = entries[-1][0].decode()
            unmatched = self._decode_into(events, name, entries, skip)
            if unmatched:
                await self._xack({name: unmatched})
        return events, last

    def _name_of_key(self, key: Any) -> str:
        text = key.decode() if isinstance(key, bytes) else str(key)
        marker = f"{self.conn.keys.prefix}:stream:"
        return text[len(marker) :] if text.startswith(marker) else text

    async def _ack_unmatched(self, unmatched: dict[str, list[str]]) -> None:
        await self._xack(unmatched)

    # -- acking ----------------------------------------------------------------------

    async def _ack_one(self, event: Event) -> None:
        key = self.conn.stream_key(event.stream_name)
        await self.conn.execute_raw(key, b"XACK", key, self.name, event.id)

    async def ack_many(self, events: Sequence[Event]) -> None:
        """Acknowledge ``events`` with one XACK per stream, in one round trip."""
        if self.no_ack or not events:
            return
        stream_names = {event.stream_name for event in events}
        if len(stream_names) == 1:
            # Ids as bytes: redis-py then packs them without its per-argument
            # type dispatch, which otherwise dominates the cost of a large XACK.
            (name,) = stream_names
            key = self.conn.stream_key(name)
            await self.conn.execute_raw(
                key, b"XACK", key, self.name, *[event.id.encode() for event in events]
            )
            return
        by_stream: dict[str, list[str]] = {}
        for event in events:
            by_stream.setdefault(event.stream_name, []).append(event.id)
        await self._xack(by_stream)

    async def _xack(self, by_stream: dict[str, list[str]]) -> None:
        redis = self.conn.redis
        if len(by_stream) == 1:
            ((name, ids),) = by_stream.items()
            await redis.execute_command("XACK", self.conn.stream_key(name), self.name, *ids)
            return
        pipe = redis.pipeline(transaction=False)
        for name, ids in by_stream.items():
            pipe.execute_command("XACK", self.conn.stream_key(name), self.name, *ids)
        await pipe.execute()

    # -- claiming (at-least-once) --------------------------------------------------------

    async def _claim_loop(self) -> None:
        """Every ack_grace/2, re-claim events idle over ack_grace (one instance at a time)."""
        interval = self.ack_grace / 2
        while not self._closed:
            await asyncio.sleep(interval)  # a period, not a synchronisation
            if self._closed or not self._streams:
                continue
            try:
                await self.claim_once()
            except RETRYABLE_ERRORS as exc:
                log.debug("sink %r: claim pass skipped: %s", self.name, exc)
            except ResponseError as exc:
                if not is_nogroup(exc):  # a lost group is the read loop's to re-create
                    log.warning("sink %r: claim pass failed: %s", self.name, exc)
            except Exception:
                log.exception("sink %r: claim pass failed", self.name)

    async def claim_once(self) -> int:
        """Claim idle events if this instance gets the lease; returns how many.

        A backlog larger than the buffer (a consumer that died holding big
        batches, a long outage) is taken page after page in the same pass: the
        next page as soon as the caller has taken half the buffer (so claiming
        overlaps handling), the lease kept meanwhile so other instances do not
        fight over it. The pass ends when
        nothing idle is left, or when the caller takes nothing for half an ack
        grace (it is busy: the next pass goes on).
        """
        redis = self.conn.redis
        lease_ms = max(1, int(self.ack_grace * 1000))
        if not await redis.set(self._lease_key, self.consumer, nx=True, px=lease_ms):
            return 0
        total = 0
        renewed = time.monotonic()
        try:
            while True:
                page, more = await self._claim_page()
                total += page
                if not more or self._closed:
                    return total
                if not await self._wait_taken(self.ack_grace / 2):
                    return total
                if time.monotonic() - renewed > self.ack_grace / 3:
                    renewed = time.monotonic()
                    held = await self._extend_lease(
                        keys=[self._lease_key], args=[self.consumer, lease_ms]
                    )
                    if not held:
                        return total  # lost it (paused past its TTL): the holder goes on
        finally:
            with contextlib.suppress(*RETRYABLE_ERRORS):
                await self._release_lease(keys=[self._lease_key], args=[self.consumer])

    async def _wait_taken(self, timeout: float) -> bool:
        """Wait until the caller has taken the buffer down to half; False after ``timeout``."""
        if len(self._buffer) * 2 <= self.buffer:
            return True
        self._taken.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._taken.wait(), timeout)
        return len(self._buffer) * 2 <= self.buffer

    async def _claim_page(self) -> tuple[int, bool]:
        """Claim up to the buffer's room over every stream; ``(claimed, more left)``."""
        claimed: list[Event] = []
        unmatched_all: dict[str, list[str]] = {}
        skip = {(e.stream_name, e.id) for e in self._buffer}
        if self._held is not None:
            skip |= self._held()
        more = False
        for stream in list(self._streams.values()):
            more = await self._claim_stream(stream, claimed, unmatched_all, skip) or more
        if unmatched_all:
            await self._xack(unmatched_all)
        if any(e.stream_name not in self._streams for e in claimed):
            # A stream removed during the pass: hand its events back.
            for event in claimed:
                if event.stream_name not in self._streams:
                    key = self.conn.stream_key(event.stream_name)
                    self._hand_back.setdefault(key, []).append(event.id)
            claimed = [e for e in claimed if e.stream_name in self._streams]
        if claimed and not self._closed:
            log.info("sink %r: claimed %d idle events", self.name, len(claimed))
            self.claimed += len(claimed)
            self._buffer.extend(claimed)
            self._interrupt()
        return len(claimed), more

    async def _claim_stream(
        self,
        stream: Stream,
        claimed: list[Event],
        unmatched_all: dict[str, list[str]],
        skip: set[tuple[str, str]],
    ) -> bool:
        """XAUTOCLAIM ``stream`` while there is room; True if idle entries may be left."""
        min_idle = int(self.ack_grace * 1000)
        cursor: Any = "0-0"
        while True:
            room = self.buffer - len(self._buffer) - len(claimed)
            if room <= 0:
                return True
            reply = await self.conn.execute_raw(
                stream.key,
                b"XAUTOCLAIM",
                stream.key,
                self.name,
                self.consumer,
                min_idle,
                cursor,
                "COUNT",
                min(room, self.count),
            )
            cursor, entries = reply[0], reply[1]
            first = len(claimed)
            unmatched = self._to_events(
                ((stream.key.encode(), entries),), claimed, track=False, skip=skip
            )
            if len(claimed) > first:
                await self._count_deliveries(stream.key, claimed[first:])
            for name, ids in (unmatched or {}).items():
                unmatched_all.setdefault(name, []).extend(ids)
            if cursor in (b"0-0", "0-0"):
                await self._remove_stale_consumers(stream.key)
                return False

    async def _count_deliveries(self, key: str, events: list[Event]) -> None:
        """Set the claimed ``events``' delivery counts (XAUTOCLAIM does not return them).

        One XPENDING over their id range, on this consumer (they are ours now).
        An event that keeps coming back may be what kills the consumers that
        take it: the count lets the caller stop handing it to them.
        """
        rows = await self.conn.execute_raw(
            key,
            b"XPENDING",
            key,
            self.name,
            events[0].id,
            events[-1].id,
            len(events) + self.buffer + self.count,
            self.consumer,
        )
        counts = {_text(row[0]): int(row[3]) for row in rows or ()}
        for event in events:
            event.deliveries = counts.get(event.id, event.deliveries)

    async def _remove_stale_consumers(self, key: str) -> None:
        """Drop consumers of the group with nothing pending whose owner is dead.

        Deleting a consumer drops its pending entries: one holding any is left
        for the claim pass to empty first (and the delete script checks again,
        atomically). A live consumer may be idle for long (a handler busy, its
        worker waiting for Redis), so idleness alone is not death: that is
        ``consumer_alive``'s to say.
        """
        redis = self.conn.redis
        for info in await redis.xinfo_consumers(key, self.name):
            name = info.get("name") if "name" in info else info.get(b"name")
            pending = info.get("pending", info.get(b"pending", 1))
            idle = int(info.get("idle", info.get(b"idle", 0)))
            if isinstance(name, bytes):
                name = name.decode()
            if name == self.consumer or int(pending) != 0:
                continue
            if await self._consumer_alive(name, idle):
                continue
            removed = await self._delete_idle_consumer(keys=[key], args=[self.name, name])
            if removed != -1:
                log.info(
                    "sink %r: removed consumer %r (nothing pending, owner gone, idle %.0fs)",
                    self.name,
                    name,
                    idle / 1000,
                )

    async def _idle_not_too_long(self, name: str, idle_ms: int) -> bool:
        """The default ``consumer_alive``: alive unless idle far longer than any pause."""
        return idle_ms <= 1000 * max(STALE_AFTER, STALE_AFTER_GRACES * self.ack_grace)

    # -- closing ---------------------------------------------------------------------

    async def close(self) -> None:
        """Stop at once; un-acked and buffered events stay pending for the other instances."""
        if self._closed:
            return
        await super().close()
        task = self._claim_task
        if task is not None and not task.done():
            task.cancel()
            # Give the cancellation a moment to unwind, never more than a few ms.
            await asyncio.wait((task,), timeout=0.05)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
