"""Where a failed event waits and where it ends: the retry queue, and its dead letter.

A handler failure is counted in Redis (``HINCRBY`` on the sink's attempts hash,
so the count survives a restart and a redelivered event continues from it).
Under ``retry.max_attempts`` the event waits in the actor's :class:`RetryQueue`
for its backoff while the actor keeps reading; at the limit (or at once for a
contract violation) it is dead-lettered: its commit writes the dead letter and
acks it. A Redis error in the commit path is another matter: the same step is
run again (:class:`RedisRetry`), which the commit's fencing makes safe.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from topology.config.model import SinkSpec
from topology.redact import redact_text
from topology.runtime.commit import ERROR_BACKOFF_FIRST, Add, Entry
from topology.runtime.handlers import Failure
from topology.runtime.logs import event_fields
from topology.runtime.metrics import Metrics
from topology.streams import (
    Backoff,
    Event,
    describe_error,
    entry_fields,
    is_refused_for_now,
    is_routine_redirect,
    is_transient,
    pause,
)

__all__ = [
    "ERROR_BACKOFF_FIRST",
    "TOUCH_SCRIPT",
    "FailurePlan",
    "RedisRetry",
    "Retry",
    "RetryQueue",
]

log = logging.getLogger("topology.runtime")

T = TypeVar("T")

#: Backoff after a Redis error in the commit path (from ERROR_BACKOFF_FIRST),
#: doubling up to the cap.
ERROR_BACKOFF_CAP = 5.0
#: Tries of a Redis step once the actor is told to stop, before it gives up (the
#: events stay pending for redelivery).
TRIES_WHEN_STOPPING = 3

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


class Retry(NamedTuple):
    """An event to handle again at ``due`` (monotonic), after ``attempts`` failed ones."""

    due: float
    event: Event
    attempts: int


class RetryQueue:
    """Events waiting for their backoff, earliest first; pending on purpose meanwhile.

    A backoff may outlast the ack grace, and an event idle that long would be
    claimed by another consumer (or by this one, as a duplicate): the queue
    touches its events (:data:`TOUCH_SCRIPT`) every ``touch_period`` to keep them.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Event]] = []
        self._seq = itertools.count()  # ties: first queued, first due
        self._next_touch = 0.0
        self._owner: tuple[Any, str, str, Callable[[str], str]] | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def owned_by(
        self, redis: Any, group: str, consumer: str, stream_key: Callable[[str], str]
    ) -> None:
        """Whose pending events these are, for the touches."""
        self._owner = (redis.register_script(TOUCH_SCRIPT), group, consumer, stream_key)

    def push(self, retries: Iterable[Retry]) -> None:
        for due, event, _ in retries:
            heapq.heappush(self._heap, (due, next(self._seq), event))

    def pop_due(self) -> list[Event]:
        now = time.monotonic()
        heap = self._heap
        due: list[Event] = []
        while heap and heap[0][0] <= now:
            due.append(heapq.heappop(heap)[2])
        return due

    def held(self) -> set[tuple[str, str]]:
        """``(stream, id)`` of the waiting events."""
        return {(event.stream_name, event.id) for _, _, event in self._heap}

    async def wake_in(self, touch_period: float) -> float | None:
        """Seconds until the loop must act for the queue (None: it is empty); touches
        the waiting events when their period is up."""
        if not self._heap:
            return None
        now = time.monotonic()
        if now >= self._next_touch:
            await self._touch()
            self._next_touch = now + touch_period
        return max(0.0, min(self._heap[0][0], self._next_touch) - now)

    async def _touch(self) -> None:
        if self._owner is None:
            return
        script, group, consumer, stream_key = self._owner
        by_key: dict[str, list[str]] = {}
        for _, _, event in self._heap:
            by_key.setdefault(stream_key(event.stream_name), []).append(event.id)
        args: list[Any] = [group, consumer]
        for ids in by_key.values():
            args.append(len(ids))
            args.extend(ids)
        try:
            await script(keys=list(by_key), args=args)
        except Exception as exc:  # worst case the claim pass moves them: still fenced
            log.debug("sink %s: touching events waiting for a retry failed: %r", group, exc)


class RedisRetry:
    """Runs a Redis step again while the server is away or refuses it, with a capped
    doubling backoff.

    Safe for the commit because it is fenced: a commit whose reply was lost may
    have run, and its events, no longer pending on this consumer, are skipped as
    conflicts by the re-run. A server that answers but refuses writes for a while
    (memory full, persistence failing, a replica) is retried the same way: the
    batch stays in hand, and :attr:`failing` tells the actor to read nothing new
    meanwhile, so the backlog waits in Redis rather than piling up as pending
    entries of a live consumer. ``give_up`` (given the tries so far) ends the
    retrying: the step's error is raised and its events stay pending.

    The log says it once per streak: a WARNING naming the error when it starts,
    an INFO with its length and tries when a step goes through again.
    """

    def __init__(self, name: str, give_up: Callable[[int], bool]) -> None:
        self.name = name
        self.give_up = give_up
        #: A streak of failures is under way (read by the actor, written by any lane).
        self.failing = False
        self._streak_started = 0.0
        self._streak_tries = 0

    @staticmethod
    def backoff() -> Backoff:
        """The delays between tries (also those of the actor's failed reads)."""
        return Backoff(ERROR_BACKOFF_FIRST, ERROR_BACKOFF_CAP)

    def _failed(self, backoff: Backoff, exc: BaseException) -> float:
        """The delay before the next try; raises ``exc`` when it is not worth another."""
        if not is_transient(exc) or self.give_up(backoff.failures + 1):
            raise exc
        delay = backoff.next()
        if is_routine_redirect(exc):  # a slot moving: the next try follows it
            log.debug("actor %s: Redis step redirected (%s)", self.name, exc)
            return min(delay, ERROR_BACKOFF_FIRST)
        self._streak_tries += 1
        if not self.failing:
            self.failing = True
            self._streak_started = time.monotonic()
            log.warning(
                "actor %s: Redis %s (%s); holding the batch and retrying (next in %.1fs)",
                self.name,
                "refuses writes" if is_refused_for_now(exc) else "is unreachable",
                redact_text(describe_error(exc)),
                delay,
            )
        else:
            log.debug("actor %s: Redis step failed again (%r)", self.name, exc)
        return delay

    def _succeeded(self) -> None:
        if self.failing:
            self.failing = False
            log.info(
                "actor %s: Redis accepts again after %.1fs and %d retries",
                self.name,
                time.monotonic() - self._streak_started,
                self._streak_tries,
            )
            self._streak_tries = 0

    async def run(self, fn: Callable[[Any], Awaitable[T]], arg: Any) -> T:
        backoff = self.backoff()
        while True:
            try:
                result = await fn(arg)
            except Exception as exc:
                delay = self._failed(backoff, exc)
            else:
                self._succeeded()
                return result
            await pause(delay)

    def run_blocking(self, fn: Callable[[Any], T], arg: Any) -> T:
        """:meth:`run` on a thread (the actor's handler thread): the sleeps block it."""
        backoff = self.backoff()
        while True:
            try:
                result = fn(arg)
            except Exception as exc:
                delay = self._failed(backoff, exc)
            else:
                self._succeeded()
                return result
            time.sleep(delay)  # a backoff on this actor's own thread


class FailurePlan:
    """What becomes of a chunk's failed events, given their attempt counts."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def plan(
        self,
        spec: SinkSpec,
        failed: Sequence[tuple[Event, Failure]],
        counts: Sequence[int],
        *,
        stopping: bool,
    ) -> tuple[list[Entry], list[Retry]]:
        """The dead letters to commit and the retries to queue.

        While stopping, a retryable failure under the limit is neither: the event
        stays pending and continues from its count after the restart.
        """
        limit = spec.retry.max_attempts
        dead: list[Entry] = []
        retries: list[Retry] = []
        now = time.monotonic()
        for (event, failure), attempts in zip(failed, counts, strict=True):
            if not failure.retryable or attempts >= limit:
                dead.append(self.dead_letter(spec, event, failure, attempts))
            elif not stopping:
                _log_retry(spec, event, failure, attempts)
                retries.append(Retry(now + spec.retry.delay(attempts), event, attempts))
        self.metrics.add_retries(spec.name, len(retries))
        return dead, retries

    def dead_letter(self, spec: SinkSpec, event: Event, failure: Failure, attempts: int) -> Entry:
        """The commit entry of an exhausted event: its dead letter, or a plain ack."""
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
                extra=event_fields(spec.name, event),
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
            extra=event_fields(spec.name, event),
        )
        fields = entry_fields(event.name, event.payload, event.topic)
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


def _log_retry(spec: SinkSpec, event: Event, failure: Failure, attempts: int) -> None:
    log.warning(
        "sink %s: handler failed on %s/%s (attempt %d of %d): %s: %s",
        spec.name,
        event.stream_name,
        event.id,
        attempts,
        spec.retry.max_attempts,
        failure.error_type,
        failure.message,
        extra=event_fields(spec.name, event),
    )
