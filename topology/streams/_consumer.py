"""What sinks and readers share: the local buffer, the on-demand read loop, decoding.

Reads happen on demand, never in a background prefetch task: ``read_batch``
serves from the local buffer and, only when it is empty, issues one blocking
read over all current streams. A consumer therefore holds only what it asked
for (exact backpressure for the engine).

Blocking reads run on connections the consumer owns (:mod:`._link`), not the
client's pool. ``add_stream``/``remove_stream``/``close`` interrupt the
in-flight read by aborting its connection, which ends it at once whatever it
is doing; cancelling the task is not enough (redis.asyncio can swallow a
cancellation that lands while the command is written, and the read then blocks
for the whole ``block``). An aborted XREADGROUP can lose the race with its
reply (entries handed to us, never seen): sinks look for those right after
(``Sink._after_interrupted_read``) rather than waiting ack_grace.

A read has a deadline, its ``block`` plus the client's socket timeout (see
:mod:`._deadline`): a read unanswered by then is on a connection that stopped
forwarding. It is treated like an interrupted read (its reply, if any, is
looked for) and the next read goes out at once on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from redis.exceptions import AskError, MovedError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from topology.streams._deadline import (
    DeadlineExceeded,
    after_failure,
    drop_idle_connections,
    read_deadline,
)
from topology.streams._event import Event
from topology.streams._link import ReadInterrupted, ReadLink, new_link
from topology.streams._options import ReaderOptions
from topology.streams._retry import (
    RETRYABLE_ERRORS,
    Backoff,
    describe_error,
    is_routine_redirect,
    is_transient,
    pause,
)
from topology.streams._wire import entries_of

if TYPE_CHECKING:
    from topology.streams._connection import Connection
    from topology.streams._stream import Stream

__all__ = [
    "Consumer",
    "event_filter",
    "is_nogroup",
]

log = logging.getLogger("topology.streams")

BACKOFF_FIRST = 0.05
BACKOFF_CAP = 2.0

#: How long an interrupted read gets to end by itself before it is also cancelled,
#: and how long a barrier (remove_stream, close) waits at most for it to end.
ABORT_GRACE = 0.01
SETTLE_CAP = 2.0

_NO_LINK: Any = object()


def socket_timeout_of(redis: Any) -> float | None:
    """The read timeout of the client's connections (redis-py 8 defaults to 5 s)."""
    pool = getattr(redis, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or getattr(redis, "connection_kwargs", None)
    if isinstance(kwargs, dict) and "socket_timeout" in kwargs:
        return kwargs["socket_timeout"]
    connection_class = getattr(pool, "connection_class", None)
    if connection_class is None:
        return None
    for klass in getattr(connection_class, "__mro__", ()):  # the default lives in a base
        try:
            param = inspect.signature(klass.__init__).parameters.get("socket_timeout")
        except (TypeError, ValueError):
            continue
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    return None


def block_ms(block: float, socket_timeout: float | None) -> int:
    """The BLOCK of a read, in ms: ``block``, kept under the client's socket timeout.

    A blocking read longer than the socket timeout ends in a client-side timeout
    that drops the connection (and, with it, a reply that may be on its way).
    ``block`` is only how often an idle read is re-issued, so shortening it is
    harmless.
    """
    if socket_timeout:
        block = min(block, socket_timeout * 0.8)
    return max(1, int(block * 1000))


def is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


def event_filter(
    topic: str | None,
    topic_pattern: str | None,
    matcher: Callable[[Event], bool] | None,
) -> Callable[[Event], bool] | None:
    """The predicate an event must satisfy, or None to accept everything.

    Checked at creation so an invalid regex is a clear error there, not a
    failure on the first event.
    """
    given = [x for x in (topic, topic_pattern, matcher) if x is not None]
    if len(given) > 1:
        raise ValueError("give at most one of topic, topic_pattern and matcher")
    if topic is not None:
        wanted = topic
        return lambda event: event.topic == wanted
    if topic_pattern is not None:
        try:
            compiled = re.compile(topic_pattern)
        except re.error as exc:
            raise ValueError(f"invalid topic_pattern {topic_pattern!r}: {exc}") from None
        fullmatch = compiled.fullmatch
        return lambda event: fullmatch(event.topic or "") is not None
    if matcher is not None:
        if not callable(matcher):
            raise ValueError(f"matcher must be callable, got {type(matcher).__name__}")
        user_matcher = matcher

        def guarded(event: Event) -> bool:
            # A matcher that raises must not drop the event silently nor kill the
            # sink: log it and deliver (the handler gets to decide).
            try:
                return bool(user_matcher(event))
            except Exception:
                log.exception("matcher %r raised on %r; delivering the event", user_matcher, event)
                return True

        return guarded
    return None


class Consumer:
    """Base of :class:`Sink` and :class:`Reader`: buffer, read loop, stream set."""

    def __init__(
        self,
        conn: Connection,
        options: ReaderOptions,
        accept: Callable[[Event], bool] | None,
    ) -> None:
        self.conn = conn
        self.options = options
        self.start = options.start
        self.block = options.block
        self.count = options.count
        self.buffer = options.buffer
        self._accept = accept
        self._streams: dict[str, Stream] = {}
        self._names_by_key: dict[bytes, str] = {}
        self._buffer: deque[Event] = deque()
        #: Set when the caller takes the buffer down to half (a claim pass waits for room).
        self._taken = asyncio.Event()
        # The in-flight read, until it has ended (even when its caller gave up on it).
        self._read_task: asyncio.Future[Any] | None = None
        self._read_aborted = False  # the current read was interrupted
        self._links: dict[Any, ReadLink | None] = {}
        self._wake = asyncio.Event()
        # Two tasks reading the same consumer share one read: the second waits for
        # the first's fill, then takes from the buffer.
        self._fill_lock = asyncio.Lock()
        self._unseen_keys: list[str] = []  # keys of a read cancelled by our caller
        self._closed = False
        self._backoff = Backoff(BACKOFF_FIRST, BACKOFF_CAP, jitter=True)
        socket_timeout = socket_timeout_of(conn.redis)
        self._block_ms = block_ms(options.block, socket_timeout)
        #: How long a blocking read may go unanswered before its link is cut.
        self.read_deadline = read_deadline(self._block_ms / 1000, socket_timeout)

    # -- stream set ------------------------------------------------------------------

    @property
    def streams(self) -> tuple[str, ...]:
        """Names of the streams currently read."""
        return tuple(self._streams)

    @property
    def closed(self) -> bool:
        return self._closed

    def _set_stream(self, stream: Stream) -> None:
        self._streams[stream.name] = stream
        self._names_by_key[stream.key.encode()] = stream.name
        self._interrupt()

    def _unset_stream(self, stream: Stream) -> bool:
        if self._streams.pop(stream.name, None) is None:
            return False
        self._names_by_key.pop(stream.key.encode(), None)
        self._interrupt()
        return True

    def _interrupt(self) -> None:
        """Make the current (or next) wait return now: the stream set or buffer changed."""
        self._wake.set()
        self._abort_read()

    def _abort_read(self) -> None:
        """End the in-flight read now, by cutting its connection(s).

        Cutting rather than cancelling lets a reply already received be parsed
        (fewer dropped replies), and works where a cancellation would be
        swallowed. A read that has not started yet sees ``_read_aborted`` and
        does not send. Without a link of our own (unknown client) the task is
        cancelled instead.
        """
        task = self._read_task
        if task is None or task.done():
            return
        self._read_aborted = True
        links = [link for link in self._links.values() if link is not None]
        for link in links:
            link.abort()
        if not links:
            task.cancel()

    async def _settle_read(self) -> None:
        """Interrupt the in-flight read and wait until it has ended (a barrier).

        Bounded: the abort ends it within a loop step or two; if not (a read
        between two phases), it is cancelled and cut again every 10 ms.
        """
        task = self._read_task
        if task is None or task.done():
            return
        self._abort_read()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_CAP
        while not task.done():
            await asyncio.wait((task,), timeout=ABORT_GRACE)
            if task.done():
                break
            task.cancel()
            for link in self._links.values():
                if link is not None:
                    link.abort()
            if loop.time() > deadline:
                log.warning("%s: an interrupted read did not end in %.0f s", self, SETTLE_CAP)
                return

    def _read_ended(self, task: asyncio.Future[Any]) -> None:
        if self._read_task is task:
            self._read_task = None
        if not task.cancelled():
            # Retrieved here too: a read whose caller was cancelled ends unobserved
            # (its error is only the abort), which asyncio would report at GC.
            task.exception()

    # -- reading ---------------------------------------------------------------------

    async def read_batch(self, max_events: int | None = None) -> list[Event]:
        """The next events (at least one), waiting as needed; ``[]`` once closed."""
        if max_events is not None and max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        buf = self._buffer
        while not self._closed:
            if buf:
                if max_events is None or max_events >= len(buf):
                    batch = list(buf)
                    buf.clear()
                    self._taken.set()
                    return batch
                batch = [buf.popleft() for _ in range(max_events)]
                if len(buf) * 2 <= self.buffer:
                    self._taken.set()
                return batch
            await self._fill()
        return []

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Event:
        buf = self._buffer
        while not self._closed:
            if buf:
                event = buf.popleft()
                if len(buf) * 2 <= self.buffer:
                    self._taken.set()
                return event
            await self._fill()
        raise StopAsyncIteration

    async def _fill(self) -> None:
        """One read (or one wait) that may add events to the buffer."""
        async with self._fill_lock:
            if not self._buffer and not self._closed:
                await self._fill_locked()

    async def _fill_locked(self) -> None:
        # A read whose caller was cancelled may still be ending: one read at a time.
        await self._settle_read()
        self._wake.clear()
        if not self._streams:
            await self._wake.wait()
            return
        if self._unseen_keys:
            # A read of ours was cancelled from outside (the caller was cancelled)
            # since the last fill: look for what its reply may have carried first.
            keys, self._unseen_keys = self._unseen_keys, []
            await self._check_interrupted(keys)
            if self._buffer:
                return
        await self._before_read()
        if self._closed or self._wake.is_set():
            return  # closed or changed meanwhile: the caller loops with the new state
        read_keys = [s.key for s in self._streams.values()]
        self._read_aborted = False
        task = asyncio.ensure_future(self._read())
        self._read_task = task
        task.add_done_callback(self._read_ended)
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            self._abort_read()
            self._unseen_keys = read_keys
            raise
        if not self._closed:
            await self._read_done(task, read_keys)

    async def _read_done(self, task: asyncio.Future[Any], read_keys: list[str]) -> None:
        """Take in what the read brought, or act on how it failed."""
        if task.cancelled() or (self._read_aborted and task.exception() is not None):
            # Interrupted: the caller loops with the new state. The aborted
            # command's reply may have been on its way (entries delivered by the
            # server, never seen here): let the subclass find them.
            await self._check_interrupted(read_keys)
            return
        exc = task.exception()
        if isinstance(exc, DeadlineExceeded):
            # The link's connection stopped answering and is dropped: read again
            # now, on a new one, after looking for what the lost reply carried.
            await drop_idle_connections(self.conn.redis)
            await self._check_interrupted(read_keys)
            return
        try:
            if exc is None:
                if self._backoff.failures:
                    log.info(
                        "%s: reading again after %d failed attempts", self, self._backoff.failures
                    )
                    self._backoff.reset()
                await self._ingest(task.result())  # may XACK unmatched events
            elif is_nogroup(exc):
                await self._recover_lost_group(exc)
            elif is_transient(exc) or is_routine_redirect(exc):
                await self._retry_later(exc)
            else:
                raise exc
        except RETRYABLE_ERRORS as err:
            await self._retry_later(err)

    async def _check_interrupted(self, keys: list[str]) -> None:
        try:
            await self._after_interrupted_read(keys)
        except RETRYABLE_ERRORS as err:
            # Looked for again before the next read.
            self._unseen_keys.extend(k for k in keys if k not in self._unseen_keys)
            await self._retry_later(err)
        except ResponseError as err:
            if not is_nogroup(err):
                raise

    async def _retry_later(self, exc: BaseException) -> None:
        """Jittered exponential backoff (50 ms -> 2 s), cut short by a change or close."""
        await after_failure(self.conn.redis, exc)
        delay = self._backoff.next()
        failures = self._backoff.failures
        if is_routine_redirect(exc):  # a cluster moving slots: the next read follows
            log.debug("%s: read redirected (%s); reading again", self, exc)
        elif failures == 1 or failures % 20 == 0:
            log.warning(
                "%s: read failed (%s); retrying (attempt %d)",
                self,
                describe_error(exc),
                failures,
            )
        self._wake.clear()
        await pause(delay, self._wake)

    def _read_args(self, keys: list[str]) -> list[Any]:
        """The blocking read command over ``keys`` (all in one hash slot)."""
        raise NotImplementedError

    def _link_id(self, key: str) -> tuple[Any, Any]:
        """``(link id, cluster node)`` of the read of ``key``: one link per node and slot."""
        if not self.conn.cluster:
            return None, None
        redis = self.conn.redis
        node = redis.get_node_from_key(key)
        return (node.name, redis.keyslot(key)), node

    def _link(self, key: str) -> ReadLink | None:
        ident, node = self._link_id(key)
        link = self._links.get(ident, _NO_LINK)
        if link is _NO_LINK:
            link = self._links[ident] = new_link(self.conn.redis, node, self.read_deadline)
        return link

    async def _send_read(self, key: str, args: list[Any]) -> Any:
        """The read command on our own link for ``key``'s node, else through the client."""
        link = self._link(key)
        if link is None:
            return await self.conn.execute_raw(key, *args)
        return await link.call(*args)

    async def _read_keys(self, keys: list[str]) -> Any:
        """One blocking read over ``keys`` (one slot) on our own link; the raw reply."""
        if self._read_aborted:
            raise ReadInterrupted("read interrupted")
        args = self._read_args(keys)
        try:
            return await self._send_read(keys[0], args)
        except MovedError:  # the slot moved for good
            await self.conn.redis.nodes_manager.initialize()
            if self._read_aborted:
                raise ReadInterrupted("read interrupted") from None
            return await self._send_read(keys[0], args)
        except AskError as exc:  # a slot migrating: this key has left already
            if self._read_aborted:
                raise ReadInterrupted("read interrupted") from None
            return await self.conn.asking(exc, *args)
        except (RedisConnectionError, OSError):
            if self.conn.cluster and not self._read_aborted:
                # A node went away (failover?): refresh the map for the next attempt.
                with contextlib.suppress(Exception):
                    await self.conn.redis.nodes_manager.initialize()
            raise

    async def _drop_links(self, keep: set[Any]) -> None:
        """Close links no current read uses (a slot moved, a stream was removed)."""
        for ident in [i for i in self._links if i not in keep]:
            link = self._links.pop(ident)
            if link is not None:
                await link.close()

    def _stop_sub_read(self, task: asyncio.Future[Any], group: list[str]) -> None:
        task.cancel()  # one not started yet never starts
        link = self._links.get(self._link_id(group[0])[0])
        if link is not None:
            link.abort()

    async def _read(self) -> Any:
        """One blocking read over every stream: ``(key, entries)`` pairs.

        One command on a single node. On a cluster, streams in different hash
        slots cannot share a command: one read per slot runs at once, the first
        answer wins, the others get a moment to answer too and are then
        cut off (and checked for a dropped reply at the next fill).
        """
        keys = [s.key for s in self._streams.values()]
        groups = self.conn.slot_groups(keys)
        if self.conn.cluster:
            await self._drop_links({self._link_id(group[0])[0] for group in groups})
        if len(groups) == 1:
            return entries_of(await self._read_keys(keys))
        tasks = {asyncio.ensure_future(self._read_keys(group)): group for group in groups}
        for task in tasks:
            task.add_done_callback(_retrieve)
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if pending:
                more, pending = await asyncio.wait(pending, timeout=0.002)
                done |= more
        except asyncio.CancelledError:
            for task, group in tasks.items():
                self._stop_sub_read(task, group)
            raise
        for task in pending:
            self._stop_sub_read(task, tasks[task])
            self._unseen_keys.extend(tasks[task])
        if pending:
            await asyncio.wait(pending)
        items: list[Any] = []
        error: BaseException | None = None
        for task in done:
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                error = error or exc
                self._unseen_keys.extend(tasks[task])
            else:
                items.extend(entries_of(task.result()))
        if error is not None and not items:
            raise error
        return items

    async def _ingest(self, reply: Any) -> None:
        raise NotImplementedError

    async def _after_interrupted_read(self, keys: list[str]) -> None:
        """Readers lose nothing to an interrupted XREAD: their cursors did not move."""

    async def _before_read(self) -> None:
        """Work owed to the server before the next read (sinks hand entries back)."""

    async def _recover_lost_group(self, exc: BaseException) -> None:
        raise exc

    # -- closing ---------------------------------------------------------------------

    async def close(self) -> None:
        """Stop reading; returns at once whatever ``block`` is. Idempotent.

        A barrier like ``remove_stream``: the in-flight read is cut off and has
        ended when this returns (no read_batch returns an event after it), and
        the consumer's own connections are closed.
        """
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._interrupt()
        await self._settle_read()
        await self._drop_links(set())

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a task's error seen: sub-reads cut off on purpose end unobserved."""
    if not task.cancelled():
        task.exception()
