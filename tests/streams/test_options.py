"""Defaults (pinned), payload helpers, start positions, trimming, import isolation."""

from __future__ import annotations

import inspect
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.streams.conftest import read_n
from topology import streams
from topology.streams import Connection, Reader, Sink, Stream, Topic, encode_payload, parse_start


def _defaults(func: Any) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(func).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_sink_defaults_are_pinned() -> None:
    expected = {
        "start": "newest",
        "block": 5.0,
        "count": 1000,
        "buffer": 1000,
        "ack_grace": 20.0,
        "topic": None,
        "topic_pattern": None,
        "matcher": None,
        "no_ack": False,
        # hooks for a caller that knows more than the streams (the engine)
        "consumer": None,
        "held": None,
        "consumer_alive": None,
        "on_trimmed": None,
    }
    assert _defaults(Stream.new_sink) == expected
    assert _defaults(Sink.__init__) == expected
    params = inspect.signature(Stream.new_sink).parameters
    assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in expected)


def test_reader_defaults_are_pinned() -> None:
    expected = {
        "start": "newest",
        "block": 5.0,
        "count": 1000,
        "buffer": 1000,
        "topic": None,
        "topic_pattern": None,
    }
    assert _defaults(Stream.new_reader) == expected
    assert _defaults(Reader.__init__) == expected


def test_producer_and_connection_defaults_are_pinned() -> None:
    assert _defaults(Stream.add) == {"topic": None}
    assert _defaults(Sink.add_stream) == {"start": None}
    assert _defaults(Reader.add_stream) == {"start": None}
    assert _defaults(Connection.__init__) == {"prefix": "pulse"}
    assert _defaults(Connection.stream) == {"max_len": None, "ttl": None}
    assert list(inspect.signature(Topic.add).parameters) == ["self", "name", "payload"]


def test_encode_payload() -> None:
    assert encode_payload(b"\xff\x00") == b"\xff\x00"
    assert encode_payload("é") == "é".encode()
    assert encode_payload({"a": [1, 2], "b": None}) == b'{"a":[1,2],"b":null}'
    assert encode_payload([1, "é"]) == '[1,"é"]'.encode()
    assert encode_payload(3) == b"3"
    assert encode_payload(bytearray(b"ab")) == b"ab"


def test_parse_start() -> None:
    assert parse_start("oldest") == "0"
    assert parse_start("newest") == "$"
    assert parse_start("after:1700000000000-3") == "1700000000000-3"
    assert parse_start("after:5") == "5"
    # at: the last id before that millisecond, so an entry at exactly that time is included
    assert parse_start("at:1970-01-01T00:00:01Z") == "999-18446744073709551615"
    assert parse_start("at:1970-01-01T01:00:01+01:00") == "999-18446744073709551615"
    for junk in ("", "latest", "after:", "after:abc", "at:yesterday", "at:2024-01-01T00:00:00"):
        with pytest.raises(ValueError, match="start position"):
            parse_start(junk)


async def test_invalid_start_fails_at_creation(conn: streams.Connection) -> None:
    with pytest.raises(ValueError, match="start position"):
        await conn.stream("s").new_sink("k", start="sometime")
    with pytest.raises(ValueError, match="start position"):
        await conn.stream("s").new_reader(start="at:never")


async def test_client_that_decodes_responses_is_refused(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses"):
            streams.Connection(client)
    finally:
        await client.aclose()


@pytest.mark.parametrize("kind", ["sink", "reader"])
async def test_start_positions(r: aioredis.Redis, conn: streams.Connection, kind: str) -> None:
    stream = conn.stream(f"start-{kind}")
    old = [
        await r.xadd(stream.key, {"n": f"e{i}", "p": ""}, id=f"{1000 * (i + 1)}-0")
        for i in range(3)
    ]
    old = [i.decode() for i in old]  # entries at t=1s, 2s, 3s after the epoch

    async def first_ids(start: str, n: int) -> list[str]:
        if kind == "sink":
            consumer: Any = await stream.new_sink(f"k-{start}", start=start)
        else:
            consumer = await stream.new_reader(start=start)
        async with consumer:
            return [e.id for e in await read_n(consumer, n)]

    fresh = await stream.add("fresh", b"")
    assert await first_ids("oldest", 4) == [*old, fresh]
    assert await first_ids(f"after:{old[0]}", 3) == [*old[1:], fresh]
    assert await first_ids("at:1970-01-01T00:00:02Z", 3) == [*old[1:], fresh]
    # newest: only what is added afterwards
    if kind == "sink":
        newest: Any = await stream.new_sink("k-newest")
    else:
        newest = await stream.new_reader()
    async with newest:
        later = await stream.add("later", b"")
        assert [e.id for e in await read_n(newest, 1)] == [later]


async def test_max_len_trims_approximately(r: aioredis.Redis, conn: streams.Connection) -> None:
    stream = conn.stream("capped", max_len=10)
    for _ in range(5):
        await stream.add_many((f"e{i}", b"", None) for i in range(200))
    length = await r.xlen(stream.key)
    assert 10 <= length < 300  # MAXLEN ~ trims whole nodes (100 entries by default)
    last = await stream.add("last", b"")
    assert (await r.xrevrange(stream.key, count=1))[0][0].decode() == last


@pytest.mark.parametrize("max_len", [None, 1000])
async def test_ttl_trims_entries_older_than_ttl(
    r: aioredis.Redis, conn: streams.Connection, max_len: int | None
) -> None:
    stream = conn.stream("aging", ttl=60.0, max_len=max_len)
    long_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    base = int(long_ago.timestamp() * 1000)
    for i in range(300):  # old entries, written raw with old ids
        await r.xadd(stream.key, {"n": "old", "p": ""}, id=f"{base + i}-0")
    recent = await stream.add("recent", b"")
    fresh = await stream.add_many([("fresh", b"", None)])
    remaining = [e[0].decode() for e in await r.xrange(stream.key)]
    assert remaining[-2:] == [recent, *fresh]
    assert len(remaining) < 302 - 100  # MINID ~ removes whole nodes of old entries


async def test_no_ack_sink_leaves_nothing_pending(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    stream = conn.stream("noack")
    async with await stream.new_sink("s", no_ack=True) as sink:
        await stream.add_many((f"e{i}", b"", None) for i in range(5))
        got = await read_n(sink, 5)
        await got[0].ack()
        assert (await r.xpending(stream.key, "s"))["pending"] == 0


async def test_event_ack_and_destroy(r: aioredis.Redis, conn: streams.Connection) -> None:
    stream = conn.stream("acks")
    async with await stream.new_sink("s") as sink:
        await stream.add("a", b"")
        (event,) = await read_n(sink, 1)
        await event.ack()
        assert (await r.xpending(stream.key, "s"))["pending"] == 0
        ids = await stream.add_many([("b", b"", None), ("c", b"", None)])
        seen = []
        async for event in sink:  # iteration, one ack per event
            seen.append(event.id)
            await event.ack()
            if len(seen) == 2:
                break
        assert seen == ids
        assert (await r.xpending(stream.key, "s"))["pending"] == 0
    await stream.destroy()
    assert await r.exists(stream.key) == 0


def test_streams_imports_nothing_of_the_engine() -> None:
    code = (
        "import sys, topology.streams\n"
        "bad = [m for m in sys.modules if m.startswith(('topology.config', 'topology.runtime',"
        " 'topology.cli', 'topology.graph'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_blocking_read_stays_under_the_client_socket_timeout(redis_url: str) -> None:
    # redis-py 8 defaults to a 5 s socket timeout; a 5 s BLOCK would time out client-side.
    from topology.streams._consumer import block_ms

    assert block_ms(5.0, 5.0) == 4000
    assert block_ms(0.5, 5.0) == 500
    assert block_ms(30.0, None) == 30000
    client = aioredis.Redis.from_url(redis_url, socket_timeout=1.0)
    try:
        stream = streams.Connection(client).stream("t")
        async with await stream.new_sink("s") as sink:
            assert sink._block_ms == 800
        default = aioredis.Redis.from_url(redis_url)
        async with await streams.Connection(default).stream("t").new_sink("s") as sink:
            assert sink._block_ms == 4000
        await default.aclose()
    finally:
        await client.aclose()
    with pytest.raises(ValueError, match="block"):
        await stream.new_sink("s", block=0)


async def test_ack_many_across_streams_acks_each_on_its_stream(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    one, two = conn.stream("a1"), conn.stream("a2")
    async with await one.new_sink("s") as sink:
        await sink.add_stream(two)
        await one.add("x", b"")
        await two.add("y", b"")
        got = await read_n(sink, 2)
        assert {e.stream_name for e in got} == {"a1", "a2"}
        await sink.ack_many(got)
        for stream in (one, two):
            assert (await r.xpending(stream.key, "s"))["pending"] == 0


async def test_readding_a_stream_to_a_reader_keeps_its_cursor(conn: streams.Connection) -> None:
    stream = conn.stream("cursor")
    first = await stream.add("a", b"")
    async with await stream.new_reader(start="oldest") as reader:
        assert [e.id for e in await read_n(reader, 1)] == [first]
        await reader.add_stream(stream)
        second = await stream.add("b", b"")
        assert [e.id for e in await read_n(reader, 1)] == [second]
