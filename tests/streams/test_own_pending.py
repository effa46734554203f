"""A sink reads back what the server delivered to its consumer and nobody acked: what a
cancelled read or a dropped buffer leaves behind, handed to its owner before it stops."""

from __future__ import annotations

import redis.asyncio as aioredis

from topology import streams


async def _lose_a_read(r: aioredis.Redis, sink: streams.Sink, key: str) -> None:
    """What a read cancelled by ``close()`` leaves: delivered to the consumer, never seen."""
    await r.xreadgroup(sink.name, sink.consumer, {key: ">"})


async def test_own_pending_hands_back_delivered_events_in_order_in_chunks(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    stream = conn.stream("lost")
    async with await stream.new_sink("s", start="oldest", topic_pattern="keep.*") as sink:
        ids = await stream.add_many(
            [("a", b"1", "keep"), ("b", b"2", "drop"), ("c", b"3", "keep.x"), ("d", b"4", "keep")]
        )
        await _lose_a_read(r, sink, stream.key)
        skip = {("lost", ids[3])}  # e.g. waiting for a retry: left alone
        chunks = [c async for c in sink.own_pending(["lost"], count=2, skip=skip)]
    assert [[e.id for e in chunk] for chunk in chunks] == [[ids[0]], [ids[2]]]
    assert [(e.name, e.payload, e.topic, e.stream_name) for e in chunks[0]] == [
        ("a", b"1", "keep", "lost")
    ]
    pending = await r.xpending_range(stream.key, "s", "-", "+", 10)
    # the unmatched one is acked; the handed-back ones are the caller's to ack
    assert [p["message_id"].decode() for p in pending] == [ids[0], ids[2], ids[3]]


async def test_own_pending_reads_a_stream_the_sink_no_longer_reads(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    stream = conn.stream("gone")
    async with await stream.new_sink("s", start="oldest") as sink:
        ids = await stream.add_many([("a", b"1", None), ("b", b"2", None)])
        await _lose_a_read(r, sink, stream.key)
        await sink.remove_stream(stream)
        chunks = [c async for c in sink.own_pending(["gone"])]
    assert [e.id for chunk in chunks for e in chunk] == ids


async def test_own_pending_of_a_stream_without_the_group_yields_nothing(
    conn: streams.Connection,
) -> None:
    async with await conn.stream("here").new_sink("s") as sink:
        assert [c async for c in sink.own_pending(["never-created"])] == []
