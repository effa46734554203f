"""Deadlines: how long a Redis call may go unanswered before its connection is dropped.

A connection can stop answering without closing: a NAT or load balancer that
forgot the flow, a stuck proxy, a failover behind a virtual IP. The socket
stays open and TCP keepalive sees a live peer (the box in the middle answers
the probes), so a call without a deadline waits forever. Every call therefore
has one: a plain command the client's ``socket_timeout``, a blocking read its
BLOCK plus that margin. A call past its deadline drops its connection (a reply
may still come on it, so it can never be reused) and the caller carries on with
a new one. The warning is said where the connection is dropped, hence once per
connection.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "DEFAULT_TIMEOUT",
    "DeadlineExceeded",
    "after_failure",
    "drop_idle_connections",
    "missed",
    "node_of",
    "opened_before_a_stall",
    "read_deadline",
]

log = logging.getLogger("topology.streams")

#: The margin of a client that sets no ``socket_timeout`` of its own.
DEFAULT_TIMEOUT = 10.0


class DeadlineExceeded(RedisTimeoutError):
    """A call got no reply within its deadline; its connection was dropped.

    A ``TimeoutError`` of redis-py's, so whatever retries a timed-out call
    (the consumers' read loops, the commit's fenced retry) retries this one.
    """

    def __init__(self, node: str, seconds: float, what: str) -> None:
        self.node = node
        self.seconds = seconds
        super().__init__(
            f"{what} got no reply from Redis at {node} within {seconds:g}s: "
            "connection dropped, a new one is used"
        )


def node_of(connection: Any) -> str:
    """``host:port`` (or the socket path) a redis-py connection talks to: no credentials."""
    path = getattr(connection, "path", None)
    if path:
        return str(path)
    return f"{getattr(connection, 'host', '?')}:{getattr(connection, 'port', '?')}"


#: When a call to each node last missed its deadline (monotonic seconds).
_missed_at: dict[str, float] = {}


def missed(connection: Any, seconds: float, what: str) -> DeadlineExceeded:
    """The error to raise for a call on ``connection`` past its deadline, said once."""
    node = node_of(connection)
    _missed_at[node] = time.monotonic()
    exc = DeadlineExceeded(node, seconds, what)
    log.warning("%s", exc)
    return exc


def opened_before_a_stall(connection: Any, opened: float) -> bool:
    """Whether a call to ``connection``'s node missed its deadline since ``opened``.

    A connection kept aside (a committer's own) then likely shares the stalled
    path: reconnecting before using it costs a handshake, not a whole deadline.
    """
    return _missed_at.get(node_of(connection), 0.0) > opened


def read_deadline(block: float, margin: float | None) -> float:
    """The deadline of a blocking read: its BLOCK, plus the client's own bound on a reply."""
    return block + (margin if margin else DEFAULT_TIMEOUT)


async def drop_idle_connections(redis: Any) -> None:
    """Close the client's idle pooled connections after one of them missed a deadline.

    Connections opened before a path failure share it: the next caller would
    pick a frozen one and wait a whole deadline again. Closed, they reconnect
    on their next use. Best effort: a client of an unknown kind keeps its own.
    """
    with contextlib.suppress(Exception):
        get_nodes = getattr(redis, "get_nodes", None)
        if get_nodes is not None:  # a cluster client: every node's free connections
            for node in get_nodes():
                await node.disconnect_free_connections()
            return
        pool = getattr(redis, "connection_pool", None)
        if pool is not None:
            await pool.disconnect(inuse_connections=False)


async def after_failure(redis: Any, exc: BaseException) -> None:
    """What a caller owes the client after a failed call: idle connections go when
    the call missed its deadline (see :func:`drop_idle_connections`)."""
    if isinstance(exc, RedisTimeoutError):
        await drop_idle_connections(redis)
