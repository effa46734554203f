"""An actor: one consumer of one sink, reading, handling and committing batches.

The loop is ``read_batch(room)`` → handler on the whole chunk → one commit
script (outputs + acks + dead letters). Reads are half a batch (a chunk) and a
chunk is handled while the previous one commits, so the server's work (read,
commit script) overlaps the handler's instead of following it; the handler
still sees one chunk at a time, in read order, and commits land in read order.
The actor never holds more than ``batch`` un-acked events — counting what the
server delivered to its consumer, since the sink reads at most a chunk: events
waiting for a retry count against that room, so a sink whose handler keeps
failing slows its own reads and no one else's.

Failures never hold up the rest of a batch: the successes are committed first;
each failure gets its attempt counter incremented in Redis (``HINCRBY``, so the
count survives a restart and a redelivered event continues from it) and waits
in a local retry queue for its backoff while the actor keeps reading new
events. The read runs as a task beside that queue so a due retry does not
wait for a blocking read to return.

A sync handler on a plain (non-cluster) client takes the direct path: the
loop reads and hands each chunk to the actor's handler thread, which handles
it *and* commits it (:meth:`Committer.commit_blocking`, same script) before
taking the next chunk. The loop hears back only when it must: when it waits
for room, when a retry was queued, or while draining. Chunks still commit in
read order (one thread, FIFO), and what is in hand is still counted (what was
handed over minus what came back), so the ``batch`` bound holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from topology.config.model import SinkSpec, StreamSpec
from topology.runtime.commit import Add, Committer, Entry
from topology.runtime.handlers import Failure, HandlerRunner
from topology.runtime.metrics import Metrics
from topology.streams import RETRYABLE_ERRORS, Connection, Event, Sink, decode_entry, event_filter

__all__ = ["Actor"]

log = logging.getLogger("topology.runtime")

#: Blocking read period of an idle actor (close/add_stream interrupt it at once).
READ_BLOCK = 5.0
#: Backoff after a Redis error in the commit path, doubling up to the cap.
ERROR_BACKOFF_FIRST = 0.1
ERROR_BACKOFF_CAP = 5.0
#: Batches at least this large are read in two overlapping halves (see ``_spawn``).
PIPELINE_MIN_BATCH = 32


#: Reset the idle time of events this consumer still owns (KEYS: stream keys; ARGV:
#: group, consumer, then per key: count, ids...). Owned-only, so an event another
#: consumer already claimed is not pulled back.
TOUCH_SCRIPT = r"""
local group, consumer = ARGV[1], ARGV[2]
local a = 3
for k = 1, #KEYS do
  local n = tonumber(ARGV[a]); a = a + 1
  for i = 0, n - 1 do
    local id = ARGV[a + i]
    if #redis.call('XPENDING', KEYS[k], group, id, id, 1, consumer) > 0 then
      redis.call('XCLAIM', KEYS[k], group, consumer, 0, id, 'JUSTID')
    end
  end
  a = a + n
end
return 0
"""


def _parsed_entries(reply: Any) -> list[tuple[Any, list[Any] | None]]:
    """``(id, flat fields)`` of a parsed XREADGROUP reply, RESP2 (list) or RESP3 (dict).

    The parsed form (not raw bytes commands) because redis-py's cluster client
    routes only commands it can parse.
    """
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (item[1] for item in reply)
    out: list[tuple[Any, list[Any] | None]] = []
    for entries in streams:
        if (
            entries
            and isinstance(entries[0], list)
            and entries
            and not isinstance(entries[0][0], (bytes, str))
        ):
            entries = entries[0]  # RESP3 wraps the entry list once more
        for entry_id, fields in entries:
            if fields is None:
                out.append((entry_id, None))
            else:
                out.append((entry_id, [x for kv in fields.items() for x in kv]))
    return out


def _split_outcomes(
    events: Sequence[Event], outcomes: Sequence[Any]
) -> tuple[list[Entry], list[tuple[Event, Failure]]]:
    """The entries to commit (handler successes, in order) and the failures."""
    entries: list[Entry] = []
    failed: list[tuple[Event, Failure]] = []
    add = entries.append
    for event, outcome in zip(events, outcomes, strict=True):
        if type(outcome) is list:  # the common case first: outputs to commit
            add(Entry(event, outcome))
        elif isinstance(outcome, Failure):
            failed.append((event, outcome))
        else:
            add(Entry(event, outcome))
    return entries, failed


class _Sent(NamedTuple):
    """A chunk whose commit the handler thread sent and has not read the reply of."""

    entries: list[Entry]
    handled: int  # the first ``handled`` entries are handler successes
    count: int  # events of the chunk
    retries: list[tuple[float, Event, int]]
    done: asyncio.Future[None] | None


def _wake(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    """Set ``future`` from another thread (quietly if the loop closed meanwhile)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_set_none, future)


def _set_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
    ) -> None:
        self.spec = spec
        self.index = index
        self.conn = conn
        self.handler = handler
        self.attempts_key = attempts_key
        self._streams = streams
        self.metrics = metrics
        self.matcher = matcher
        self.sink: Sink | None = None
        self.committer: Committer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._draining = False
        self._retry: list[tuple[float, int, Event, int]] = []  # (due, seq, event, attempts)
        #: Set when a retry is queued, to wake the loop while a read is in flight.
        self._kick: asyncio.Future[None] | None = None
        self._seq = itertools.count()
        self._busy = 0  # events being handled or committed right now (loop path)
        #: The direct path (see the module doc): events handed to the handler thread,
        #: events it finished with (loop-read, thread-written), events it handed back
        #: for a retry. In hand there: handed - finished - requeued.
        self._direct = False
        self._handed = 0
        self._finished = 0
        self._requeued = 0
        self._progress_lock = threading.Lock()
        self._progress: asyncio.Future[None] | None = None  # set when a direct job ends
        self._jobs_done = 0  # direct jobs the thread has finished (written under the lock)
        self._halted = False  # stop_now: the thread skips what it has not committed yet
        self._sent: _Sent | None = None  # the handler thread's commit in flight
        self._loop: asyncio.AbstractEventLoop | None = None  # the actor's loop (start())
        #: Events per read: half a batch, so one chunk is handled while the
        #: previous one commits, and never more than ``batch`` in hand. A small
        #: batch is not split: its per-read cost outweighs what overlapping saves.
        self._chunk = (spec.batch + 1) // 2 if spec.batch >= PIPELINE_MIN_BATCH else spec.batch
        self._handle_lock = asyncio.Lock()
        self._commit_tail: asyncio.Future[None] | None = None
        self._next_touch = 0.0
        self._ever_read: set[str] = set(spec.stream_names)  # for the drain's pending flush
        self.last_activity = time.monotonic()
        self.handled = 0

    def __repr__(self) -> str:
        return f"<Actor {self.spec.name}#{self.index}>"

    @property
    def name(self) -> str:
        return f"{self.spec.name}#{self.index}"

    @property
    def in_hand(self) -> int:
        """Un-acked events this actor holds (being handled, committed or awaiting a retry)."""
        return self._busy + self._in_flight() + len(self._retry)

    def _in_flight(self) -> int:
        """Events handed to the handler thread (direct path) and not back yet."""
        return self._handed - self._finished - self._requeued

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def retrying(self) -> set[tuple[str, str]]:
        """``(stream, id)`` of the events waiting for a retry backoff: pending on purpose."""
        return {(event.stream_name, event.id) for _, _, event, _ in self._retry}

    def _stream(self, name: str) -> Any:
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
        )
        try:
            for ref in rest:
                await sink.add_stream(self._stream(ref.name), start=spec.start_of(ref.name))
        except BaseException:
            await sink.close()
            raise
        self.sink = sink
        self.committer = Committer(
            self.conn.redis,
            group=spec.name,
            consumer=sink.consumer,
            attempts_key=self.attempts_key,
            stream_key=self.conn.stream_key,
            streams=self._streams,
        )
        self._touch = self.conn.redis.register_script(TOUCH_SCRIPT)
        self._direct = self.handler.can_post and self.committer.can_block
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name=f"actor {self.name}")
        self._task.add_done_callback(self._on_exit)
        log.info("actor %s started (consumer %s)", self.name, sink.consumer)

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
        assert self.sink is not None
        sink = self.sink
        batch = self.spec.batch
        chunk = self._chunk
        read: asyncio.Task[list[Event]] | None = None
        working: set[asyncio.Task[None]] = set()
        read_backoff = ERROR_BACKOFF_FIRST
        backlog = True  # until a read comes back short
        try:
            while True:
                if read is None and not self._stopping and not sink.closed:
                    room = batch - self.in_hand
                    # Read ahead (overlap) only with a backlog: a short read means the
                    # stream is caught up, and reading again at once would fetch the
                    # next event alone; waiting for the chunk in hand lets what arrives
                    # meanwhile come in one read. Fewer reads for the same events.
                    if room > 0 and (backlog or not (self._busy or self._in_flight())):
                        read = asyncio.ensure_future(sink.read_batch(min(room, chunk)))
                timeout = None
                if self._retry:
                    now = time.monotonic()
                    if now >= self._next_touch:
                        await self._touch_held()
                        self._next_touch = now + self.spec.ack_grace / 3
                    wake = min(self._retry[0][0], self._next_touch)
                    timeout = max(0.0, wake - now)
                # With a read in flight a finished chunk changes nothing here (room
                # only matters for the next read): waking for it would cost a loop
                # pass per read. Only a retry it queued does, hence the kick.
                jobs_seen = self._jobs_done
                in_flight = self._in_flight()
                if read is None or self._stopping:
                    waits: set[asyncio.Future[Any]] = set(working)
                    if in_flight:
                        waits.add(self._next_progress(jobs_seen))
                else:
                    waits = set()
                    if working or in_flight:
                        if self._kick is None or self._kick.done():
                            self._kick = asyncio.get_running_loop().create_future()
                        waits.add(self._kick)
                if read is not None:
                    waits.add(read)
                if waits:
                    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                elif self._retry and not self._stopping:
                    await asyncio.sleep(timeout or 0.0)  # a backoff, not a synchronisation
                else:
                    break
                working = {t for t in working if not t.done()}
                events: list[Event] = []
                if read is not None and read.done():
                    try:
                        events = read.result()
                        read_backoff = ERROR_BACKOFF_FIRST
                        backlog = len(events) >= chunk
                    except Exception as exc:  # read errors the sink did not retry itself
                        log.error(
                            "actor %s: read failed (retrying in %.1fs): %r",
                            self.name,
                            read_backoff,
                            exc,
                        )
                        await asyncio.sleep(read_backoff)  # a backoff, not a synchronisation
                        read_backoff = min(read_backoff * 2, ERROR_BACKOFF_CAP)
                    read = None
                    if not events and (self._stopping or sink.closed):
                        self._stopping = True
                retries = self._due_retries()
                for todo in (events, retries):
                    if todo:
                        self.last_activity = time.monotonic()
                        task = self._spawn(todo)
                        if task is not None:
                            working.add(task)
                if (
                    self._stopping
                    and read is None
                    and not events
                    and not working
                    and not self._in_flight()
                ):
                    break
            if self._draining:
                await self._flush_own_pending()
        finally:
            if read is not None and not read.done():
                read.cancel()
            for task in working:  # stop_now: whatever is in hand stays pending
                task.cancel()
            if self.committer is not None:
                await self.committer.close()
                if self._direct:  # after the thread's last job: it owns that connection
                    self.handler.post(self._close_blocking)

    def _spawn(
        self, events: list[Event], done: asyncio.Future[None] | None = None
    ) -> asyncio.Task[None] | None:
        """Handle and commit ``events`` beside the loop (counted in hand from now on).

        Running a chunk as a task lets the next chunk be read and handled while
        this one's commit runs on the server; the handler lock keeps one chunk
        in the handler at a time and the commit chain keeps commits in read order.
        On the direct path the chunk goes to the handler thread instead (no task:
        None); ``done``, if given, is set when the thread is finished with it.
        """
        if self._direct:
            self._handed += len(events)
            loop = asyncio.get_running_loop()
            self.handler.post(self._process_blocking, events, loop, done)
            return None
        self._busy += len(events)
        return asyncio.create_task(self._process_safely(events, counted=True))

    def _next_progress(self, jobs_seen: int) -> asyncio.Future[None]:
        """A future the handler thread sets when it next finishes a chunk (direct path).

        Already set if a job finished since the loop read ``jobs_seen``: that job
        found no future to set, and the loop would wait for it forever (its retries,
        queued on the loop, do not wake a loop waiting for progress).
        """
        loop = asyncio.get_running_loop()
        with self._progress_lock:
            if self._jobs_done != jobs_seen:
                finished = loop.create_future()
                finished.set_result(None)
                return finished
            if self._progress is None or self._progress.done():
                self._progress = loop.create_future()
            return self._progress

    # -- the direct path: runs on the handler thread ------------------------------------

    def _process_blocking(
        self,
        events: list[Event],
        loop: asyncio.AbstractEventLoop,
        done: asyncio.Future[None] | None,
    ) -> None:
        """Handle ``events`` and commit them from the handler thread (the direct path).

        The same steps as :meth:`_process`; an unexpected error leaves the events
        pending for redelivery, like there. Retries go back to the loop's queue.
        The commit is sent, and its reply read only once the next chunk (if one
        is already waiting) has been handled: the server runs one chunk's script
        while this thread runs the next chunk's handler, as the loop path overlaps
        them. One commit in flight at most, on one connection: they land in order.
        """
        retries: list[tuple[float, Event, int]] = []
        try:
            if self._halted:  # stop_now: left pending; a commit already sent still lands
                self._settle_sent(loop)
            else:
                assert self.committer is not None
                outcomes = self.handler.run_blocking(events, loop)
                entries, failed = _split_outcomes(events, outcomes)
                handled = len(entries)
                self._settle_sent(loop)  # the previous chunk's reply, before anything else
                if failed:
                    self.metrics.add_failed(self.spec.name, len(failed))
                    counts = self._blocking_retries(
                        self.committer.count_attempts_blocking, [e for e, _ in failed]
                    )
                    dead, retries = self._plan_failures(failed, counts)
                    entries += dead
                if entries and not self._halted:
                    with contextlib.suppress(*RETRYABLE_ERRORS):  # settling retries it
                        self.committer.send_commit_blocking(entries)
                    self._sent = _Sent(entries, handled, len(events), retries, done)
                    if not self.handler.has_queued():
                        self._settle_sent(loop)
                    return  # _settle_sent finishes the chunk
        except Exception:
            log.exception(
                "actor %s: batch of %d events failed; they stay pending for redelivery",
                self.name,
                len(events),
            )
            time.sleep(ERROR_BACKOFF_FIRST)  # a backoff on this actor's own thread
        self._finish_blocking(loop, len(events), retries, done)

    def _settle_sent(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the reply of the commit in flight (if any) and finish its chunk."""
        sent, self._sent = self._sent, None
        if sent is None:
            return
        assert self.committer is not None
        try:
            try:
                conflicts = self.committer.finish_commit_blocking()
            except RETRYABLE_ERRORS:  # fenced: running the whole commit again is safe
                conflicts = self._blocking_retries(self.committer.commit_blocking, sent.entries)
            self._committed(sent.entries, conflicts, sent.handled)
        except Exception:
            log.exception(
                "actor %s: commit of %d events failed; they stay pending for redelivery",
                self.name,
                len(sent.entries),
            )
            time.sleep(ERROR_BACKOFF_FIRST)  # a backoff on this actor's own thread
        finally:
            self._finish_blocking(loop, sent.count, sent.retries, sent.done)

    def _close_blocking(self) -> None:
        """The thread's last job for this actor: the commit in flight, then the connection."""
        assert self.committer is not None and self._loop is not None
        self._settle_sent(self._loop)  # never raises: a failed commit is logged, left pending
        self.committer.close_blocking()

    def _finish_blocking(
        self,
        loop: asyncio.AbstractEventLoop,
        count: int,
        retries: list[tuple[float, Event, int]],
        done: asyncio.Future[None] | None,
    ) -> None:
        """Tell the loop a chunk is done with: its retries queued, its room free."""
        if retries:
            with contextlib.suppress(RuntimeError):  # the loop closed: they stay pending
                loop.call_soon_threadsafe(self._requeue, retries)
        with self._progress_lock:
            self._finished += count - len(retries)
            self._jobs_done += 1
            waiter, self._progress = self._progress, None
        if waiter is not None:
            _wake(loop, waiter)
        if done is not None:
            _wake(loop, done)

    def _blocking_retries(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """:meth:`_with_retries` for the handler thread (the same policy, blocking sleeps)."""
        delay = ERROR_BACKOFF_FIRST
        tries = 0
        while True:
            try:
                return fn(arg)
            except RETRYABLE_ERRORS as exc:
                tries += 1
                if (self._stopping and tries >= 3) or self._halted:
                    raise
                log.warning("actor %s: Redis error (%r); retrying in %.1fs", self.name, exc, delay)
            time.sleep(delay)  # a backoff on this actor's own thread
            delay = min(delay * 2, ERROR_BACKOFF_CAP)

    def _requeue(self, retries: list[tuple[float, Event, int]]) -> None:
        """On the loop: queue what the handler thread handed back for a retry."""
        self._requeued += len(retries)
        self._queue_retries(retries)

    def _queue_retries(self, retries: list[tuple[float, Event, int]]) -> None:
        for due, event, attempts in retries:
            heapq.heappush(self._retry, (due, next(self._seq), event, attempts))
        if not retries:
            return
        # The loop re-plans its wake-up, whether it waits with a read in flight (the
        # kick) or for the handler thread (whose job queued these: the loop may have
        # counted them in flight and be waiting for a progress nothing else sets).
        for waiter in (self._kick, self._progress):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _flush_own_pending(self) -> None:
        """On drain, handle what the server delivered to this consumer but never reached us.

        ``close()`` cancels an in-flight read and drops the sink's buffer: the
        server already counts those entries as delivered, pending on this
        consumer. Left alone they would wait a whole ack grace for a claim (or,
        for a removed sink, until it is added again). Reading this consumer's
        own pending history (``XREADGROUP ... 0``) hands them back; they are
        handled and committed like any batch. Events waiting for a retry are
        left alone (their backoff stands).
        """
        assert self.sink is not None
        held = self.retrying()
        accept = event_filter(self.spec.topic, self.spec.topic_pattern, self.matcher)
        names = dict.fromkeys((*self.sink.streams, *sorted(self._ever_read)))
        redis = self.conn.redis
        for name in names:
            key = self.conn.stream_key(name)
            after = "0"
            for _ in range(1000):  # bounded: each pass commits what it read
                try:
                    reply = await redis.xreadgroup(
                        self.spec.name, self.sink.consumer, {key: after}, count=self.spec.batch
                    )
                except Exception as exc:  # NOGROUP, Redis away: the claim pass recovers them
                    log.debug("actor %s: pending flush of %s skipped: %r", self.name, name, exc)
                    break
                events: list[Event] = []
                skipped: list[Entry] = []
                last = None
                for raw_id, flat in _parsed_entries(reply):
                    last = raw_id
                    entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                    if flat is None or (name, entry_id) in held:
                        continue  # deleted while pending, or waiting for a retry
                    ev_name, payload, topic, extra = decode_entry(flat, name, entry_id)
                    event = Event(
                        entry_id,
                        ev_name,
                        payload,
                        stream_name=name,
                        topic=topic,
                        sink_name=self.spec.name,
                        fields=extra,
                    )
                    if accept is None or accept(event):
                        events.append(event)
                    else:
                        skipped.append(Entry(event))  # unmatched: acked at once
                if last is None:
                    break
                after = last.decode() if isinstance(last, bytes) else last
                if events:
                    log.info(
                        "actor %s: handling %d delivered-but-unread events before stopping",
                        self.name,
                        len(events),
                    )
                    if self._direct:
                        done = asyncio.get_running_loop().create_future()
                        self._spawn(events, done)
                        await done
                    else:
                        await self._process_safely(events)
                if skipped:
                    await self._commit(skipped)

    async def _touch_held(self) -> None:
        """Keep events waiting for a retry from looking abandoned.

        A backoff may outlast the ack grace; without this the sink's claim pass
        would hand such an event to another consumer (or back to this one as a
        duplicate) while it waits here. Resetting its idle time (``XCLAIM ...
        JUSTID`` to ourselves, only if we still own it) keeps it ours.
        """
        by_key: dict[str, list[str]] = {}
        for _, _, event, _ in self._retry:
            by_key.setdefault(self.conn.stream_key(event.stream_name), []).append(event.id)
        keys = list(by_key)
        args: list[Any] = [self.spec.name, self.committer.consumer if self.committer else ""]
        for key in keys:
            args.append(len(by_key[key]))
            args.extend(by_key[key])
        try:
            await self._touch(keys=keys, args=args)
        except Exception as exc:  # worst case the claim pass moves them: still fenced
            log.debug("actor %s: touching held events failed: %r", self.name, exc)

    def _due_retries(self) -> list[Event]:
        now = time.monotonic()
        due: list[Event] = []
        while self._retry and self._retry[0][0] <= now:
            due.append(heapq.heappop(self._retry)[2])
        return due

    async def _process_safely(self, events: Sequence[Event], *, counted: bool = False) -> None:
        """``_process``, surviving an unexpected error: the events stay pending.

        They are redelivered after the ack grace (the sink's claim pass), so an
        error here delays them; it never loses them, and never kills the actor.
        ``counted``: the caller already added them to the in-hand count.
        """
        if not counted:
            self._busy += len(events)
        try:
            await self._process(events)
        except Exception:
            log.exception(
                "actor %s: batch of %d events failed; they stay pending for redelivery",
                self.name,
                len(events),
            )
            await asyncio.sleep(ERROR_BACKOFF_FIRST)  # a backoff, not a synchronisation
        finally:
            self._busy -= len(events)

    async def _process(self, events: Sequence[Event]) -> None:
        """Handle ``events``, commit successes and dead letters, queue retries.

        Chunks run concurrently (see ``_spawn``): the handler sees one chunk at a
        time, in read order (a FIFO lock), and each commit waits for the previous
        chunk's, so outputs land in the order their inputs were read.
        """
        previous = self._commit_tail
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commit_tail = mine
        try:
            async with self._handle_lock:
                outcomes = await self.handler.run(events)
            entries, failed = _split_outcomes(events, outcomes)
            handled = len(entries)
            if failed:
                entries += await self._failures(failed)
            if previous is not None and not previous.done():
                await asyncio.wait((previous,))  # not cancelled if we are
            if entries:
                conflicts = await self._with_retries(self.committer.commit, entries)
                self._committed(entries, conflicts, handled)
        finally:
            if not mine.done():
                mine.set_result(None)

    async def _failures(self, failed: list[tuple[Event, Failure]]) -> list[Entry]:
        """Count the attempts in Redis; dead-letter the exhausted, queue the rest."""
        assert self.committer is not None
        self.metrics.add_failed(self.spec.name, len(failed))
        counts = await self._with_retries(self.committer.count_attempts, [e for e, _ in failed])
        dead, retries = self._plan_failures(failed, counts)
        self._queue_retries(retries)
        return dead

    def _plan_failures(
        self, failed: list[tuple[Event, Failure]], counts: list[int]
    ) -> tuple[list[Entry], list[tuple[float, Event, int]]]:
        """Given the attempt counts: the dead letters to commit and the retries to queue."""
        spec = self.spec
        dead: list[Entry] = []
        retries: list[tuple[float, Event, int]] = []
        now = time.monotonic()
        for (event, failure), attempts in zip(failed, counts, strict=True):
            if failure.retryable and attempts < spec.retry.max_attempts and not self._stopping:
                log.warning(
                    "sink %s: handler failed on %s/%s (attempt %d of %d): %s: %s",
                    spec.name,
                    event.stream_name,
                    event.id,
                    attempts,
                    spec.retry.max_attempts,
                    failure.error_type,
                    failure.message,
                )
                retries.append((now + spec.retry.delay(attempts), event, attempts))
                continue
            if not failure.retryable or attempts >= spec.retry.max_attempts:
                dead.append(self._dead_letter(event, failure, attempts))
            # else: stopping; the event stays pending and continues from its count
        return dead, retries

    def _dead_letter(self, event: Event, failure: Failure, attempts: int) -> Entry:
        spec = self.spec
        self.metrics.add_dead(spec.name, 1)
        if spec.dead_letter is None:
            log.error(
                "sink %s: giving up on %s/%s after %d attempts (%s: %s); no dead_letter "
                "stream: the event is acked and dropped",
                spec.name,
                event.stream_name,
                event.id,
                attempts,
                failure.error_type,
                failure.message,
            )
            return Entry(event, ())
        log.warning(
            "sink %s: %s/%s dead-lettered to %s after %d attempts: %s: %s",
            spec.name,
            event.stream_name,
            event.id,
            spec.dead_letter,
            attempts,
            failure.error_type,
            failure.message,
        )
        fields: list[Any] = ["n", event.name, "p", event.payload]
        if event.topic:
            fields += ["t", event.topic]
        fields += [
            "origin_stream",
            event.stream_name,
            "origin_id",
            event.id,
            "sink",
            spec.name,
            "attempts",
            attempts,
            "error_type",
            failure.error_type,
            "error",
            failure.message[:4096],
        ]
        return Entry(event, (Add(spec.dead_letter, fields),))

    async def _commit(self, entries: list[Entry]) -> list[int]:
        assert self.committer is not None
        conflicts = await self._with_retries(self.committer.commit, entries)
        self._committed(entries, conflicts, 0)
        return conflicts

    def _committed(self, entries: list[Entry], conflicts: list[int], handled: int) -> None:
        """Count a commit: the first ``handled`` entries were handler successes."""
        ok_handled = handled - sum(1 for i in conflicts if i < handled)
        if ok_handled:
            self.handled += ok_handled
            self.metrics.add_handled(self.spec.name, ok_handled)
        self.last_activity = time.monotonic()
        if conflicts:
            self.metrics.add_conflicts(self.spec.name, len(conflicts))
            log.warning(
                "sink %s: %d event(s) were claimed by another consumer before actor %s "
                "committed them; their outputs from this actor were discarded (first: %s/%s)",
                self.spec.name,
                len(conflicts),
                self.name,
                entries[conflicts[0]].event.stream_name,
                entries[conflicts[0]].event.id,
            )

    async def _with_retries(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        """Retry a Redis step while the server is away; safe because the commit is fenced.

        A commit whose reply was lost may have run: its events are no longer
        pending on this consumer, so the retry skips them as conflicts. Gives
        up after a few tries once the actor is told to stop (the events stay
        pending for redelivery).
        """
        delay = ERROR_BACKOFF_FIRST
        tries = 0
        while True:
            try:
                return await fn(arg)
            except RETRYABLE_ERRORS as exc:
                tries += 1
                if self._stopping and tries >= 3:
                    raise
                log.warning("actor %s: Redis error (%r); retrying in %.1fs", self.name, exc, delay)
            await asyncio.sleep(delay)  # a backoff, not a synchronisation
            delay = min(delay * 2, ERROR_BACKOFF_CAP)
