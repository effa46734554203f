"""The entry point: a redis.asyncio client plus the key prefix."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from redis.exceptions import AskError
from redis.exceptions import ConnectionError as RedisConnectionError

from topology.streams._keys import DEFAULT_PREFIX, StreamKeys

if TYPE_CHECKING:
    from topology.streams._stream import Stream

__all__ = ["Connection"]


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
                "topology.streams needs a client with decode_responses=False: "
                "payloads are bytes"
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
        try:
            return await self.redis.get_node_from_key(key).execute_command(*args)
        except AskError:  # MovedError too: the slots moved
            await self.redis.nodes_manager.initialize()
            return await self.redis.get_node_from_key(key).execute_command(*args)
        except (RedisConnectionError, OSError):
            # A node went away (failover?): refresh the map for the next attempt.
            with contextlib.suppress(Exception):
                await self.redis.nodes_manager.initialize()
            raise

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
