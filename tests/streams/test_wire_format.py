"""Semantic 1: pulse's wire format, both directions, checked with raw redis-py."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from tests.streams.conftest import read_n
from topology import streams


async def test_added_events_have_exactly_pulse_fields(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    stream = conn.stream("orders")
    assert stream.key == "pulse:stream:orders" == conn.stream_key("orders")
    plain = await stream.add("created", b"\x00\x01raw")
    tagged = await stream.topic("eu.fr").add("shipped", {"id": 7, "ok": True})
    text = await stream.add("note", "héllo", topic="t1")

    entries = dict(await r.xrange("pulse:stream:orders"))
    assert entries[plain.encode()] == {b"n": b"created", b"p": b"\x00\x01raw"}
    assert entries[tagged.encode()] == {
        b"n": b"shipped",
        b"p": b'{"id":7,"ok":true}',
        b"t": b"eu.fr",
    }
    assert entries[text.encode()] == {b"n": b"note", b"p": "héllo".encode(), b"t": b"t1"}


async def test_add_many_writes_the_same_format(r: aioredis.Redis, conn: streams.Connection) -> None:
    stream = conn.stream("batch")
    ids = await stream.add_many([("a", b"1", None), ("b", "2", "top"), ("c", [3], None)])
    entries = await r.xrange(stream.key)
    assert [e[0].decode() for e in entries] == ids
    assert [e[1] for e in entries] == [
        {b"n": b"a", b"p": b"1"},
        {b"n": b"b", b"p": b"2", b"t": b"top"},
        {b"n": b"c", b"p": b"[3]"},
    ]
    assert await stream.add_many([]) == []


async def test_key_prefix_is_configurable(r: aioredis.Redis) -> None:
    conn = streams.Connection(r, prefix="acme")
    stream = conn.stream("s")
    await stream.add("x", b"y")
    assert stream.key == "acme:stream:s"
    assert await r.xlen("acme:stream:s") == 1
    assert await r.exists("pulse:stream:s") == 0


async def test_sink_and_reader_read_entries_written_like_a_go_pulse_service(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    stream = conn.stream("from-go")
    sink = await stream.new_sink("py", start="oldest")
    reader = await stream.new_reader(start="oldest")
    # What pulse's Stream.Add writes: n, p and t when the event has a topic.
    first = await r.xadd("pulse:stream:from-go", {"n": "evt", "p": b'{"k":1}'})
    second = await r.xadd("pulse:stream:from-go", {"n": "evt2", "p": b"bin\xff", "t": "tp"})
    # Fields in another order and extra metadata are fine too (pulse ignores them).
    third = await r.xadd("pulse:stream:from-go", {"x-attempt": "2", "p": b"z", "n": "evt3"})
    async with sink, reader:
        for consumer, sink_name in ((sink, "py"), (reader, None)):
            got = await read_n(consumer, 3)
            assert [(e.id, e.name, e.payload, e.topic) for e in got] == [
                (first.decode(), "evt", b'{"k":1}', None),
                (second.decode(), "evt2", b"bin\xff", "tp"),
                (third.decode(), "evt3", b"z", None),
            ]
            assert got[0].json() == {"k": 1}
            assert got[2].fields == {b"x-attempt": b"2"}
            assert all(e.stream_name == "from-go" and e.sink_name == sink_name for e in got)
        assert got[0].created_at.timestamp() * 1000 == int(first.split(b"-")[0])


def test_stream_names_follow_pulses_rule(conn: streams.Connection) -> None:
    assert conn.stream("orders.eu-1:v2").name == "orders.eu-1:v2"
    for bad in ("", "with space", "star*", "q?", "[x]", "x" * 513, "nul\0"):
        with pytest.raises(ValueError, match="invalid stream name"):
            conn.stream(bad)
