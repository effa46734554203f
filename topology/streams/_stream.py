"""Producing side: ``Stream`` and ``Topic``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Set
from typing import TYPE_CHECKING, Any

from topology.streams._options import ReaderOptions, SinkOptions
from topology.streams._payload import encode_payload
from topology.streams._wire import entry_fields

if TYPE_CHECKING:
    from topology.streams._connection import Connection
    from topology.streams._event import Event
    from topology.streams._lag import GroupLag
    from topology.streams._reader import Reader
    from topology.streams._sink import ConsumerAlive, Sink

__all__ = ["Stream", "Topic", "stream_name_problem"]

#: Stream names pulse accepts (it refuses the rest): a Go service must be able to
#: open every stream we create.
VALID_NAME = re.compile(r"[^ \0*?\[\]]{1,512}")


def stream_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a stream, or None: the one rule, for config checks too."""
    if VALID_NAME.fullmatch(name):
        return None
    return (
        f"invalid stream name {name!r}: 1 to 512 characters, "
        "no space, NUL, '*', '?', '[' or ']' (pulse's rule)"
    )


class Stream:
    """A Redis stream with pulse's wire format: fields ``n``, ``p`` and ``t`` (only when set).

    ``max_len`` trims approximately (``XADD MAXLEN ~``); ``ttl`` (seconds) trims
    entries older than that (``MINID ~ now-ttl``). With both, the XADD carries
    MAXLEN and an XTRIM MINID follows in the same round trip.

    Adding is never retried: a connection error before anything is sent (the
    server is down) is redis-py's ``ConnectionError`` and nothing was added; one
    after sending is :class:`AddOutcomeUnknown` (maybe added, maybe not). A server
    restart between two adds is transparent (the pool replaces its stale
    connection before sending). See :meth:`Connection.send_once`.
    """

    __slots__ = ("conn", "key", "max_len", "name", "ttl")

    def __init__(
        self, conn: Connection, name: str, *, max_len: int | None = None, ttl: float | None = None
    ) -> None:
        problem = stream_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        if max_len is not None and max_len < 0:
            raise ValueError(f"max_len must be >= 0, got {max_len}")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        self.conn = conn
        self.name = name
        self.key = conn.stream_key(name)
        self.max_len = max_len
        self.ttl = ttl

    # -- producing -----------------------------------------------------------------

    def _trim_args(self) -> list[Any]:
        if self.max_len is not None:
            return ["MAXLEN", "~", self.max_len]
        if self.ttl is not None:
            return ["MINID", "~", self._min_id()]
        return []

    def _min_id(self) -> int:
        assert self.ttl is not None
        return max(0, int((time.time() - self.ttl) * 1000))

    def _xadd_args(self, name: str, payload: Any, topic: str | None, trim: list[Any]) -> list[Any]:
        return ["XADD", self.key, *trim, "*", *entry_fields(name, encode_payload(payload), topic)]

    async def add(self, name: str, payload: Any, *, topic: str | None = None) -> str:
        """Add one event; returns its entry id. Never retried (see the class docstring)."""
        commands = [self._xadd_args(name, payload, topic, self._trim_args())]
        if self.max_len is not None and self.ttl is not None:
            commands.append(["XTRIM", self.key, "MINID", "~", self._min_id()])
        entry_id = (await self.conn.send_once(self.key, commands))[0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def add_many(self, events: Iterable[tuple[str, Any, str | None]]) -> list[str]:
        """Add ``(name, payload, topic)`` events in one pipelined round trip; returns their ids.

        Never retried (see the class docstring): on :class:`AddOutcomeUnknown`,
        any prefix of the events may have been added.
        """
        trim = self._trim_args()
        commands = [self._xadd_args(name, payload, topic, trim) for name, payload, topic in events]
        count = len(commands)
        if count == 0:
            return []
        if self.max_len is not None and self.ttl is not None:
            commands.append(["XTRIM", self.key, "MINID", "~", self._min_id()])
        replies = await self.conn.send_once(self.key, commands)
        return [r.decode() if isinstance(r, bytes) else str(r) for r in replies[:count]]

    def topic(self, name: str) -> Topic:
        """A producer that tags every event with topic ``name`` (field ``t``)."""
        return Topic(self, name)

    async def destroy(self) -> None:
        """Delete the stream and, with it, every consumer group on it."""
        await self.conn.redis.delete(self.key)

    # -- consuming -----------------------------------------------------------------

    async def new_sink(
        self,
        name: str,
        *,
        start: str = SinkOptions.start,
        block: float = SinkOptions.block,
        count: int = SinkOptions.count,
        buffer: int = SinkOptions.buffer,
        ack_grace: float = SinkOptions.ack_grace,
        topic: str | None = SinkOptions.topic,
        topic_pattern: str | None = SinkOptions.topic_pattern,
        matcher: Callable[[Event], bool] | None = SinkOptions.matcher,
        no_ack: bool = SinkOptions.no_ack,
        consumer: str | None = None,
        held: Callable[[], Set[tuple[str, str]]] | None = None,
        consumer_alive: ConsumerAlive | None = None,
        on_trimmed: Callable[[str, GroupLag], None] | None = None,
    ) -> Sink:
        """A member of consumer group ``name`` on this stream (see :class:`Sink`)."""
        from topology.streams._sink import Sink

        sink = Sink(
            self.conn,
            name,
            start=start,
            block=block,
            count=count,
            buffer=buffer,
            ack_grace=ack_grace,
            topic=topic,
            topic_pattern=topic_pattern,
            matcher=matcher,
            no_ack=no_ack,
            consumer=consumer,
            held=held,
            consumer_alive=consumer_alive,
            on_trimmed=on_trimmed,
        )
        try:
            await sink.add_stream(self)
        except BaseException:
            await sink.close()
            raise
        return sink

    async def new_reader(
        self,
        *,
        start: str = ReaderOptions.start,
        block: float = ReaderOptions.block,
        count: int = ReaderOptions.count,
        buffer: int = ReaderOptions.buffer,
        topic: str | None = ReaderOptions.topic,
        topic_pattern: str | None = ReaderOptions.topic_pattern,
    ) -> Reader:
        """A group-less reader: it sees every event (see :class:`Reader`)."""
        from topology.streams._reader import Reader

        reader = Reader(
            self.conn,
            start=start,
            block=block,
            count=count,
            buffer=buffer,
            topic=topic,
            topic_pattern=topic_pattern,
        )
        try:
            await reader.add_stream(self)
        except BaseException:
            await reader.close()
            raise
        return reader

    def __repr__(self) -> str:
        return f"<Stream {self.name!r} key={self.key!r}>"


class Topic:
    """Events of one topic on a stream."""

    __slots__ = ("name", "stream")

    def __init__(self, stream: Stream, name: str) -> None:
        if not name:
            raise ValueError("a topic needs a name")
        self.stream = stream
        self.name = name

    async def add(self, name: str, payload: Any) -> str:
        """Add one event tagged with this topic; returns its entry id."""
        return await self.stream.add(name, payload, topic=self.name)

    def __repr__(self) -> str:
        return f"<Topic {self.name!r} on {self.stream.name!r}>"
