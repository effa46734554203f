"""Sources: generator functions whose ``Emit``s the engine adds to a stream.

A source is ``fn()`` or ``fn(ctx)`` returning a generator or an async generator
(any iterable or async iterable works) of :class:`~topology.Emit`. ``Emit.stream``
defaults to the source's stream (naming another stream is an error, never a
silent write elsewhere), ``Emit.topic`` to the source's ``topic``. The engine
adds what it yields with pipelined ``XADD``s, up to :data:`BATCH` per round trip,
flushing as soon as the generator pauses, so a slow trickle is not held back
and a fast burst is not one round trip per event. Sync generators run in a
thread: a blocking ``time.sleep`` in one stalls nothing else.

Exactly one worker of a deployment runs a given source: the one holding its
lease (``SET NX PX``, renewed every ``lease_ttl/3``). The others poll the lease
and take over when the holder dies and its lease expires (``lease_ttl``, 5 s).
A holder whose lease vanished without a successor (Redis restarted without
persistence, or a pause longer than the TTL) takes it back and carries on; one
that finds another worker holding it stops its generator.

Guarantees, stated plainly:

- A source that ends records ``done`` in its state hash, and no worker of the
  deployment runs it again, restarts included: a finished import or backfill
  re-run by a routine restart would add all its events twice. A source with
  ``rerun: true`` is run again when the deployment starts *fresh* (the worker
  that no other live worker of the heartbeat registry started before clears
  ``done``: of workers started together, exactly one); so is any source once
  its ``done`` field is deleted from the state hash.
- What a generator yielded before it raised is added, then the source fails.
- On takeover after a crash the generator starts again from the beginning:
  **at-least-once** for sources. A source that must not repeat itself resumes:
  ``ctx.checkpoint(value)`` records a position, which is saved after every
  event yielded before the call has been added, and ``ctx.resume_from`` gives
  the last saved position to the next run (kept across fresh starts too).
- A source that raises is logged (ERROR), marked ``failed`` and not run again by
  the other workers; a fresh start of the deployment clears the mark (the
  cause may have been fixed), and ``run --stop-when-idle`` exits 1.
- ``ctx.stop`` is set when the engine stops the source (shutdown, reload, lost
  lease); a long-running source may watch it and return. A source stopped that
  way is not ``done``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from topology._emit import Emit
from topology.config.model import SourceSpec, Topology
from topology.runtime.keys import EngineKeys
from topology.runtime.workers import live_workers, server_time
from topology.streams import (
    RELEASE_LEASE_SCRIPT,
    RETRYABLE_ERRORS,
    Backoff,
    after_failure,
    pause,
)

__all__ = ["BATCH", "SourceContext", "SourceError", "SourceRunner"]

log = logging.getLogger(__name__)

#: Most events added per pipelined round trip.
BATCH = 256
#: Events buffered ahead of Redis before the generator is made to wait.
_HIGH_WATER = 4 * BATCH
#: How long a sync generator may fill a batch before it is flushed.
_SYNC_FILL = 0.02
#: Backoff while Redis is away, doubling up to the cap (cut short by a stop).
REDIS_BACKOFF_FIRST = 0.1
REDIS_BACKOFF_CAP = 2.0

# Renew only a lease we still hold: a worker that paused past its TTL must not
# extend the lease its successor now holds. A lease that is simply gone (expired
# during a pause, or lost with a Redis restart without persistence) is taken
# back: nobody else ran the source meanwhile, so the generator carries on
# instead of starting over. 1 = renewed, 2 = taken back.
LEASE_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

# State hash fields (EngineKeys.source_state).
DONE = "done"
FAILED = "failed"
CHECKPOINT = "checkpoint"


T = TypeVar("T")


class SourceError(Exception):
    """A source yielded something the engine cannot add (wrong type or stream)."""


@dataclass
class SourceContext:
    """What ``fn(ctx)`` gets: who runs it, when to stop, and where to resume."""

    worker_id: str
    source: str
    stop: asyncio.Event
    resume_from: str | None = None
    _checkpoint: str | None = field(default=None, repr=False)

    def checkpoint(self, value: str) -> None:
        """Record a resume position, saved once what was yielded before it is added."""
        self._checkpoint = str(value)


class _Checkpoint:
    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def _hand_over_end(task: asyncio.Task[None], ctx: SourceContext, queue: asyncio.Queue[Any]) -> None:
    """Queue the producer's last checkpoint and its end for the flusher, however it ended.

    A done callback rather than a ``finally`` in the producer: a task cancelled
    before its first step (a stop or a lost lease right after the lease was
    taken) runs none of its code, and the flusher would wait for that end forever.
    """
    if ctx._checkpoint is not None:
        queue.put_nowait(_Checkpoint(ctx._checkpoint))
        ctx._checkpoint = None
    error = asyncio.CancelledError() if task.cancelled() else task.exception()
    queue.put_nowait(_End(error))


class SourceRunner:
    """Runs one source in this worker while it holds the source's lease."""

    def __init__(
        self,
        spec: SourceSpec,
        topology: Topology,
        conn: Any,
        *,
        worker_id: str,
        lease_ttl: float = 5.0,
    ) -> None:
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be > 0, got {lease_ttl}")
        self.spec = spec
        self.topology = topology
        self.conn = conn
        self.redis = conn.redis
        self.worker_id = worker_id
        self.lease_ttl = lease_ttl
        keys = EngineKeys(topology.name)
        self.lease_key = keys.source_lease(spec.name)
        self.state_key = keys.source_state(spec.name)
        stream_spec = topology.streams.get(spec.stream)
        self.stream = conn.stream(
            spec.stream,
            max_len=stream_spec.max_len if stream_spec else None,
            ttl=stream_spec.ttl if stream_spec else None,
        )
        self.produced = 0
        self.failed: BaseException | None = None
        self._done = False
        self._holding = False
        self._stopping = asyncio.Event()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: asyncio.Task[None] | None = None
        self._ctx: SourceContext | None = None
        self._renew = self.redis.register_script(LEASE_RENEW)
        self._release = self.redis.register_script(RELEASE_LEASE_SCRIPT)

    @property
    def done(self) -> bool:
        """True once the generator ended (here or in another worker of the deployment)."""
        return self._done

    @property
    def holding(self) -> bool:
        """True while this worker holds the lease and runs the generator."""
        return self._holding

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._main(), name=f"source:{self.spec.name}"
            )

    async def stop(self) -> None:
        """Stop the generator, add what it already yielded, release the lease."""
        self._stopping.set()
        if self._ctx is not None:
            self._ctx.stop.set()
        if self._producer is not None:
            self._producer.cancel()
        task = self._task
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait(self) -> None:
        """Until the runner ends by itself (source done or failed).

        Its end, however it came, is not raised here; a cancellation of the caller
        is (a ``wait_for`` around this times out), and leaves the runner running.
        """
        if self._task is not None:
            await asyncio.wait([self._task])

    # -- lease ---------------------------------------------------------------------

    async def _finished_elsewhere(self) -> bool:
        marks = await self.redis.hmget(self.state_key, [DONE, FAILED])
        return any(marks)

    async def _acquire(self) -> bool:
        return bool(
            await self.redis.set(
                self.lease_key, self.worker_id, nx=True, px=int(self.lease_ttl * 1000)
            )
        )

    async def _release_lease(self) -> None:
        if not self._holding:
            return
        self._holding = False
        try:
            await self._release(keys=[self.lease_key], args=[self.worker_id])
        except Exception as exc:  # it expires by itself
            log.debug("source %s: lease release failed: %s", self.spec.name, exc)

    async def _keep_lease(self, ctx: SourceContext, ended: asyncio.Event) -> None:
        """Renew every ttl/3 until ``ended``; on loss stop the generator (a successor
        may be running it).

        Ended by the event, not only by cancelling this task: redis-py can swallow a
        cancellation that lands while a renewal is in flight (on Python 3.11, the
        ``asyncio.wait_for`` around its socket write does when the write has just
        ended), and the task carries on; the run would wait for it forever.
        """
        period = self.lease_ttl / 3
        last_ok = time.monotonic()
        while True:
            await pause(period, ended)
            if ended.is_set():
                return
            try:
                kept = await self._renew(
                    keys=[self.lease_key], args=[self.worker_id, int(self.lease_ttl * 1000)]
                )
                if ended.is_set():  # the run ended meanwhile: nothing left to keep
                    return
                if kept:
                    if kept == 2:
                        log.warning("source %s: lease had vanished; taken back", self.spec.name)
                    last_ok = time.monotonic()
                    continue
                reason = "another worker holds it now"
            except Exception as exc:
                if ended.is_set():
                    return
                if time.monotonic() - last_ok < self.lease_ttl:
                    log.warning("source %s: lease renewal failed: %s", self.spec.name, exc)
                    continue
                reason = f"not renewed for {self.lease_ttl}s ({exc})"
            log.warning("source %s: lease lost (%s); stopping it here", self.spec.name, reason)
            self._holding = False
            self._lost.set()
            ctx.stop.set()
            if self._producer is not None:
                self._producer.cancel()
            return

    # -- main loop -----------------------------------------------------------------

    async def _redis(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, retried with backoff while Redis is away; gives up only on stop.

        A Redis restart must not end a source for good, in the worker that runs
        it or in those waiting for its lease.
        """
        backoff = Backoff(REDIS_BACKOFF_FIRST, REDIS_BACKOFF_CAP)
        while True:
            try:
                result = await call()
            except RETRYABLE_ERRORS as exc:
                await after_failure(self.redis, exc)
                if self._stopping.is_set():
                    raise
                if not backoff.failures:
                    log.warning("source %s: %s failed, retrying: %s", self.spec.name, what, exc)
                await pause(backoff.next(), self._stopping)
                continue
            if backoff.failures:
                log.info("source %s: %s works again", self.spec.name, what)
            return result

    async def _main(self) -> None:
        try:
            await self._redis("checking the deployment's workers", self._fresh_start_check)
            while not self._stopping.is_set():
                if await self._redis("reading its state", self._finished_elsewhere):
                    self._done = True
                    log.info("source %s already ended in this deployment", self.spec.name)
                    return
                if await self._redis("taking its lease", self._acquire):
                    self._holding = True
                    await self._run_held()
                    if self._done or self.failed is not None:
                        return
                    continue
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.lease_ttl / 3)
        except asyncio.CancelledError:
            raise
        except RETRYABLE_ERRORS as exc:  # only raised once stopping: Redis away at shutdown
            log.warning("source %s: stopped while Redis is unreachable: %s", self.spec.name, exc)
        except Exception as exc:
            self.failed = exc
            log.error("source %s: %s: %s", self.spec.name, type(exc).__name__, exc)
        finally:
            await self._release_lease()

    async def _fresh_start_check(self) -> None:
        """Clear the failure mark (and ``done`` for a ``rerun`` source) when this worker
        is the first live one of the deployment.

        "First" means no other live worker started before it (server clock, then
        worker id to break ties): of several workers started together exactly one
        clears, and a worker joining a running deployment never does. A worker
        not (yet) in the registry counts as starting now.
        """
        workers = await live_workers(self.redis, self.topology.name)
        mine = workers.get(self.worker_id)
        my_start = float(mine["started"]) if mine and mine.get("started") is not None else None
        if my_start is None:
            my_start = await server_time(self.redis)
        for wid, entry in workers.items():
            if wid == self.worker_id:
                continue
            if (float(entry.get("started") or 0.0), wid) < (my_start, self.worker_id):
                return  # the deployment was already running
        await self.redis.hdel(self.state_key, *((DONE, FAILED) if self.spec.rerun else (FAILED,)))

    async def _run_held(self) -> None:
        self._lost.clear()
        resume = await self._redis(
            "reading its checkpoint", lambda: self.redis.hget(self.state_key, CHECKPOINT)
        )
        ctx = SourceContext(
            worker_id=self.worker_id,
            source=self.spec.name,
            stop=asyncio.Event(),
            resume_from=resume.decode() if isinstance(resume, bytes) else resume,
        )
        if self._stopping.is_set():
            return
        self._ctx = ctx
        log.info("source %s started on %s", self.spec.name, self.worker_id)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        drained = asyncio.Event()
        run_over = asyncio.Event()
        keeper = asyncio.get_running_loop().create_task(self._keep_lease(ctx, run_over))
        producer = asyncio.get_running_loop().create_task(
            self._produce(ctx, queue, drained), name=f"source-gen:{self.spec.name}"
        )
        producer.add_done_callback(lambda task: _hand_over_end(task, ctx, queue))
        self._producer = producer
        try:
            end = await self._flush_loop(queue, drained)
        except RETRYABLE_ERRORS:
            raise  # stopping while Redis is away: not a failure of the source
        except Exception as exc:  # Redis refused the events (WRONGTYPE, OOM...)
            end = _End(exc)
        finally:
            run_over.set()
            keeper.cancel()  # cuts short a renewal in flight, when redis-py lets it
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            producer, self._producer = self._producer, None
            if producer is not None:
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await producer
        if end.error is not None and not isinstance(end.error, asyncio.CancelledError):
            self.failed = end.error
            log.error(
                "source %s failed after %d events: %s: %s",
                self.spec.name,
                self.produced,
                type(end.error).__name__,
                end.error,
                exc_info=None if isinstance(end.error, SourceError) else end.error,
            )
            failure = {FAILED: f"{type(end.error).__name__}: {end.error}", "worker": self.worker_id}
            await self._redis(
                "recording its failure", lambda: self.redis.hset(self.state_key, mapping=failure)
            )
        elif end.error is None and not self._stopping.is_set() and not self._lost.is_set():
            ended = {DONE: str(time.time()), "worker": self.worker_id, "produced": self.produced}
            await self._redis(
                "recording its end", lambda: self.redis.hset(self.state_key, mapping=ended)
            )
            self._done = True
            log.info("source %s ended after %d events", self.spec.name, self.produced)
        await self._release_lease()

    def _call(self, ctx: SourceContext) -> Any:
        from topology.callables import import_callable

        fn = import_callable(self.spec.handler, self.topology.base_dir)
        try:
            params = [
                p
                for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
            ]
        except (TypeError, ValueError):
            params = []
        return fn(ctx) if params else fn()

    def _convert(self, item: Any) -> tuple[str, Any, str | None]:
        if not isinstance(item, Emit):
            raise SourceError(
                f"source {self.spec.name!r} yielded a {type(item).__name__}, not an Emit"
            )
        if item.stream is not None and item.stream != self.spec.stream:
            raise SourceError(
                f"source {self.spec.name!r} yielded an Emit for stream {item.stream!r}; "
                f"it writes to {self.spec.stream!r} only"
            )
        return (item.name, item.payload, item.topic if item.topic is not None else self.spec.topic)

    async def _produce(
        self, ctx: SourceContext, queue: asyncio.Queue[Any], drained: asyncio.Event
    ) -> None:
        """Run the generator, queueing converted events (and checkpoints) for the flusher.

        How it ended reaches the flusher through :func:`_hand_over_end`, not from here.
        """
        produced = self._call(ctx)
        if inspect.iscoroutine(produced):
            produced.close()
            raise SourceError(
                f"source {self.spec.name!r} is a coroutine function; a source yields "
                "its events: write it as an (async) generator"
            )
        if hasattr(produced, "__aiter__"):
            await self._produce_async(produced, ctx, queue, drained)
        elif hasattr(produced, "__iter__"):
            await self._produce_sync(iter(produced), ctx, queue, drained)
        else:
            raise SourceError(
                f"source {self.spec.name!r} returned a {type(produced).__name__}; "
                "a source is a (async) generator function"
            )

    async def _backpressure(self, queue: asyncio.Queue[Any], drained: asyncio.Event) -> None:
        if queue.qsize() >= _HIGH_WATER:
            drained.clear()
            await drained.wait()

    async def _produce_async(
        self,
        agen: AsyncIterator[Any],
        ctx: SourceContext,
        queue: asyncio.Queue[Any],
        drained: asyncio.Event,
    ) -> None:
        try:
            async for item in agen:
                if ctx._checkpoint is not None:
                    queue.put_nowait(_Checkpoint(ctx._checkpoint))
                    ctx._checkpoint = None
                queue.put_nowait(self._convert(item))
                await self._backpressure(queue, drained)
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _produce_sync(
        self,
        gen: Iterator[Any],
        ctx: SourceContext,
        queue: asyncio.Queue[Any],
        drained: asyncio.Event,
    ) -> None:
        sentinel = object()

        failure: list[BaseException] = []

        def pull() -> tuple[list[Any], bool]:
            """A chunk of what the generator yields; a generator that raises ends the
            chunk, whose events are still added (the error is raised after them)."""
            out: list[Any] = []
            deadline = time.monotonic() + _SYNC_FILL
            while len(out) < BATCH and not ctx.stop.is_set():
                try:
                    item = next(gen, sentinel)
                except Exception as exc:
                    failure.append(exc)
                    item = sentinel
                if ctx._checkpoint is not None:
                    out.append(_Checkpoint(ctx._checkpoint))
                    ctx._checkpoint = None
                if item is sentinel:
                    return out, True
                out.append(item)
                if time.monotonic() >= deadline:
                    break
            return out, False

        finished = False
        try:
            while not finished and not ctx.stop.is_set():
                chunk, finished = await asyncio.to_thread(pull)
                for item in chunk:
                    queue.put_nowait(item if isinstance(item, _Checkpoint) else self._convert(item))
                if failure:
                    raise failure[0]
                await self._backpressure(queue, drained)
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):  # still running in its thread: leave it
                    close()

    async def _flush_loop(self, queue: asyncio.Queue[Any], drained: asyncio.Event) -> _End:
        """Add queued events in batches until the producer ends; returns its end."""
        while True:
            item = await queue.get()
            batch: list[tuple[str, Any, str | None]] = []
            checkpoint: str | None = None
            end: _End | None = None
            while True:
                if isinstance(item, _End):
                    end = item
                    break
                if isinstance(item, _Checkpoint):
                    checkpoint = item.value
                else:
                    batch.append(item)
                if len(batch) >= BATCH or queue.empty():
                    break
                item = queue.get_nowait()
            if queue.qsize() < _HIGH_WATER // 2:
                drained.set()
            await self._flush(batch, checkpoint)
            if end is not None:
                return end

    async def _flush(
        self, batch: list[tuple[str, Any, str | None]], checkpoint: str | None
    ) -> None:
        """Add ``batch`` (held and retried while Redis is away), then save ``checkpoint``.

        Any other error (the key is not a stream, the server is out of memory...)
        fails the source rather than spinning on it.
        """
        if batch:
            try:
                await self._redis(
                    f"adding {len(batch)} events", lambda: self.stream.add_many(batch)
                )
            except RETRYABLE_ERRORS as exc:  # stopping while Redis is away
                log.error(
                    "source %s: %d events not added at shutdown: %s",
                    self.spec.name,
                    len(batch),
                    exc,
                )
                return
            self.produced += len(batch)
        if checkpoint is not None:
            await self._redis(
                "saving its checkpoint",
                lambda: self.redis.hset(self.state_key, CHECKPOINT, checkpoint),
            )
