"""Interrupting a blocking read is bounded whatever the timing, and ``remove_stream``
and ``close`` are barriers.

redis.asyncio can swallow a cancellation that lands while the command is being
sent (``asyncio.wait_for`` around the socket write, Python 3.11): the read then
blocks for the whole BLOCK. These tests interrupt at every small offset from the
start of a read (0 to ``OFFSETS - 1`` event-loop steps, which covers connecting,
sending and waiting) and require each interruption to take effect within 100 ms
on a 5 s block (on a loaded machine, time spent waiting for a CPU is not counted:
``tests.helpers.LatencyPromise``).
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from tests.helpers import LatencyPromise, wait_blocked, wait_for
from tests.streams.conftest import read_n
from topology import streams

BLOCK = 5.0
WITHIN = 0.1
OFFSETS = 12


async def _steps(n: int) -> None:
    """Let the event loop run ``n`` steps: an offset into the read, not a synchronisation."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_close_ends_a_read_within_100ms_at_any_offset(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    before = len(await r.client_list())
    for offset in range(OFFSETS):
        stream = conn.stream(f"close-{offset}")
        sink = await stream.new_sink("s", block=BLOCK)
        reading = asyncio.ensure_future(sink.read_batch())
        await _steps(offset)
        promise = LatencyPromise(WITHIN)
        await sink.close()
        got = await asyncio.wait_for(reading, BLOCK * 2)
        assert got == []
        promise.check(f"offset {offset}: close")

    # Each sink read on a connection of its own: close() closed them all (the
    # client's pool may have grown by one or two meanwhile).
    async def no_leak() -> bool:
        return len(await r.client_list()) <= before + 2

    await wait_for(no_leak, what="the sinks' own connections to close")


async def test_add_stream_takes_effect_within_100ms_at_any_offset(
    conn: streams.Connection,
) -> None:
    for offset in range(OFFSETS):
        first, second = conn.stream(f"add-a-{offset}"), conn.stream(f"add-b-{offset}")
        async with await first.new_sink("s", block=BLOCK) as sink:
            reading = asyncio.ensure_future(sink.read_batch())
            await _steps(offset)
            promise = LatencyPromise(WITHIN)
            await sink.add_stream(second)
            entry = await second.add("x", b"")
            got = await asyncio.wait_for(reading, BLOCK * 2)
            assert [e.id for e in got] == [entry], f"offset {offset}"
            promise.check(f"offset {offset}: add_stream")


async def test_remove_stream_is_a_barrier_at_any_offset(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    # Once remove_stream returns, no read returns an event of the removed stream
    # added after that, and the next read takes effect within 100 ms.
    for offset in range(OFFSETS):
        first, second = conn.stream(f"rm-a-{offset}"), conn.stream(f"rm-b-{offset}")
        async with await first.new_sink("s", block=BLOCK) as sink:
            await sink.add_stream(second)
            reading = asyncio.ensure_future(sink.read_batch())
            await _steps(offset)
            promise = LatencyPromise(WITHIN)
            await sink.remove_stream(second)
            removed = await second.add("removed", b"")
            kept = await first.add("kept", b"")
            got = await asyncio.wait_for(reading, BLOCK * 2)
            assert [e.id for e in got] == [kept], f"offset {offset}: got {got}"
            promise.check(f"offset {offset}: remove_stream")
            # Never delivered to this consumer: still there for the group.
            assert (await r.xpending(second.key, "s"))["pending"] == 0
            assert removed in [i.decode() for i, _ in await r.xrange(second.key)]


async def test_reader_remove_stream_is_a_barrier_at_any_offset(
    conn: streams.Connection,
) -> None:
    for offset in range(OFFSETS):
        first, second = conn.stream(f"rrm-a-{offset}"), conn.stream(f"rrm-b-{offset}")
        async with await first.new_reader(block=BLOCK) as reader:
            await reader.add_stream(second)
            reading = asyncio.ensure_future(reader.read_batch())
            await _steps(offset)
            promise = LatencyPromise(WITHIN)
            await reader.remove_stream(second)
            await second.add("removed", b"")
            kept = await first.add("kept", b"")
            got = await asyncio.wait_for(reading, BLOCK * 2)
            assert [e.id for e in got] == [kept], f"offset {offset}: got {got}"
            promise.check(f"offset {offset}: remove_stream")


async def test_an_entry_of_a_removed_stream_in_flight_at_removal_is_handed_back(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    # The entry is added (the server hands it to the blocked read) and the stream
    # removed right after, usually before the sink has seen the reply. Unless the
    # sink read it before the removal (then it is delivered, legitimately), it is
    # never delivered by this sink after the removal: it is pending on its consumer
    # with an idle time past ack_grace, so the next claim pass of any instance takes
    # it (here: another, idle instance).
    first, second = conn.stream("one"), conn.stream("two")
    sink = await first.new_sink("s", block=BLOCK, ack_grace=5.0)
    other = await second.new_sink("s", block=BLOCK, ack_grace=5.0)
    try:
        await sink.add_stream(second)
        reading = asyncio.ensure_future(sink.read_batch())
        await wait_blocked(r)
        in_flight = await second.add("in-flight", b"")
        await sink.remove_stream(second)
        kept = await first.add("kept", b"")
        got = [e.id for e in await asyncio.wait_for(reading, BLOCK)]
        if got == [in_flight]:
            return  # read before the removal: nothing to hand back
        assert got == [kept]
        await _assert_handed_back(r, second, sink, other, in_flight)
    finally:
        await sink.close()
        await other.close()


async def test_a_dropped_reply_of_a_removed_stream_is_handed_back(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    # Deterministic staging of the other outcome: the server delivered the entry
    # to the sink's consumer, the reply never reached the sink (a read as that
    # consumer whose reply the sink never gets), then the stream is removed.
    first, second = conn.stream("one"), conn.stream("two")
    sink = await first.new_sink("s", block=BLOCK, ack_grace=5.0)
    other = await second.new_sink("s", block=BLOCK, ack_grace=5.0)
    try:
        await sink.add_stream(second)
        lost = await second.add("lost", b"")
        await r.xreadgroup("s", sink.consumer, {second.key: ">"})  # the dropped reply
        reading = asyncio.ensure_future(sink.read_batch())
        await wait_blocked(r)
        await sink.remove_stream(second)
        kept = await first.add("kept", b"")
        assert [e.id for e in await asyncio.wait_for(reading, BLOCK)] == [kept]
        await _assert_handed_back(r, second, sink, other, lost)
    finally:
        await sink.close()
        await other.close()


async def _assert_handed_back(
    r: aioredis.Redis,
    stream: streams.Stream,
    sink: streams.Sink,
    other: streams.Sink,
    entry: str,
) -> None:
    pending = await r.xpending_range(stream.key, "s", "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [entry]
    assert pending[0]["consumer"].decode() == sink.consumer
    assert pending[0]["time_since_delivered"] >= 5000
    assert await other.claim_once() == 1
    assert [e.id for e in await read_n(other, 1)] == [entry]


async def test_buffered_events_of_a_removed_stream_are_still_delivered(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    # Read before the removal (in the local buffer): delivered, never lost; what
    # the caller has not handled yet stays pending. handled + pending = added.
    first, second = conn.stream("one"), conn.stream("two")
    async with await first.new_sink("s", block=BLOCK) as sink:
        await sink.add_stream(second)
        added = await second.add_many((f"e{i}", b"", None) for i in range(5))
        handled = await sink.read_batch(2)  # the other 3 stay in the buffer
        await sink.ack_many(handled)
        await sink.remove_stream(second)
        later = await sink.read_batch()
        assert [e.id for e in later] == added[2:]
        await sink.ack_many(later[:1])
        pending = await r.xpending_range(second.key, "s", "-", "+", 10)
        handled_ids = [e.id for e in handled + later[:1]]
        assert sorted(handled_ids + [p["message_id"].decode() for p in pending]) == added


@pytest.mark.parametrize("action", ["close", "remove_stream"])
async def test_interrupting_never_loses_acked_or_strands_delivered_events(
    r: aioredis.Redis, conn: streams.Connection, action: str
) -> None:
    # Events flow while the sink is interrupted at many offsets: everything added is
    # either acked by it or pending (never lost, never delivered after removal).
    stream, spare = conn.stream("flow"), conn.stream("spare")
    added: list[str] = []
    acked: list[str] = []
    for offset in range(OFFSETS):
        sink = await stream.new_sink("s", block=BLOCK, start="oldest")
        await sink.add_stream(spare)
        added += await stream.add_many((f"e{i}", b"", None) for i in range(3))
        reading = asyncio.ensure_future(sink.read_batch())
        await _steps(offset)
        if action == "close":
            await sink.close()
        else:
            await sink.remove_stream(stream)
            spare_id = await spare.add("spare", b"")
        got = await asyncio.wait_for(reading, BLOCK)
        await sink.ack_many(got)
        acked += [e.id for e in got if e.stream_name == "flow"]
        if action == "remove_stream" and any(e.stream_name == "spare" for e in got):
            # Read after the removal: nothing of the removed stream in it.
            assert [e.id for e in got] == [spare_id], f"offset {offset}"
        await sink.close()
    pending = await r.xpending_range(stream.key, "s", "-", "+", 1000)
    info = await r.xinfo_groups(stream.key)
    undelivered = await r.xrange(stream.key, "(" + info[0]["last-delivered-id"].decode(), "+")
    left = [p["message_id"].decode() for p in pending] + [i.decode() for i, _ in undelivered]
    assert sorted(acked + left) == sorted(added)
    assert len(set(acked)) == len(acked)
