"""The entry point: a redis.asyncio client plus the key prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from topology.streams._keys import DEFAULT_PREFIX, StreamKeys

if TYPE_CHECKING:
    from topology.streams._stream import Stream

__all__ = ["Connection"]


class Connection:
    """Streams on one Redis (any ``redis.asyncio`` client returning bytes).

    The client must not decode responses: payloads are arbitrary bytes, and
    decoding them would fail on binary data (or silently mangle it).
    """

    __slots__ = ("keys", "redis")

    def __init__(self, redis: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        pool = getattr(redis, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None) or {}
        if kwargs.get("decode_responses") or getattr(redis, "decode_responses", False) is True:
            raise ValueError(
                "topology.streams needs a client with decode_responses=False: "
                "payloads are bytes"
            )
        self.redis = redis
        self.keys = StreamKeys(prefix)

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
