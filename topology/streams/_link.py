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

redis-py connects the link (handshake, AUTH, TLS, SELECT: all its options
apply); then the link takes the transport over with a protocol of its own that
feeds hiredis as bytes arrive and hands the reply to the waiting read. That
skips redis.asyncio's stream reader and reply layers, a large share of what a
read costs the event loop when reads return one event each (light load).
RESP3 connections (push messages may arrive between replies) stay on redis-py's
own reader.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis is a dependency of the engine
    hiredis = None

try:  # hiredis packs a command in C; redis.asyncio's Python packer costs ~1 µs an argument
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency of the engine
    _pack_command = None

__all__ = ["ReadInterrupted", "ReadLink", "new_link"]


class ReadInterrupted(RedisConnectionError):
    """The read was interrupted (``ReadLink.abort``) before it was sent."""


#: What the reply protocol's hiredis reader returns while a reply is incomplete.
_MORE = object()


class _ReplyProtocol(asyncio.Protocol):
    """Replies of a link's transport, parsed as they arrive, one waiter at a time."""

    def __init__(self, reply_error: Any) -> None:
        self.reader = hiredis.Reader(
            protocolError=InvalidResponse, replyError=reply_error, notEnoughData=_MORE
        )
        self.waiter: asyncio.Future[Any] | None = None
        self.lost: BaseException | None = None

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiter = self.waiter
        if waiter is None:
            return
        try:
            reply = self.reader.gets()
        except Exception as exc:  # a protocol error: the stream cannot be trusted
            self.waiter = None
            if not waiter.done():
                waiter.set_exception(exc)
            return
        if reply is not _MORE:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = RedisConnectionError("Connection closed by server.")
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(self.lost)


class ReadLink:
    """One redis.asyncio connection used for one blocking command at a time."""

    __slots__ = ("_aborted", "_connection", "_plain", "_protocol", "_transport", "busy")

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._aborted = False
        #: The taken-over transport's protocol (None: not connected, or redis-py reads).
        self._protocol: _ReplyProtocol | None = None
        self._transport: Any = None
        #: Connected, and replies read by redis-py (no take-over possible).
        self._plain = False
        self.busy = False

    async def call(self, *args: Any) -> Any:
        """Send ``args`` (command name as bytes: no reply callback) and return the raw reply."""
        connection = self._connection
        self._aborted = False
        self.busy = True
        try:
            protocol = self._protocol
            usable = protocol is not None and protocol.lost is None
            if not usable and not (self._plain and connection.is_connected):
                protocol = await self._connect()
                if self._aborted:  # aborted while connecting (no transport to cut yet)
                    raise ReadInterrupted("read interrupted")
            packed = None
            if _pack_command is not None:
                try:
                    packed = _pack_command(args)
                except TypeError:  # an argument hiredis cannot pack: redis-py encodes it
                    packed = None
            if protocol is None:  # redis-py's own reader (RESP3, no hiredis)
                if packed is None:
                    await connection.send_command(*args, check_health=False)
                else:
                    await connection.send_packed_command(packed, check_health=False)
                return await connection.read_response()
            return await self._call_fast(protocol, packed or connection.pack_command(*args))
        finally:
            self.busy = False

    async def _call_fast(self, protocol: _ReplyProtocol, packed: bytes | list[bytes]) -> Any:
        waiter = asyncio.get_running_loop().create_future()
        protocol.waiter = waiter
        transport = self._transport
        try:
            if isinstance(packed, bytes):
                transport.write(packed)
            else:
                transport.writelines(packed)
            reply = await waiter
        except BaseException:
            # Cancelled or cut with the reply on its way: the stream is out of step
            # (a late reply would answer the next command), so it goes.
            self._drop()
            raise
        if isinstance(reply, ResponseError):
            raise reply  # a complete error reply: the link stays usable
        return reply

    async def _connect(self) -> _ReplyProtocol | None:
        """Connect with redis-py (its handshake), then take the transport over."""
        connection = self._connection
        self._drop()
        self._plain = False
        await connection.disconnect(nowait=True)  # whatever is left of the last one
        await connection.connect()
        writer = getattr(connection, "_writer", None)
        transport = getattr(writer, "transport", None)
        parser = getattr(connection, "_parser", None)
        if (
            hiredis is None
            or transport is None
            or parser is None
            or str(getattr(connection, "protocol", 2)) == "3"
        ):
            self._plain = True
            return None
        protocol = _ReplyProtocol(parser.parse_error)
        transport.set_protocol(protocol)
        self._protocol = protocol
        self._transport = transport
        return protocol

    def _drop(self) -> None:
        """Forget the taken-over transport (cut: the next call connects again)."""
        transport, self._transport = self._transport, None
        self._protocol = None
        if transport is not None:
            transport.abort()

    def abort(self) -> None:
        """End the command in flight now: cut the transport (the owner reconnects later)."""
        if not self.busy:
            return
        self._aborted = True
        transport = self._transport
        if transport is None:
            # redis.asyncio keeps the stream writer in ``_writer`` (4.x to 8.x); the
            # read in flight sees end-of-stream and disconnects the connection itself.
            writer = getattr(self._connection, "_writer", None)
            transport = getattr(writer, "transport", None)
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        """Drop the connection (idempotent, never blocks on the network)."""
        self._drop()
        with contextlib.suppress(Exception):
            await self._connection.disconnect(nowait=True)


def new_link(redis: Any, node: Any = None) -> ReadLink | None:
    """A link with the settings of the client's connections (or of cluster ``node``'s).

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
    try:
        return ReadLink(connection_class(**kwargs))
    except TypeError:  # a connection class with other settings: use the pool
        return None
