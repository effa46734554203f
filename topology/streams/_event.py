"""An event read from a stream."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

__all__ = ["Event", "loads_payload"]

#: ``Event._parsed`` when nothing is kept.
_UNPARSED: Any = object()
_decode = json.JSONDecoder().decode


def loads_payload(payload: bytes) -> Any:
    """``json.loads(payload)``, faster for UTF-8 (what JSON payloads are): ``json.loads``
    of bytes first sniffs the encoding in Python. Anything else takes that way."""
    try:
        return _decode(payload.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one too: UTF-16/32, a BOM, or not JSON
        return json.loads(payload)


class Event:
    """One stream entry as a sink or a reader delivers it.

    ``payload`` is the raw bytes of field ``p``; ``text()`` and ``json()`` decode
    it. ``fields`` holds any extra entry fields (engine metadata such as the
    attempt count); pulse ignores them and so may you. ``ack()`` acknowledges
    the event on its sink's consumer group (a no-op for readers).
    ``deliveries`` is Redis's delivery count as this sink knows it: 1 for a
    first delivery, the group's count for an event claimed from an idle
    consumer (an event that keeps coming back may be what kills its handlers).
    """

    __slots__ = (
        "_acker",
        "_parsed",
        "deliveries",
        "fields",
        "id",
        "name",
        "payload",
        "sink_name",
        "stream_name",
        "topic",
    )

    def __init__(
        self,
        id: str,
        name: str,
        payload: bytes,
        *,
        stream_name: str,
        topic: str | None = None,
        sink_name: str | None = None,
        fields: dict[bytes, bytes] | None = None,
        acker: Callable[[Event], Awaitable[None]] | None = None,
        deliveries: int = 1,
    ) -> None:
        self.id = id
        self.name = name
        self.payload = payload
        self.stream_name = stream_name
        self.topic = topic
        self.sink_name = sink_name
        self.fields = fields
        self._acker = acker
        self.deliveries = deliveries
        self._parsed = _UNPARSED

    @property
    def created_at(self) -> datetime:
        """When the event was added: the millisecond part of its entry id."""
        ms = int(self.id.split("-", 1)[0])
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)

    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        """The payload parsed as JSON: a new object each call, the caller's to change."""
        parsed = self._parsed
        if parsed is _UNPARSED:
            return loads_payload(self.payload)
        self._parsed = _UNPARSED  # handed over once: the next call parses again
        return parsed

    def peek_json(self) -> Any:
        """The payload parsed as JSON, kept for the next :meth:`json` call, which hands
        that object over instead of parsing the payload again (the engine looks up a
        state key this way). Only look at what it returns: never change it."""
        parsed = self._parsed
        if parsed is _UNPARSED:
            parsed = self._parsed = loads_payload(self.payload)
        return parsed

    async def ack(self) -> None:
        if self._acker is not None:
            await self._acker(self)

    def __repr__(self) -> str:
        topic = f" topic={self.topic!r}" if self.topic else ""
        return f"<Event {self.stream_name}/{self.id} {self.name!r}{topic} {len(self.payload)}B>"
