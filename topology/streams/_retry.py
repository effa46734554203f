"""When a step that talks to Redis is worth trying again, and how long to wait first."""

from __future__ import annotations

import asyncio
import contextlib
import random
import re

from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "RETRYABLE_ERRORS",
    "Backoff",
    "describe_error",
    "is_refused_for_now",
    "is_routine_redirect",
    "is_transient",
    "pause",
]

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


#: Error replies of a server that answers but refuses writes for a while: memory
#: full (OOM), persistence failing (MISCONF), a replica (READONLY), too few
#: replicas (NOREPLICAS), a slow script elsewhere (BUSY), a failover (MASTERDOWN).
#: redis-py raises some as classes of their own, the others as ResponseError with
#: the code first; inside a script's error the code follows a dash.
REFUSED_FOR_NOW_ERRORS: tuple[type[BaseException], ...] = (
    OutOfMemoryError,
    ReadOnlyError,
    MasterDownError,
)
_REFUSED_CODES = re.compile(
    r"(?:^|-)(?:OOM|MISCONF|READONLY|NOREPLICAS|BUSY|MASTERDOWN|LOADING|TRYAGAIN|CLUSTERDOWN)\b"
)


def is_refused_for_now(exc: BaseException) -> bool:
    """The server refused the command for a reason that passes (see above)."""
    if isinstance(exc, REFUSED_FOR_NOW_ERRORS):
        return True
    return isinstance(exc, ResponseError) and _REFUSED_CODES.search(str(exc)) is not None


#: redis-py's cluster client giving up on a command after following redirections
#: or reconnecting too often: a cluster changing its slots or its masters.
_CLUSTER_IN_FLUX = (
    "TTL exhausted",
    "slots cache",
    "cannot be connected",
    "MOVED",
    "ASK",
    "CLUSTERDOWN",
    "TRYAGAIN",
)


def is_transient(exc: BaseException) -> bool:
    """Worth trying the same step again later: the server is away or refuses for now,
    or a cluster is moving slots or electing a master."""
    if isinstance(exc, RETRYABLE_ERRORS) or is_refused_for_now(exc) or is_routine_redirect(exc):
        return True
    return type(exc) is RedisClusterException and any(m in str(exc) for m in _CLUSTER_IN_FLUX)


def is_routine_redirect(exc: BaseException) -> bool:
    """A MOVED or ASK: the cluster client follows them; they are no one's error."""
    return isinstance(exc, (MovedError, AskError))


def describe_error(exc: BaseException) -> str:
    """``Type: message`` (redis-py's message names the node for connection errors;
    a cluster error gets the node it was sent to when redis-py says)."""
    text = str(exc) or "no message"
    node = getattr(exc, "node", None) or getattr(exc, "host", None)
    if node is not None and str(node) not in text:
        text = f"{text} (node {node})"
    return f"{type(exc).__name__}: {text}"


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
