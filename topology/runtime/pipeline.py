"""Where a chunk is handled and committed: the steps, and the two lanes that run them.

An actor's chunk goes through the same steps whatever runs it (written once,
as a generator: :meth:`Actor.steps`): *handle* the events, *count* the failed
ones' attempts, *commit* outputs, acks and dead letters, then *settle* (the
chunk's retries queued, its room in the actor freed). A lane runs the steps:

- :class:`LoopLane`: each chunk a task on the event loop; the handler sees one
  chunk at a time (a FIFO lock) and commits are chained in read order, so one
  chunk is handled while the previous one commits.
- :class:`ThreadLane`: a sync handler's own thread runs the whole way,
  committing on a blocking connection of its own, so a chunk never goes back
  through the loop between its handler and its commit. The commit is sent and
  its reply read only once the next chunk (if one is already waiting) has been
  handled: the server runs one chunk's script while the thread handles the next.
  One thread, one connection, one commit in flight: commits land in read order.
  A stateful sink's chunks go the same way (its state reads on that connection
  too); a keyed chunk whose commit left events to handle again finishes them
  there, one commit at a time, before the next chunk commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol

from topology.runtime.commit import Committer, Entry
from topology.runtime.handlers import Failure, HandlerRunner, Outcome, OwnThread
from topology.runtime.metrics import Metrics
from topology.runtime.retry import ERROR_BACKOFF_FIRST, RedisRetry, Retry, RetryQueue
from topology.runtime.state import read_states, read_states_blocking
from topology.streams import Event, is_transient

__all__ = ["Chunk", "InHand", "Lane", "LoopLane", "Step", "ThreadLane"]

log = logging.getLogger("topology.runtime")


class Step:
    """The steps a lane runs for :meth:`Actor.steps`, with what each is sent back."""

    HANDLE = "handle"  # events -> one outcome per event
    COUNT = "count"  # failed events -> their attempt counts (HINCRBY)
    COMMIT = "commit"  # entries -> indexes of the conflicting ones
    AFTER_PREVIOUS = "after-previous"  # None -> None, once the previous chunk is done
    AFTER_HANDLED = "after-handled"  # None -> None, once the previous chunk was handled
    READ_STATE = "read-state"  # state key names -> their stored states (keyed state)
    COMMIT_KEYED = "commit-keyed"  # a KeyedBatch -> CommitResult (conflicts, moved)


#: What :meth:`Actor.steps` yields: a step and its argument; sent: the step's result.
Steps = Generator[tuple[str, Any], Any, None]
#: Runs ``fn(*args)`` on the actor's loop: at once from the loop, else thread-safely.
OnLoop = Callable[..., None]


class Chunk:
    """Events read together, on their way through the steps."""

    __slots__ = ("done", "entries", "events", "handled", "retries")

    def __init__(self, events: list[Event], done: asyncio.Future[None] | None = None) -> None:
        self.events = events
        self.entries: list[Entry] = []  # what the commit writes: successes, then dead letters
        self.handled = 0  # the first ``handled`` entries are handler successes
        self.retries: list[Retry] = []
        self.done = done  # set once settled, for a caller that waits for this chunk

    def take(self, outcomes: Sequence[Outcome]) -> list[tuple[Event, Failure]]:
        """Record the handler's successes as entries; returns the failures."""
        entries = self.entries
        add = entries.append
        failed: list[tuple[Event, Failure]] = []
        for event, outcome in zip(self.events, outcomes, strict=True):
            if type(outcome) is list:  # the common case first: outputs to commit
                add(Entry(event, outcome))
            elif isinstance(outcome, Failure):
                failed.append((event, outcome))
            else:
                add(Entry(event, outcome))
        self.handled = len(entries)
        return failed


def set_none(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def after(before: asyncio.Future[None] | None, future: asyncio.Future[None]) -> None:
    """Set ``future`` once ``before`` is done (at once if it is, or there is none)."""
    if before is None or before.done():
        set_none(future)
    else:
        before.add_done_callback(lambda _: set_none(future))


def call_now(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)


class InHand:
    """What an actor holds and the server counts as delivered to it, across threads.

    Chunks handed to a lane and not settled yet, plus the events waiting in the
    retry queue. The loop writes ``handed`` and ``requeued``; whichever thread
    settles a chunk adds to ``finished`` (under a lock) and wakes a loop waiting
    for progress. A chunk's retries stay counted until the loop has queued them.
    """

    def __init__(self, retries: RetryQueue) -> None:
        self.retries = retries
        self._handed = 0
        self._finished = 0
        self._requeued = 0
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        #: Set when a retry is queued, to wake the loop while a read is in flight.
        self._kick: asyncio.Future[None] | None = None

    def __int__(self) -> int:
        return self.in_lanes + len(self.retries)

    @property
    def in_lanes(self) -> int:
        """Events handed to a lane and not settled yet."""
        return self._handed - self._finished - self._requeued

    def handed(self, count: int) -> None:
        self._handed += count

    def settle(self, chunk: Chunk, on_loop: OnLoop) -> None:
        """A lane is done with ``chunk`` (from any thread): its retries queued, its room freed."""
        retries = chunk.retries
        if retries:
            on_loop(self._requeue, retries)
        with self._lock:
            self._finished += len(chunk.events) - len(retries)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            on_loop(set_none, waiter)
        if chunk.done is not None:
            on_loop(set_none, chunk.done)

    def _requeue(self, retries: list[Retry]) -> None:
        self._requeued += len(retries)
        self.retries.push(retries)
        for wake in (self._kick, self._waiter):  # the loop re-plans its wake-up
            if wake is not None:
                set_none(wake)

    def waits(self, read: asyncio.Future[Any] | None, stopping: bool) -> set[asyncio.Future[Any]]:
        """What the actor's loop waits for next, beside ``read``.

        With a read in flight, a settled chunk changes nothing (room matters
        only for the next read): waking for it would cost a loop pass per read.
        Only a retry it queued does, hence the kick.
        """
        waits: set[asyncio.Future[Any]] = set()
        if self.in_lanes:
            if read is None or stopping:
                waits.add(self._next_progress())
            else:
                if self._kick is None or self._kick.done():
                    self._kick = asyncio.get_running_loop().create_future()
                waits.add(self._kick)
        if read is not None:
            waits.add(read)
        return waits

    def _next_progress(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        with self._lock:
            # Looked again under the lock the settling thread takes: a chunk settled
            # since the caller's look found no waiter to wake, so none is made.
            if not self.in_lanes:
                settled = loop.create_future()
                settled.set_result(None)
                return settled
            if self._waiter is None or self._waiter.done():
                self._waiter = loop.create_future()
            return self._waiter


class LaneHost(Protocol):
    """What a lane needs of its actor."""

    redis_retry: RedisRetry
    metrics: Metrics

    @property
    def sink_name(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def halted(self) -> bool: ...

    def steps(self, chunk: Chunk) -> Steps: ...


class Lane:
    """Runs chunks through their steps, in read order, beside the actor's loop."""

    def __init__(self, host: LaneHost, committer: Committer, in_hand: InHand) -> None:
        self.host = host
        self.committer = committer
        self.in_hand = in_hand

    def dispatch(self, chunk: Chunk) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """The loop ended: stop what is not committed yet (it stays pending)."""
        raise NotImplementedError

    def _failed(self, what: str, chunk: Chunk) -> None:
        log.exception(
            "actor %s: %s of %d events failed; they stay pending for redelivery",
            self.host.name,
            what,
            len(chunk.events),
        )


class LoopLane(Lane):
    """Each chunk a task on the event loop (async handlers, executors, cluster clients)."""

    def __init__(
        self, host: LaneHost, committer: Committer, in_hand: InHand, handler: HandlerRunner
    ) -> None:
        super().__init__(host, committer, in_hand)
        self.handler = handler
        self._tasks: set[asyncio.Task[None]] = set()
        self._handle_lock = asyncio.Lock()
        self._commit_tail: asyncio.Future[None] | None = None
        self._handled_tail: asyncio.Future[None] | None = None

    def dispatch(self, chunk: Chunk) -> None:
        task = asyncio.create_task(self._run(chunk))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):  # stop_now: whatever is in hand stays pending
            task.cancel()
        await self.committer.close()

    async def _run(self, chunk: Chunk) -> None:
        """Run the steps; an unexpected error leaves the events pending (redelivered after
        the ack grace): it delays them, never loses them, never kills the actor."""
        loop = asyncio.get_running_loop()
        previous, before = self._commit_tail, self._handled_tail
        mine: asyncio.Future[None] = loop.create_future()
        handled: asyncio.Future[None] = loop.create_future()
        self._commit_tail, self._handled_tail = mine, handled
        steps = self.host.steps(chunk)
        try:
            kind, arg = next(steps)
            while True:
                if kind == Step.AFTER_HANDLED:
                    if before is not None and not before.done():
                        await asyncio.wait((before,))
                    kind, arg = steps.send(None)
                    continue
                result = await self._step(kind, arg, previous)
                step, (kind, arg) = kind, steps.send(result)
                if step == Step.HANDLE:  # the steps took in its outcome: the next may start
                    after(before, handled)
        except StopIteration:
            pass
        except Exception:
            self._failed("batch", chunk)
            await asyncio.sleep(ERROR_BACKOFF_FIRST)  # a backoff, not a synchronisation
        finally:
            after(before, handled)
            set_none(mine)
            self.in_hand.settle(chunk, call_now)

    async def _step(self, kind: str, arg: Any, previous: asyncio.Future[None] | None) -> Any:
        host = self.host
        if kind == Step.HANDLE:
            async with self._handle_lock:  # one chunk in the handler, in read order
                started = time.perf_counter()
                outcomes = await self.handler.run(arg)
                host.metrics.observe_handler(host.sink_name, time.perf_counter() - started)
                return outcomes
        retry = host.redis_retry
        if kind == Step.COUNT:
            return await retry.run(self.committer.count_attempts, arg)
        if kind == Step.READ_STATE:
            return await retry.run(functools.partial(read_states, self.committer.redis), arg)
        if previous is not None and not previous.done():
            # Commits in read order (not cancelled if we are); AFTER_PREVIOUS: a keyed
            # chunk sharing keys with the chunks before it starts from their commits.
            await asyncio.wait((previous,))
        if kind == Step.AFTER_PREVIOUS:
            return None
        started = time.perf_counter()
        commit = self.committer.commit_keyed if kind == Step.COMMIT_KEYED else self.committer.commit
        conflicts = await retry.run(commit, arg)
        host.metrics.observe_commit(host.sink_name, time.perf_counter() - started)
        return conflicts


class ThreadLane(Lane):
    """Each chunk handled *and* committed on the sync handler's own thread."""

    def __init__(
        self,
        host: LaneHost,
        committer: Committer,
        in_hand: InHand,
        runner: OwnThread,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(host, committer, in_hand)
        self.runner = runner
        self.loop = loop
        #: The commit sent and not read back yet: its chunk, steps, step kind and argument.
        self._sent: tuple[Chunk, Steps, str, Any] | None = None

    def dispatch(self, chunk: Chunk) -> None:
        self.runner.post(self._run, chunk)

    async def close(self) -> None:
        await self.committer.close()
        self.runner.post(self._close)  # after the thread's last job: it owns that connection

    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: what is left stays pending
            self.loop.call_soon_threadsafe(fn, *args)

    # -- on the handler thread -----------------------------------------------------------

    def _run(self, chunk: Chunk) -> None:
        try:
            if not self.host.halted and self._drive(chunk):
                return  # its commit is in flight: settling it finishes the chunk
            self._settle_sent()  # stop_now: left pending; a commit already sent still lands
        except Exception:
            self._failed("batch", chunk)
            time.sleep(ERROR_BACKOFF_FIRST)  # a backoff on this actor's own thread
        self.in_hand.settle(chunk, self._on_loop)

    def _drive(self, chunk: Chunk) -> bool:
        """Run the steps up to the commit; True once it is sent."""
        steps = self.host.steps(chunk)
        try:
            kind, arg = next(steps)
            while kind not in (Step.COMMIT, Step.COMMIT_KEYED):
                kind, arg = steps.send(self._step(kind, arg))
        except StopIteration:
            return False
        self._settle_sent()  # one reply awaited at a time: the previous chunk's
        return self._send(chunk, steps, kind, arg)

    def _step(self, kind: str, arg: Any) -> Any:
        """One step, on this thread; a commit here is not pipelined (a keyed chunk's
        later round, run while its first commit is settled)."""
        host = self.host
        if kind == Step.HANDLE:
            started = time.perf_counter()
            reply = self.runner.run_blocking(arg, self.loop)
            host.metrics.observe_handler(host.sink_name, time.perf_counter() - started)
            return reply
        if kind == Step.AFTER_HANDLED:
            return None  # one thread runs the chunks in order: those before are handled
        self._settle_sent()  # one reply awaited at a time: the previous chunk's
        committer, retry = self.committer, host.redis_retry
        if kind == Step.COUNT:
            return retry.run_blocking(committer.count_attempts_blocking, arg)
        if kind == Step.READ_STATE:
            return retry.run_blocking(
                functools.partial(read_states_blocking, committer.call_blocking), arg
            )
        if kind == Step.AFTER_PREVIOUS:
            return None  # settled above: every chunk before is done
        started = time.perf_counter()
        keyed = kind == Step.COMMIT_KEYED
        reply = retry.run_blocking(
            committer.commit_keyed_blocking if keyed else committer.commit_blocking, arg
        )
        host.metrics.observe_commit(host.sink_name, time.perf_counter() - started)
        return reply

    def _send(self, chunk: Chunk, steps: Steps, kind: str, arg: Any) -> bool:
        if self.host.halted:
            return False
        try:
            if kind == Step.COMMIT_KEYED:
                self.committer.send_commit_blocking(arg.entries, arg)
            else:
                self.committer.send_commit_blocking(arg)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # settling reads no reply, and runs the whole commit again (fenced)
        self._sent = (chunk, steps, kind, arg)
        if not self.runner.has_queued():
            self._settle_sent()
        return True

    def _settle_sent(self) -> None:
        """Read the reply of the commit in flight (if any) and settle its chunk."""
        sent, self._sent = self._sent, None
        if sent is None:
            return
        chunk, steps, kind, arg = sent
        committer = self.committer
        keyed = kind == Step.COMMIT_KEYED
        started = time.perf_counter()  # the wait for the reply: the send went before
        try:
            reply: Any
            try:
                reply = (
                    committer.finish_commit_keyed_blocking()
                    if keyed
                    else committer.finish_commit_blocking()
                )
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # fenced: running the whole commit again is safe
                commit = committer.commit_keyed_blocking if keyed else committer.commit_blocking
                reply = self.host.redis_retry.run_blocking(commit, arg)
            elapsed = time.perf_counter() - started
            self.host.metrics.observe_commit(self.host.sink_name, elapsed)
            self._finish(steps, reply)
        except Exception:
            self._failed("commit", chunk)
            time.sleep(ERROR_BACKOFF_FIRST)  # a backoff on this actor's own thread
        finally:
            self.in_hand.settle(chunk, self._on_loop)

    def _finish(self, steps: Steps, reply: Any) -> None:
        """Hand a chunk's steps its commit's reply; a keyed chunk may go on (events whose
        key's state moved are handled again): its further steps run here and now."""
        try:
            kind, arg = steps.send(reply)
            while not self.host.halted:
                kind, arg = steps.send(self._step(kind, arg))
            steps.close()  # stop_now: what is not committed stays pending
        except StopIteration:
            pass

    def _close(self) -> None:
        """The thread's last job for this actor: the commit in flight, then the connection."""
        self._settle_sent()  # never raises: a failed commit is logged, left pending
        self.committer.close_blocking()
