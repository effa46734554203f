"""Semantic 5: add_stream/remove_stream/close interrupt a blocking read within 100 ms;
removing keeps the group and its position."""

from __future__ import annotations

import asyncio
import contextlib
import time

import redis.asyncio as aioredis

from tests.helpers import LatencyPromise, blocked_clients, wait_blocked
from tests.streams.conftest import read_n
from topology import streams

BLOCK = 5.0
WITHIN = 0.1


async def test_add_stream_takes_effect_within_100ms_during_a_blocking_read(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    first, second = conn.stream("one"), conn.stream("two")
    async with await first.new_sink("s", block=BLOCK) as sink:
        reading = asyncio.ensure_future(sink.read_batch())
        await wait_blocked(r)
        promise = LatencyPromise(WITHIN)
        await sink.add_stream(second)
        entry = await second.add("x", b"")
        got = await asyncio.wait_for(reading, BLOCK)
        assert [e.id for e in got] == [entry]
        promise.check("add_stream")
        assert sink.streams == ("one", "two")


async def test_remove_stream_takes_effect_within_100ms_during_a_blocking_read(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    first, second = conn.stream("one"), conn.stream("two")
    async with await first.new_sink("s", block=BLOCK) as sink:
        await sink.add_stream(second)
        reading = asyncio.ensure_future(sink.read_batch())
        await wait_blocked(r)
        (old_read,) = await blocked_clients(r)
        started = time.monotonic()
        promise = LatencyPromise(WITHIN)
        await sink.remove_stream(second)
        # Taken effect = the blocked read on both streams is gone and a new one,
        # without the removed stream, is blocked in its place (server-side state).
        while True:
            now = await blocked_clients(r)
            if now and old_read not in now:
                break
            assert time.monotonic() - started < BLOCK, "the read was never re-issued"
        promise.check("remove_stream")
        assert sink.streams == ("one",)
        await second.add("ignored", b"")  # the old read would have returned this
        kept = await first.add("kept", b"")
        got = await asyncio.wait_for(reading, BLOCK)
        assert [e.id for e in got] == [kept]


async def test_remove_stream_keeps_group_position_and_readding_resumes_after_last_acked(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    first, second = conn.stream("one"), conn.stream("two")
    async with await first.new_sink("s", block=BLOCK) as sink:
        await sink.add_stream(second)
        acked = await second.add_many((f"a{i}", b"", None) for i in range(3))
        got = await read_n(sink, 3)
        await sink.ack_many(got)
        await sink.remove_stream(second)
        groups = await r.xinfo_groups(second.key)
        assert [(g["name"], g["last-delivered-id"].decode()) for g in groups] == [(b"s", acked[-1])]
        while_removed = await second.add_many((f"b{i}", b"", None) for i in range(3))
        await sink.add_stream(second, start="oldest")  # an existing group keeps its position
        got = await read_n(sink, 3)
        assert [e.id for e in got] == while_removed


async def test_close_returns_within_100ms_and_leaves_unacked_events_pending(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    stream = conn.stream("closing")
    sink = await stream.new_sink("s", block=BLOCK)
    ids = await stream.add_many((f"e{i}", b"", None) for i in range(3))
    await read_n(sink, 3)
    reading = asyncio.ensure_future(sink.read_batch())
    await wait_blocked(r)
    promise = LatencyPromise(WITHIN)
    await sink.close()
    assert await asyncio.wait_for(reading, BLOCK) == []
    promise.check("close")
    pending = await r.xpending_range(stream.key, "s", "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == ids
    assert {p["consumer"].decode() for p in pending} == {sink.consumer}
    assert await sink.read_batch() == []
    assert [e async for e in sink] == []


async def test_sink_without_streams_waits_for_add_stream(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    stream = conn.stream("only")
    async with await stream.new_sink("s", block=BLOCK) as sink:
        await sink.remove_stream(stream)
        assert sink.streams == ()
        reading = asyncio.ensure_future(sink.read_batch())
        entry = await stream.add("x", b"")
        await asyncio.sleep(0)  # let the reader reach its wait
        assert not reading.done()
        await sink.add_stream(stream)
        assert [e.id for e in await asyncio.wait_for(reading, BLOCK)] == [entry]


async def test_concurrent_readers_of_one_sink_share_its_reads(conn: streams.Connection) -> None:
    stream = conn.stream("concurrent")
    async with await stream.new_sink("s", block=BLOCK) as sink:
        tasks = [asyncio.ensure_future(sink.read_batch(1)) for _ in range(3)]
        ids = await stream.add_many((f"e{i}", b"", None) for i in range(3))
        got = await asyncio.wait_for(asyncio.gather(*tasks), BLOCK)
        assert sorted(e.id for batch in got for e in batch) == sorted(ids)


async def test_entries_of_an_interrupted_read_are_not_left_behind(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    # An interrupted XREADGROUP can lose the race with its reply: the server has
    # handed entries to this consumer, the cancelled client never saw them. Stage
    # exactly that (a read as the sink's consumer whose reply the sink never gets),
    # then interrupt: the entries come at once, not after ack_grace (20 s here).
    first, second = conn.stream("one"), conn.stream("two")
    async with await first.new_sink("s", block=BLOCK) as sink:
        seen = await first.add("seen", b"")
        assert [e.id for e in await read_n(sink, 1)] == [seen]
        lost = await first.add_many([("lost1", b"", None), ("lost2", b"", None)])
        await r.xreadgroup("s", sink.consumer, {first.key: ">"})  # the dropped reply
        reading = asyncio.ensure_future(sink.read_batch())
        await wait_blocked(r)
        await sink.add_stream(second)
        got = await asyncio.wait_for(reading, BLOCK)
        assert [e.id for e in got] == lost
        await sink.ack_many(got)
        assert (await r.xpending(first.key, "s"))["pending"] == 1  # "seen", never acked


async def test_cancelling_the_caller_of_a_read_loses_nothing(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    # An actor cancelled mid-read (asyncio.wait_for, task.cancel) must not leave
    # entries its dropped reply carried stranded until ack_grace.
    stream = conn.stream("one")
    async with await stream.new_sink("s", block=BLOCK) as sink:
        reading = asyncio.ensure_future(sink.read_batch())
        await wait_blocked(r)
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        lost = await stream.add("lost", b"")
        await r.xreadgroup("s", sink.consumer, {stream.key: ">"})  # the dropped reply
        got = await asyncio.wait_for(sink.read_batch(), BLOCK)
        assert [e.id for e in got] == [lost]
