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

Nothing is ever sent on a transport being cut. On CPython 3.12.x and 3.13.0,
``writelines`` on an aborted transport either raises ``AttributeError`` or
registers a writer for the dead socket that outlives it, and a later socket
given the same descriptor then never sees its connect complete (the read
waits out the connect timeout). Hence: a link is not cut while redis-py sets
the connection up (its handshake sends several commands): an abort then only
marks the call, which stops before sending the read; and a call first replaces
a connection whose transport is closing (cut earlier, or lost while idle).
Whatever a cut read raises, the caller gets ``ReadInterrupted``, so it reads
again at once instead of backing off as from a server that went away.
"""

from __future__ import annotations

import contextlib
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from topology.streams._deadline import missed
from topology.streams._wire import packed_or_none

__all__ = ["ReadInterrupted", "ReadLink", "new_link"]


class ReadInterrupted(RedisConnectionError):
    """The read was interrupted (``ReadLink.abort``) before it was sent."""


class ReadLink:
    """One redis.asyncio connection used for one blocking command at a time."""

    __slots__ = ("_aborted", "_connecting", "_connection", "busy", "deadline")

    def __init__(self, connection: Any, deadline: float | None = None) -> None:
        self._connection = connection
        self._aborted = False
        self._connecting = False
        self.busy = False
        #: Seconds a command may go unanswered (the connection's socket timeout).
        self.deadline = deadline

    @property
    def cut(self) -> bool:
        """Whether the connection's transport is closed or closing (cut, or lost)."""
        transport = self._transport()
        return transport is not None and transport.is_closing()

    def _transport(self) -> Any:
        # redis.asyncio keeps the stream writer in ``_writer`` (4.x to 8.x).
        writer = getattr(self._connection, "_writer", None)
        return getattr(writer, "transport", None)

    async def call(self, *args: Any) -> Any:
        """Send ``args`` (command name as bytes: no reply callback) and return the raw reply."""
        connection = self._connection
        self._aborted = False
        self.busy = True
        try:
            if self.cut:  # cut during an earlier call, or lost while idle: never send on it
                await connection.disconnect(nowait=True)
            if not connection.is_connected:
                self._connecting = True
                try:
                    await connection.connect()
                finally:
                    self._connecting = False
            if self._aborted:  # aborted while connecting: the read is not sent
                raise ReadInterrupted("read interrupted")
            await self._send(args)
            return await connection.read_response()
        except ResponseError:  # the server's reply, whether cut or not
            raise
        except RedisTimeoutError as exc:
            if self._aborted:
                raise ReadInterrupted("read interrupted") from exc
            if self.deadline is None:
                raise
            # Past its deadline: redis-py has dropped the connection; the next call
            # makes a new one.
            raise missed(connection, self.deadline, "a blocking read") from None
        except Exception as exc:
            if not self._aborted or isinstance(exc, ReadInterrupted):
                raise
            raise ReadInterrupted("read interrupted") from exc
        finally:
            self.busy = False

    async def _send(self, args: tuple[Any, ...]) -> None:
        connection = self._connection
        packed = packed_or_none(args)
        if packed is None:
            await connection.send_command(*args, check_health=False)
        else:
            await connection.send_packed_command(packed, check_health=False)

    def abort(self) -> None:
        """End the command in flight now: cut the transport (the owner reconnects later)."""
        if not self.busy:
            return
        self._aborted = True
        if self._connecting:  # the handshake may still send: the call stops after it
            return
        # The read in flight sees end-of-stream and disconnects the connection itself.
        transport = self._transport()
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
