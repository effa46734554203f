"""The entry point: a redis.asyncio client plus the key prefix."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import AskError, ClusterDownError, MovedError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from topology.streams._deadline import DeadlineExceeded, drop_idle_connections, missed
from topology.streams._keys import DEFAULT_PREFIX, StreamKeys

if TYPE_CHECKING:
    from topology.streams._stream import Stream

__all__ = ["AddOutcomeUnknown", "Connection"]


class AddOutcomeUnknown(RedisConnectionError):
    """The connection failed after XADDs were sent: they may or may not have been added.

    Raised instead of re-sending them (which redis-py's default retry policy
    would do): a retried XADD whose first attempt did reach the server adds the
    event twice, with two different ids. Whoever added the events decides: check
    the stream, add again if a duplicate is acceptable, or give up.
    """

    def __init__(self, stream_key: str, count: int, cause: BaseException) -> None:
        self.stream_key = stream_key
        self.count = count
        super().__init__(
            f"connection lost after sending {count} XADD(s) to {stream_key!r} "
            f"({type(cause).__name__}: {cause}): they may or may not have been added; "
            "not retried, since a retried XADD can add a duplicate"
        )


class Connection:
    """Streams on one Redis (any ``redis.asyncio`` client returning bytes).

    The client must not decode responses: payloads are arbitrary bytes, and
    decoding them would fail on binary data (or silently mangle it).
    """

    __slots__ = ("cluster", "keys", "redis")

    def __init__(self, redis: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        get_encoder = getattr(redis, "get_encoder", None)
        if get_encoder is not None and getattr(get_encoder(), "decode_responses", False):
            raise ValueError(
                "topology.streams needs a client with decode_responses=False: payloads are bytes"
            )
        self.redis = redis
        self.keys = StreamKeys(prefix)
        #: A Redis Cluster client: multi-key reads go per hash slot, raw commands per node.
        self.cluster = hasattr(redis, "get_node_from_key") and hasattr(redis, "keyslot")

    async def execute_raw(self, key: str, *args: Any) -> Any:
        """Run ``args`` (command name as bytes) where ``key`` lives; the reply unparsed.

        A bytes command name matches none of redis-py's reply callbacks, so the
        reply comes back as the server sent it (lists of bytes): the hot path
        decodes it once, its own way, instead of redis-py building a dict per
        entry first. On a cluster the command goes to the node serving ``key``;
        a MOVED/ASK reply refreshes the slot map and retries once.
        """
        if not self.cluster:
            return await self.redis.execute_command(*args)
        node = self.redis.get_node_from_key(key)
        try:
            return await node.execute_command(*args)
        except MovedError:  # the slot moved for good: a new map, then the new owner
            await self.redis.nodes_manager.initialize()
            return await self.redis.get_node_from_key(key).execute_command(*args)
        except AskError as exc:  # the slot is migrating and the key has left already
            return await self.asking(exc, *args)
        except (RedisConnectionError, OSError, ClusterDownError) as exc:
            # A node went away (failover?): refresh the map for the next attempt.
            with contextlib.suppress(Exception):
                await self.redis.nodes_manager.initialize()
            _naming(exc, node)
            raise
        except RedisError as exc:
            _naming(exc, node)
            raise

    async def asking(self, exc: AskError, *args: Any) -> Any:
        """Follow an ASK: the command once on the node the slot is migrating to,
        after ``ASKING`` on the same connection (the slot map itself is unchanged)."""
        node = self.redis.get_node(host=exc.host, port=exc.port)
        if node is None:  # a node the map does not know yet
            await self.redis.nodes_manager.initialize()
            node = self.redis.get_node(host=exc.host, port=exc.port)
            if node is None:
                raise exc
        connection = node.acquire_connection()
        try:
            await connection.send_packed_command(
                connection.pack_commands([("ASKING",), args]), check_health=True
            )
            await connection.read_response()
            return await connection.read_response()
        except ResponseError:
            raise
        except BaseException:
            await connection.disconnect()  # a reply may be on its way: never reuse it
            raise
        finally:
            node.release(connection)

    async def send_once(self, key: str, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Run ``commands`` in one round trip on a pooled connection, never re-sent.

        For XADD, which is not idempotent: unlike ``execute_command`` (and
        pipelines), which redis-py retries on a connection error by default,
        this sends once. A failure before sending (no connection: the server
        is down) raises redis-py's ``ConnectionError``; nothing was added.
        A failure after sending raises :class:`AddOutcomeUnknown`. A stale
        pooled connection (the server restarted) is replaced by the pool before
        anything is sent, so a restart between two adds goes unnoticed.
        Replies are raw (bytes); the first error reply is raised after all
        replies are read. Clients without a plain connection pool (single
        connection clients, unknown clients) fall back to ``execute_command``.
        """
        if self.cluster:
            return await self._send_once_cluster(key, commands)
        pool: Any = getattr(self.redis, "connection_pool", None)
        if getattr(self.redis, "connection", None) is not None or not hasattr(
            pool, "get_connection"
        ):
            return [await self.redis.execute_command(*command) for command in commands]
        connection = await pool.get_connection()
        try:
            await _ensure_fresh(connection)
            return await _round_trip(connection, key, commands)
        except AddOutcomeUnknown as exc:
            if isinstance(exc.__cause__, DeadlineExceeded):
                await drop_idle_connections(self.redis)
            raise
        finally:
            await pool.release(connection)

    async def _send_once_cluster(self, key: str, commands: Sequence[Sequence[Any]]) -> list[Any]:
        for attempt in (1, 2):
            node = self.redis.get_node_from_key(key)
            connection = node.acquire_connection()
            try:
                await _ensure_fresh(connection)
                return await _round_trip(connection, key, commands)
            except AskError:  # MovedError too: refused, so nothing was added
                if attempt == 2:
                    raise
                await self.redis.nodes_manager.initialize()
            except (RedisError, OSError) as exc:
                _naming(exc, node)
                raise
            finally:
                node.release(connection)
        raise AssertionError("unreachable")

    def slot_groups(self, keys: list[str]) -> list[list[str]]:
        """``keys`` split into groups one multi-key command can serve (same hash slot)."""
        if not self.cluster or len(keys) < 2:
            return [keys]
        groups: dict[int, list[str]] = {}
        for key in keys:
            groups.setdefault(self.redis.keyslot(key), []).append(key)
        return list(groups.values())

    @property
    def prefix(self) -> str:
        return self.keys.prefix

    def stream_key(self, name: str) -> str:
        """The Redis key of stream ``name`` (``<prefix>:stream:<name>``)."""
        return self.keys.stream(name)

    def stream(self, name: str, *, max_len: int | None = None, ttl: float | None = None) -> Stream:
        """A handle on stream ``name``; nothing is created until an event is added."""
        from topology.streams._stream import Stream

        return Stream(self, name, max_len=max_len, ttl=ttl)

    def __repr__(self) -> str:
        return f"<Connection prefix={self.keys.prefix!r}>"


def _naming(exc: BaseException, node: Any) -> None:
    """Note on ``exc`` the cluster node it came from (``describe_error`` shows it): a
    CLUSTERDOWN or TRYAGAIN says nothing of where it was sent."""
    if getattr(exc, "node", None) is None:
        with contextlib.suppress(AttributeError):
            exc.node = node.name  # type: ignore[attr-defined]


async def _ensure_fresh(connection: Any) -> None:
    """Reconnect a connection the server closed (restarted) before sending on it.

    The pool does not always check (redis-py skips it when maintenance
    notifications are on, and relies on re-sending instead, which XADD must not).
    A connection with unread data or at end-of-stream is not reused.
    """
    if connection.is_connected:
        try:
            stale = await connection.can_read()
        except (RedisConnectionError, OSError):
            stale = True
        writer = getattr(connection, "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is not None and transport.is_closing():
            stale = True
        if not stale:
            return
        await connection.disconnect()
    await connection.connect()


async def _round_trip(connection: Any, key: str, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """Send ``commands`` at once, read every reply; connection errors are not retried."""
    try:
        await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
    except RedisTimeoutError:
        # Past its deadline: redis-py has dropped the connection. Whether the
        # server got the XADDs is unknown, so they are not sent again.
        cause = missed(connection, connection.socket_timeout, f"{len(commands)} XADD(s)")
        raise AddOutcomeUnknown(key, len(commands), cause) from cause
    except (RedisConnectionError, OSError) as exc:
        # redis-py has already dropped the connection (the pool reconnects it).
        raise AddOutcomeUnknown(key, len(commands), exc) from exc
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies
