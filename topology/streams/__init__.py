"""Redis Streams with the semantics and wire format of goa.design/pulse.

Usable on its own; imports nothing of the engine::

    conn = streams.Connection(redis.asyncio.Redis())
    stream = conn.stream("orders", max_len=10_000)
    await stream.add("created", {"id": 1})
    async with await stream.new_sink("billing") as sink:
        async for event in sink:
            ...
            await event.ack()
"""

from topology.streams._connection import AddOutcomeUnknown, Connection
from topology.streams._consumer import RETRYABLE_ERRORS, decode_entry, event_filter
from topology.streams._event import Event
from topology.streams._keys import DEFAULT_PREFIX, StreamKeys
from topology.streams._payload import encode_payload
from topology.streams._position import parse_start
from topology.streams._reader import Reader
from topology.streams._sink import Sink
from topology.streams._stream import Stream, Topic, stream_name_problem

__all__ = [
    "DEFAULT_PREFIX",
    "RETRYABLE_ERRORS",
    "AddOutcomeUnknown",
    "Connection",
    "Event",
    "Reader",
    "Sink",
    "Stream",
    "StreamKeys",
    "Topic",
    "decode_entry",
    "encode_payload",
    "event_filter",
    "parse_start",
    "stream_name_problem",
]
