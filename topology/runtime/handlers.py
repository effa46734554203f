"""Calling a sink's handler on a batch and turning what it returns into stream entries.

Sync handlers run the whole batch in ONE job off the event loop: a slow or
blocking handler never stalls the loop, and the batch pays one thread hop
instead of one per event. By default the hop goes to a :class:`HandlerThread`
of the actor's own (a C queue and one wakeup, cheaper than
``loop.run_in_executor``'s chained futures, and under light load a read of one
event pays it every time); an explicit ``executor`` is used as given. Async
handlers are awaited on the loop with bounded concurrency (a fixed number of
worker coroutines per batch rather than one task per event: a task is the
costlier object).

The runners: :class:`SyncRunner` and :class:`AsyncRunner` behind
:class:`HandlerRunner`; :func:`runner_for` picks one.

What a handler returns: ``None``, an ``Emit``, or an iterable of
``Emit``. Each becomes an :class:`~topology.runtime.commit.Add` with pulse's
fields. An ``Emit`` naming a stream that is not one of the sink's outputs — or
any return value that is not an ``Emit`` — is a :class:`ContractError`: the
input is dead-lettered at once (retrying a deterministic contract violation
only delays the inevitable), and nothing is ever written to a stream the
config does not declare.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from time import sleep as _sleep
from typing import Any, Protocol, cast

from topology._emit import Emit
from topology.runtime.commit import Add
from topology.streams import Event, encode_payload, entry_fields

__all__ = [
    "AsyncRunner",
    "ContractError",
    "Failure",
    "HandlerRunner",
    "HandlerThread",
    "HandlerTimeout",
    "Outcome",
    "OwnThread",
    "SyncRunner",
    "TooManyDeliveries",
    "route_result",
    "runner_for",
]

log = logging.getLogger("topology.runtime")

#: Async handler calls in flight per actor batch.
ASYNC_CONCURRENCY = 64

#: A sync batch releases the GIL every this many events (a power of two). A
#: thread running pure Python keeps the GIL for the switch interval (5 ms), so
#: without this the event loop thread could not take in a commit's reply or
#: send the next read until the whole batch was handled: reads, commits and
#: handling would run one after the other instead of overlapping.
YIELD_EVERY = 32
YIELD_MASK = YIELD_EVERY - 1

#: A :class:`HandlerThread` idle this long ends (the next job starts a new one), so a
#: stopped actor's thread goes away without anyone having to close it.
THREAD_IDLE_EXIT = 2.0


class ContractError(Exception):
    """The handler returned something the contract forbids (not retried)."""


class HandlerTimeout(Exception):
    """A handler call took longer than the sink's ``timeout`` (retried like any failure)."""


class TooManyDeliveries(Exception):
    """The event was delivered more often than ``max_deliveries``: not handled again."""


async def within(awaitable: Awaitable[Any], seconds: float) -> Any:
    """``await awaitable``, cancelled after ``seconds`` (then :class:`HandlerTimeout`).

    Run as a task of its own and waited for, rather than under a timeout scope,
    so a ``TimeoutError`` the handler raises by itself stays its own failure.
    """
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((task,), timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if done:
        return task.result()
    task.cancel()
    task.add_done_callback(_retrieve)
    raise HandlerTimeout(f"handler call took longer than {seconds:g}s (cancelled)")


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a cancelled call's outcome seen: what it raised while unwinding is dropped."""
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True, slots=True)
class Failure:
    """A handler call that raised (or broke the contract)."""

    error: BaseException
    retryable: bool

    @property
    def error_type(self) -> str:
        return type(self.error).__qualname__

    @property
    def message(self) -> str:
        return str(self.error)


#: Per event: the outputs to commit, or why it failed.
Outcome = list[Add] | Failure


def _add(emit: Emit, outputs: tuple[str, ...]) -> Add:
    stream = emit.stream
    if stream is None:
        if len(outputs) != 1:
            raise ContractError(
                f"Emit({emit.name!r}) has no stream and the sink has "
                f"{len(outputs)} outputs: name one of {list(outputs)}"
                if outputs
                else f"Emit({emit.name!r}) but the sink has no outputs"
            )
        stream = outputs[0]
    elif stream not in outputs:
        raise ContractError(
            f"Emit({emit.name!r}) to stream {stream!r}, which is not an output of this sink "
            f"(outputs: {list(outputs)})"
        )
    try:
        payload = encode_payload(emit.payload)
    except (TypeError, ValueError) as exc:  # deterministic: retrying cannot help
        raise ContractError(
            f"Emit({emit.name!r}) payload is not bytes, str or JSON-serialisable: {exc}"
        ) from None
    return Add(stream, entry_fields(emit.name, payload, emit.topic))


def route_result(result: Any, outputs: tuple[str, ...]) -> list[Add]:
    """Normalise a handler's return value into the entries to add; raises ContractError."""
    if result is None:
        return []
    if type(result) is Emit:
        # The hot path (one Emit of bytes to the only output, no topic) inline:
        # it is most of what a forward stage does per event.
        if (
            result.stream is None
            and len(outputs) == 1
            and type(result.payload) is bytes
            and not result.topic
        ):
            return [Add(outputs[0], entry_fields(result.name, result.payload))]
        return [_add(result, outputs)]
    if isinstance(result, Emit):
        return [_add(result, outputs)]
    if isinstance(result, (str, bytes, dict)) or not isinstance(result, Iterable):
        raise ContractError(
            f"handler returned {type(result).__name__}; expected None, an Emit or Emits"
        )
    adds = []
    for item in result:
        if not isinstance(item, Emit):
            raise ContractError(
                f"handler returned an iterable holding {type(item).__name__}; expected Emits"
            )
        adds.append(_add(item, outputs))
    return adds


def _run_sync_batch(
    fn: Callable[[Event], Any], events: Sequence[Event], outputs: tuple[str, ...]
) -> tuple[list[Any], list[int]]:
    """Runs in a worker thread: the whole batch in one job.

    Returns the outcomes and the indexes of those that are awaitables (e.g. a
    partial of an async function), which the caller awaits on the loop. The
    awaitable check runs only for results that are not plainly an Emit, a list
    or None: ``inspect.isawaitable`` is costly next to the rest of a forward.
    """
    results: list[Any] = []
    append = results.append
    pending: list[int] = []
    plain = (Emit, list, tuple, type(None))
    for i, event in enumerate(events):
        if i & YIELD_MASK == YIELD_MASK:
            _sleep(0)  # let the event loop thread take the GIL: see YIELD_EVERY
        try:
            result = fn(event)
            if type(result) not in plain and inspect.isawaitable(result):
                pending.append(len(results))
                append(result)  # awaited on the loop by the caller
                continue
            append(route_result(result, outputs))
        except ContractError as exc:
            append(Failure(exc, retryable=False))
        except (Exception, SystemExit) as exc:  # sys.exit() in a handler is its failure
            append(Failure(exc, retryable=True))
    return results, pending


class HandlerThread:
    """One long-lived thread running jobs in submission order, for one actor.

    Cheaper than ``loop.run_in_executor`` per job (no concurrent future chained
    to an asyncio one, no pool bookkeeping): the loop puts the job on a
    ``SimpleQueue`` (C code wakes the thread); the thread hands the result back
    with one ``call_soon_threadsafe``. An actor handles one batch at a time (its
    handler lock), so one thread loses it no concurrency, and a slow handler
    blocks only its own actor's thread, never the loop nor another actor.
    The thread ends after :data:`THREAD_IDLE_EXIT` idle seconds (daemon: a
    handler stuck forever does not hold the process at exit).
    """

    def __init__(self, name: str = "ponos-handler", idle_exit: float = THREAD_IDLE_EXIT) -> None:
        self.name = name
        self.idle_exit = idle_exit
        #: C-level put/get: no Python-level Condition and no "is it asleep" flag to
        #: keep (as cheap per job as deque + Condition, with less code).
        self._jobs: SimpleQueue[tuple[Any, ...]] = SimpleQueue()
        #: Guards starting and ending the thread against a job arriving meanwhile.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.started = 0  # threads started so far (tests: the idle exit)

    @property
    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` on the thread; a future of the running loop for its result.

        Cancelling the future skips the job if it has not started (like an
        executor's); a started job runs to its end, its result dropped.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._enqueue((loop, future, fn, args))
        return future

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the thread, after the jobs before it; nobody awaits it.

        For a job that reports back by itself (the actor's direct path): no
        future, so nothing wakes the event loop when it ends. An exception it
        lets out is logged.
        """
        self._enqueue((None, None, fn, args))

    def has_queued(self) -> bool:
        """Jobs are waiting (from the thread itself: should it finish up or go on)."""
        return not self._jobs.empty()

    def _enqueue(self, job: tuple[Any, ...]) -> None:
        self._jobs.put(job)
        # Checked after the put, under the lock the ending thread takes to check the
        # queue: either it sees this job and goes on, or this sees it gone.
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
                self.started += 1
                self._thread.start()

    def _main(self) -> None:
        jobs = self._jobs
        while True:
            try:
                loop, future, fn, args = jobs.get(timeout=self.idle_exit)
            except Empty:
                with self._lock:
                    if jobs.empty():
                        self._thread = None  # under the lock: the next job starts a new one
                        return
                continue
            if future is None:  # posted: reports back by itself
                try:
                    fn(*args)
                except BaseException:
                    log.exception("handler thread %s: a posted job failed", self.name)
            elif not future.cancelled():  # a benign racy read: worst case the job runs
                try:
                    result = fn(*args)
                except BaseException as exc:  # handed to the awaiting task
                    _hand_back(loop, future, exc, failed=True)
                else:
                    _hand_back(loop, future, result, failed=False)
                result = None
            del future, fn, args, loop  # do not keep the batch alive while idle


def _hand_back(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], value: Any, *, failed: bool
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: no one waits
        loop.call_soon_threadsafe(_settle, future, value, failed)


def _settle(future: asyncio.Future[Any], value: Any, failed: bool) -> None:
    if future.done():  # cancelled while the job ran
        return
    if failed:
        future.set_exception(value)
    else:
        future.set_result(value)


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )


class OwnThread(Protocol):
    """A runner with a thread of its own, which an actor's lane may drive from that thread."""

    def post(self, fn: Callable[..., Any], *args: Any) -> None: ...

    def has_queued(self) -> bool: ...

    def run_blocking(self, batch: Any, loop: asyncio.AbstractEventLoop, /) -> Any: ...


class HandlerRunner:
    """One sink's handler bound to its outputs: a batch in, one outcome per event out.

    The interface the actor sees; :func:`runner_for` picks the implementation
    (:class:`AsyncRunner` on the loop, :class:`SyncRunner` off it).
    """

    def __init__(self, fn: Callable[[Event], Any], outputs: tuple[str, ...]) -> None:
        self.fn = fn
        self.outputs = outputs
        #: Seconds a call may take (the sink's ``timeout``); None: no bound.
        self.timeout: float | None = None

    def limit(self, seconds: float | None, name: str = "handler") -> HandlerRunner:
        """Bound each call to ``seconds`` (see :mod:`topology.runtime.timeouts`)."""
        self.timeout = seconds
        return self

    @property
    def own_thread(self) -> OwnThread | None:
        """This runner when it runs batches on a thread of its own (the actor may then
        handle *and* commit there), else None."""
        return None

    async def run(self, events: Sequence[Event]) -> list[Outcome]:
        """One outcome per event, in order: ``list[Add]`` or :class:`Failure`."""
        raise NotImplementedError

    async def _await_one(self, awaitable: Any) -> Outcome:
        try:
            if self.timeout is not None:
                awaitable = within(awaitable, self.timeout)
            return route_result(await awaitable, self.outputs)
        except ContractError as exc:
            return Failure(exc, retryable=False)
        except (Exception, SystemExit) as exc:
            return Failure(exc, retryable=True)


class AsyncRunner(HandlerRunner):
    """An async handler, awaited on the loop with at most ``concurrency`` calls in flight."""

    def __init__(
        self,
        fn: Callable[[Event], Any],
        outputs: tuple[str, ...],
        *,
        concurrency: int = ASYNC_CONCURRENCY,
    ) -> None:
        super().__init__(fn, outputs)
        self.concurrency = max(1, concurrency)

    async def run(self, events: Sequence[Event]) -> list[Outcome]:
        results: list[Any] = [None] * len(events)
        it = iter(range(len(events)))

        async def worker() -> None:
            for i in it:  # shared iterator: each index taken by exactly one worker
                try:
                    awaitable = self.fn(events[i])
                except (Exception, SystemExit) as exc:  # raised before its first await
                    results[i] = Failure(exc, retryable=True)
                    continue
                results[i] = await self._await_one(awaitable)

        workers = min(self.concurrency, len(events))
        if workers == 1:
            await worker()
        elif workers > 1:
            await asyncio.gather(*(worker() for _ in range(workers)))
        return results


class ThreadOwner:
    """What a runner whose sync calls run on a :class:`HandlerThread` of its own (None:
    on an executor's) offers its actor's thread lane."""

    _thread: HandlerThread | None

    @property
    def own_thread(self) -> OwnThread | None:
        return cast("OwnThread", self) if self._thread is not None else None

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on this handler's thread, in order with what runs there."""
        assert self._thread is not None
        self._thread.post(fn, *args)

    def has_queued(self) -> bool:
        """More jobs wait for this handler's thread (see :meth:`HandlerThread.has_queued`)."""
        return self._thread is not None and self._thread.has_queued()


class SyncRunner(ThreadOwner, HandlerRunner):
    """A sync handler, a whole batch per job: on a :class:`HandlerThread` of this
    runner's own (one runner per actor), or on ``executor`` when one is given."""

    def __init__(
        self,
        fn: Callable[[Event], Any],
        outputs: tuple[str, ...],
        *,
        executor: Executor | None = None,
    ) -> None:
        super().__init__(fn, outputs)
        self.executor = executor
        self._thread = HandlerThread() if executor is None else None
        #: Runs one batch: in this thread, or on helper threads under a timeout.
        self._batch: Callable[..., tuple[list[Any], list[int]]] = _run_sync_batch

    def limit(self, seconds: float | None, name: str = "handler") -> HandlerRunner:
        from topology.runtime.timeouts import TimedBatches

        super().limit(seconds, name)
        self._batch = _run_sync_batch if seconds is None else TimedBatches(seconds, name)
        return self

    def run_blocking(
        self, events: Sequence[Event], loop: asyncio.AbstractEventLoop
    ) -> list[Outcome]:
        """:meth:`run`, from this handler's own thread (a job given to :meth:`post`).

        An awaitable a sync handler returns is awaited on ``loop`` meanwhile.
        """
        results, pending = self._batch(self.fn, events, self.outputs)
        for i in pending:
            results[i] = asyncio.run_coroutine_threadsafe(
                self._await_one(results[i]), loop
            ).result()
        return results

    async def run(self, events: Sequence[Event]) -> list[Outcome]:
        if not events:
            return []
        if self._thread is not None:
            job = self._thread.submit(self._batch, self.fn, events, self.outputs)
        else:
            job = asyncio.get_running_loop().run_in_executor(
                self.executor, self._batch, self.fn, events, self.outputs
            )
        results, pending = await job
        for i in pending:
            results[i] = await self._await_one(results[i])
        return results


def runner_for(
    fn: Callable[[Event], Any],
    outputs: tuple[str, ...],
    *,
    executor: Executor | None = None,
    concurrency: int = ASYNC_CONCURRENCY,
) -> HandlerRunner:
    """The runner of ``fn``: async handlers on the loop, sync ones off it."""
    if _is_async(fn):
        return AsyncRunner(fn, outputs, concurrency=concurrency)
    return SyncRunner(fn, outputs, executor=executor)
