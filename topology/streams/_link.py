"""``ReadLink``: a connection a consumer owns for its blocking reads, cut at will.

Cancelling a task blocked in redis.asyncio is not a reliable interrupt: a
cancellation that lands while the command is being written (redis-py wraps the
write in ``asyncio.wait_for``, which on Python 3.11 returns the write's result
and drops the cancellation when both complete in the same loop step) is lost,
and the read then blocks for the whole BLOCK. A consumer therefore reads on a
connection of its own, outside the client's pool, and interrupts a read by
aborting that connection's transport: whatever the read is doing (connecting,
writing, waiting), it ends at once with a connection error. The next read
reconnects. Entries the server handed to an aborted read are found again by the
consumer (see ``Sink._after_interrupted_read``).

The link's reads have a deadline of their own (:mod:`._deadline`): the BLOCK
plus a margin. A read still unanswered then is on a connection that stopped
forwarding; the link drops it and the consumer reads again on a new one.
"""

from __future__ import annotations

import contextlib
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from topology.streams._deadline import missed
from topology.streams._wire import packed_or_none

__all__ = ["ReadInterrupted", "ReadLink", "new_link"]


class ReadInterrupted(RedisConnectionError):
    """The read was interrupted (``ReadLink.abort``) before it was sent."""


class ReadLink:
    """One redis.asyncio connection used for one blocking command at a time."""

    __slots__ = ("_aborted", "_connection", "busy", "deadline")

    def __init__(self, connection: Any, deadline: float | None = None) -> None:
        self._connection = connection
        self._aborted = False
        self.busy = False
        #: Seconds a command may go unanswered (the connection's socket timeout).
        self.deadline = deadline

    async def call(self, *args: Any) -> Any:
        """Send ``args`` (command name as bytes: no reply callback) and return the raw reply."""
        connection = self._connection
        self._aborted = False
        self.busy = True
        try:
            if not connection.is_connected:
                await connection.connect()
            if self._aborted:  # aborted while connecting (no transport to cut yet)
                raise ReadInterrupted("read interrupted")
            packed = packed_or_none(args)
            if packed is None:
                await connection.send_command(*args, check_health=False)
            else:
                await connection.send_packed_command(packed, check_health=False)
            return await connection.read_response()
        except RedisTimeoutError:
            # redis-py has dropped the connection; the next call makes a new one.
            if self.deadline is None:
                raise
            raise missed(connection, self.deadline, "a blocking read") from None
        finally:
            self.busy = False

    def abort(self) -> None:
        """End the command in flight now: cut the transport (the owner reconnects later)."""
        if not self.busy:
            return
        self._aborted = True
        # redis.asyncio keeps the stream writer in ``_writer`` (4.x to 8.x); the
        # read in flight sees end-of-stream and disconnects the connection itself.
        writer = getattr(self._connection, "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        """Drop the connection (idempotent, never blocks on the network)."""
        with contextlib.suppress(Exception):
            await self._connection.disconnect(nowait=True)


def new_link(redis: Any, node: Any = None, deadline: float | None = None) -> ReadLink | None:
    """A link with the settings of the client's connections (or of cluster ``node``'s).

    ``deadline`` (seconds) replaces their socket timeout: a blocking read needs
    its BLOCK plus a margin, not the bound of a plain command.

    None when the client exposes no way to make one (then the consumer falls
    back to the shared pool and task cancellation). The connection does not
    retry by itself: the consumer's read loop already retries with backoff, and
    an inner retry would reconnect (and block again) after an interrupt.
    """
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    source = node if node is not None else getattr(redis, "connection_pool", None)
    connection_class = getattr(source, "connection_class", None)
    kwargs = getattr(source, "connection_kwargs", None)
    if connection_class is None or not isinstance(kwargs, dict):
        return None
    kwargs = dict(kwargs)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    if deadline is not None:
        kwargs["socket_timeout"] = deadline
        if "orig_socket_timeout" in kwargs:  # what a maintenance notice restores
            kwargs["orig_socket_timeout"] = deadline
    try:
        return ReadLink(connection_class(**kwargs), deadline)
    except TypeError:  # a connection class with other settings: use the pool
        return None
