"""When a step that talks to Redis is worth trying again, and how long to wait first."""

from __future__ import annotations

import asyncio
import contextlib
import random

from redis.exceptions import BusyLoadingError, ClusterDownError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["RETRYABLE_ERRORS", "Backoff", "pause"]

#: Errors of a server that is away for a moment (restarting, loading its data, a
#: cluster failing over): the step is tried again after a backoff.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ClusterDownError,
    TryAgainError,
    OSError,
    asyncio.TimeoutError,
)


class Backoff:
    """Capped doubling delays (``first``, ``2 * first``, ... up to ``cap``).

    ``jitter`` draws each delay from its upper half, so clients that lost the
    server together do not all come back at the same instant.
    """

    def __init__(self, first: float, cap: float, *, jitter: bool = False) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.failures = 0  # in a row, since the last reset

    def next(self) -> float:
        """Count one more failure; the delay before the next try."""
        delay = min(self.cap, self.first * 2**self.failures)
        self.failures += 1
        return delay * random.uniform(0.5, 1.0) if self.jitter else delay

    def reset(self) -> None:
        """A try succeeded: the next failure starts from ``first`` again."""
        self.failures = 0


async def pause(delay: float, wake: asyncio.Event | None = None) -> None:
    """Wait ``delay`` seconds, or less if ``wake`` is set meanwhile (a stop, a change)."""
    if wake is None:
        await asyncio.sleep(delay)  # a backoff, not a synchronisation
        return
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(wake.wait(), delay)
