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
from topology.streams._consumer import event_filter, socket_timeout_of
from topology.streams._deadline import (
    DEFAULT_TIMEOUT,
    DeadlineExceeded,
    after_failure,
    drop_idle_connections,
    missed,
    opened_before_a_stall,
)
from topology.streams._event import Event
from topology.streams._keys import DEFAULT_PREFIX, StreamKeys
from topology.streams._lag import GroupLag, group_lag, read_group_lag
from topology.streams._lease import RELEASE_LEASE_SCRIPT
from topology.streams._options import ReaderOptions, SinkOptions
from topology.streams._payload import encode_payload
from topology.streams._position import parse_start
from topology.streams._reader import Reader
from topology.streams._retry import (
    RETRYABLE_ERRORS,
    Backoff,
    describe_error,
    is_refused_for_now,
    is_routine_redirect,
    is_transient,
    pause,
)
from topology.streams._sink import STALE_AFTER, ConsumerAlive, Sink
from topology.streams._stream import Stream, Topic, stream_name_problem
from topology.streams._wire import decode_entry, entry_fields, is_plain, packed_or_none

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TIMEOUT",
    "RELEASE_LEASE_SCRIPT",
    "RETRYABLE_ERRORS",
    "STALE_AFTER",
    "AddOutcomeUnknown",
    "Backoff",
    "Connection",
    "ConsumerAlive",
    "DeadlineExceeded",
    "Event",
    "GroupLag",
    "Reader",
    "ReaderOptions",
    "Sink",
    "SinkOptions",
    "Stream",
    "StreamKeys",
    "Topic",
    "after_failure",
    "decode_entry",
    "describe_error",
    "drop_idle_connections",
    "encode_payload",
    "entry_fields",
    "event_filter",
    "group_lag",
    "is_plain",
    "is_refused_for_now",
    "is_routine_redirect",
    "is_transient",
    "missed",
    "opened_before_a_stall",
    "packed_or_none",
    "parse_start",
    "pause",
    "read_group_lag",
    "socket_timeout_of",
    "stream_name_problem",
]
