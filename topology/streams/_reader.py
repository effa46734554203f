"""``Reader``: group-less reading, every reader sees every event."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from topology.streams._consumer import Consumer, event_filter
from topology.streams._options import ReaderOptions
from topology.streams._position import NEWEST, parse_start, validate_start
from topology.streams._wire import decode_event, entries_of

if TYPE_CHECKING:
    from topology.streams._connection import Connection
    from topology.streams._stream import Stream

__all__ = ["Reader"]

log = logging.getLogger("topology.streams")


class Reader(Consumer):
    """Reads streams with XREAD and a cursor per stream: no group, no acks."""

    def __init__(
        self,
        conn: Connection,
        *,
        start: str = ReaderOptions.start,
        block: float = ReaderOptions.block,
        count: int = ReaderOptions.count,
        buffer: int = ReaderOptions.buffer,
        topic: str | None = ReaderOptions.topic,
        topic_pattern: str | None = ReaderOptions.topic_pattern,
    ) -> None:
        options = ReaderOptions(
            start=start,
            block=block,
            count=count,
            buffer=buffer,
            topic=topic,
            topic_pattern=topic_pattern,
        )
        super().__init__(conn, options, event_filter(topic, topic_pattern, None))
        self._cursors: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<Reader streams={list(self._streams)}>"

    @property
    def cursors(self) -> dict[str, str]:
        """Last entry id read on each stream."""
        return dict(self._cursors)

    async def add_stream(self, stream: Stream, *, start: str | None = None) -> None:
        """Read ``stream`` too, from ``start`` (default: the reader's start).

        Adding a stream already read with no ``start`` keeps its cursor.
        """
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if start is None and stream.name in self._streams:
            return
        position = validate_start(start if start is not None else self.start)
        if position == NEWEST:
            # "$" is only meaningful in one call; pin it to the id it means now so
            # events added between two reads are not skipped.
            cursor = await self._last_id(stream.key)
        else:
            cursor = parse_start(position)
        self._cursors[stream.name] = cursor
        self._set_stream(stream)

    async def remove_stream(self, stream: Stream) -> None:
        """Stop reading ``stream``; re-adding it starts again from the given start.

        A barrier: the read in flight has ended when this returns, and no later
        ``read_batch`` returns an event of ``stream`` read after the call (events
        already in the local buffer are still returned).
        """
        removed = self._unset_stream(stream)
        self._cursors.pop(stream.name, None)
        if removed:
            await self._settle_read()

    async def _last_id(self, key: str) -> str:
        try:
            info = await self.conn.execute_raw(key, b"XINFO", "STREAM", key)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return "0-0"
            raise
        if isinstance(info, dict):
            value = info.get(b"last-generated-id", info.get("last-generated-id"))
        else:
            pairs = dict(zip(info[::2], info[1::2], strict=False))
            value = pairs.get(b"last-generated-id", pairs.get("last-generated-id"))
        if value is None:
            return "0-0"
        return value.decode() if isinstance(value, bytes) else str(value)

    def _read_args(self, keys: list[str]) -> list[Any]:
        names = self._names_by_key
        args: list[Any] = [b"XREAD", "COUNT", min(self.count, self.buffer), "BLOCK", self._block_ms]
        args.append("STREAMS")
        args.extend(keys)
        args.extend(self._cursors[names[key.encode()]] for key in keys)
        return args

    async def _ingest(self, reply: Any) -> None:
        accept = self._accept
        out = self._buffer
        for key, entries in entries_of(reply):
            if not entries:
                continue
            stream_name = self._names_by_key.get(key)
            if stream_name is None:
                continue  # removed while the reply was in flight
            for raw_id, flat in entries:
                if flat is None:
                    continue
                event = decode_event(raw_id, flat, stream_name)
                if accept is None or accept(event):
                    out.append(event)
            self._cursors[stream_name] = entries[-1][0].decode()
