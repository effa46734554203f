"""A handler call that takes too long, and an event that keeps coming back.

``timeout`` (a sink option) bounds each handler call. An async call past it is
cancelled. A sync call cannot be interrupted from outside in Python, so the
batch runs on a helper thread while the actor's thread watches the clock: a call
past its bound is *abandoned* on that thread (it runs on, its result is
dropped) and the rest of the batch goes on on a fresh thread. Either way the
call is a failure, :class:`HandlerTimeout`, retried and dead-lettered like any
other, so one stuck event no longer holds its batch-mates nor its sink.

``max_deliveries`` bounds how often one event is handed to a handler, by Redis's
delivery count: an event past it is dead-lettered without a call
(:class:`TooManyDeliveries`), so one that crashes every worker taking it cannot
go round the deployment forever.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from topology.runtime.handlers import (
    ContractError,
    Failure,
    HandlerTimeout,
    TooManyDeliveries,
    route_result,
)
from topology.streams import Event

__all__ = ["TimedBatches", "isolate_redelivered", "over_delivered"]

log = logging.getLogger("topology.runtime")

#: Keeps call i's outcome (see :class:`_Job`).
Recorder = Callable[[int, Any], None]


def over_delivered(events: Sequence[Event], limit: int) -> dict[int, Failure] | None:
    """The failures of the events delivered more than ``limit`` times, by index; None if none."""
    over: dict[int, Failure] | None = None
    for i, event in enumerate(events):
        if event.deliveries > limit:
            over = over or {}
            error = TooManyDeliveries(
                f"delivered {event.deliveries} times (max_deliveries {limit}): "
                "not handed to the handler again"
            )
            over[i] = Failure(error, retryable=False)
    return over


class _Job:
    """One run of a batch's calls (from ``start``) on a helper thread, watched from outside.

    ``call(i)`` makes call i (unlocked: it is what may hang); ``record(i, value)`` keeps
    what it gave, under the lock and only if the call was not abandoned meanwhile, so an
    abandoned call never writes into the batch it was taken off.
    """

    def __init__(
        self, count: int, call: Callable[[int], Any], record: Recorder, start: int
    ) -> None:
        self.count, self.call, self.record = count, call, record
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.index = start  # the call in progress (count: all done)
        self.began = time.monotonic()
        self.abandoned = False

    def run(self) -> None:
        """On the helper thread: the calls, each recorded unless abandoned meanwhile."""
        for i in range(self.index, self.count):
            with self.lock:
                if self.abandoned:
                    return
                self.index, self.began = i, time.monotonic()
            value = self.call(i)
            with self.lock:
                if self.abandoned:  # too late: its slot already holds the timeout
                    return
                self.record(i, value)
                self.index = i + 1
        self.done.set()

    def watch(self, seconds: float) -> int | None:
        """Wait for the run; the index of a call abandoned past ``seconds``, or None."""
        while True:
            with self.lock:
                index, began = self.index, self.began
            if self.done.wait(max(0.0, began + seconds - time.monotonic())):
                return None
            with self.lock:
                if self.done.is_set() or (self.index, self.began) != (index, began):
                    continue
                if index >= self.count:
                    continue
                self.abandoned = True
                return index


def _call_stateless(fn: Callable[[Event], Any], event: Event, outputs: tuple[str, ...]) -> Any:
    """One stateless call: its outcome, or the awaitable it returned (awaited on the loop)."""
    try:
        result = fn(event)
        if type(result) not in (list, tuple, type(None)) and inspect.isawaitable(result):
            return result
        return route_result(result, outputs)
    except ContractError as exc:
        return Failure(exc, retryable=False)
    except (Exception, SystemExit) as exc:  # sys.exit() in a handler is its failure
        return Failure(exc, retryable=True)


class TimedBatches:
    """Runs a sync handler's batches with a bound on each call (see the module doc).

    Called as the plain batch function (same arguments, same ``(results, awaitable
    indexes)``) for a stateless sink; :meth:`run` is the same for any calls (a
    stateful sink's). Called from the actor's thread (or an executor's), which only
    waits; the calls run on a helper thread per batch.
    """

    def __init__(self, seconds: float, name: str = "handler") -> None:
        self.seconds = seconds
        self.name = name
        #: Calls abandoned on their thread so far (those threads may still run).
        self.abandoned = 0

    def __call__(
        self, fn: Callable[[Event], Any], events: Sequence[Event], outputs: tuple[str, ...]
    ) -> tuple[list[Any], list[int]]:
        results: list[Any] = [None] * len(events)
        pending: list[int] = []

        def record(i: int, value: Any) -> None:
            results[i] = value
            if not isinstance(value, (list, Failure)):
                pending.append(i)  # an awaitable: awaited on the loop by the caller

        self.run(events, lambda i: _call_stateless(fn, events[i], outputs), record)
        return results, pending

    def run(self, events: Sequence[Event], call: Callable[[int], Any], record: Recorder) -> None:
        """``record(i, call(i))`` for each event in order, each call bounded: one past the
        bound is abandoned, recorded as a :class:`HandlerTimeout` failure, and the rest
        go on on a new thread."""
        start = 0
        while start < len(events):
            job = _Job(len(events), call, record, start)
            threading.Thread(target=job.run, name=f"ponos-{self.name}", daemon=True).start()
            stuck = job.watch(self.seconds)
            if stuck is None:
                break
            self.abandoned += 1
            event = events[stuck]
            log.warning(
                "%s: handler call on %s/%s took longer than %gs: abandoned on its thread "
                "(%d so far), the batch goes on on a new one",
                self.name,
                event.stream_name,
                event.id,
                self.seconds,
                self.abandoned,
            )
            error = HandlerTimeout(
                f"handler call took longer than {self.seconds:g}s (abandoned on its thread)"
            )
            record(stuck, Failure(error, retryable=True))
            start = stuck + 1


#: Deliveries after which an event is suspect: handled and committed on its own. One
#: redelivery is routine (a worker stopped, a connection stalled): those stay batched.
SUSPECT_AFTER = 2


def isolate_redelivered(events: list[Event]) -> list[list[Event]]:
    """``events`` in chunks to handle and commit one after the other.

    An event that keeps coming back may be what crashes the workers that take
    it. Left in one chunk with the events read beside it, a crash on it sends
    them all back together, again and again, until ``max_deliveries``
    dead-letters the lot. So the others stay together (the common case: one
    chunk, as read) and each suspect gets a chunk of its own, committed before
    the next is handled. Their order rotates with their delivery count, so an
    event stuck behind a crashing one is handled first on a later delivery.
    """
    again = [e for e in events if e.deliveries > SUSPECT_AFTER]
    if not again:
        return [events]
    fresh = [e for e in events if e.deliveries <= SUSPECT_AFTER]
    turn = max(e.deliveries for e in again) % len(again)
    again = again[turn:] + again[:turn]
    return ([fresh] if fresh else []) + [[e] for e in again]
