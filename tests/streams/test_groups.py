"""Semantic 2: same sink name = one consumer group; different names and readers see all."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis.asyncio as aioredis

from tests.helpers import wait_blocked
from tests.streams.conftest import read_n
from topology import streams

TOTAL = 1000


async def _consume_until(sinks: list[streams.Sink], total: int) -> list[list[str]]:
    """Each sink reads and acks until ``total`` events were received by all together."""
    received: list[list[str]] = [[] for _ in sinks]
    done = asyncio.Event()

    async def run(i: int, sink: streams.Sink) -> None:
        while not done.is_set():
            batch = await sink.read_batch()
            if not batch:
                return  # closed
            received[i].extend(e.id for e in batch)
            await sink.ack_many(batch)
            if sum(len(x) for x in received) >= total:
                done.set()

    tasks = [asyncio.ensure_future(run(i, s)) for i, s in enumerate(sinks)]
    await asyncio.wait_for(done.wait(), 20)
    for sink in sinks:
        await sink.close()
    await asyncio.gather(*tasks)
    return received


@pytest.mark.parametrize("instances", [2, 3])
async def test_same_sink_name_delivers_each_event_to_exactly_one_instance(
    r: aioredis.Redis, conn: streams.Connection, instances: int
) -> None:
    stream = conn.stream("shared")
    sinks = [await stream.new_sink("workers", count=10) for _ in range(instances)]
    assert len({s.consumer for s in sinks}) == instances
    consume = asyncio.ensure_future(_consume_until(sinks, TOTAL))
    await wait_blocked(r, instances)
    ids = await stream.add_many((f"e{i}", str(i), None) for i in range(TOTAL))

    received = await consume
    counts = Counter(i for part in received for i in part)
    assert sorted(counts) == sorted(ids)
    assert max(counts.values()) == 1, "an event was delivered twice"
    assert sum(1 for part in received if part) >= 2, "the group did not share the events"
    assert (await r.xpending(stream.key, "workers"))["pending"] == 0


async def test_different_sink_names_each_get_every_event(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    stream = conn.stream("fanout")
    sinks = [await stream.new_sink(name) for name in ("billing", "audit", "search")]
    ids = await stream.add_many((f"e{i}", b"x", None) for i in range(200))
    for sink in sinks:
        async with sink:
            got = await read_n(sink, 200)
            assert [e.id for e in got] == ids
            assert {e.sink_name for e in got} == {sink.name}
            await sink.ack_many(got)
    groups = {g["name"] for g in await r.xinfo_groups(stream.key)}
    assert groups == {b"billing", b"audit", b"search"}


async def test_readers_each_see_every_event_with_their_own_cursor(
    conn: streams.Connection,
) -> None:
    stream = conn.stream("readers")
    other = conn.stream("readers-2")
    before = await stream.add_many((f"old{i}", b"o", None) for i in range(5))
    from_oldest = await stream.new_reader(start="oldest")
    from_newest = await stream.new_reader()
    after_third = await stream.new_reader(start=f"after:{before[2]}")
    await from_newest.add_stream(other)
    new = await stream.add_many((f"new{i}", b"n", None) for i in range(5))
    other_id = await other.add("o", b"")

    async with from_oldest, from_newest, after_third:
        assert [e.id for e in await read_n(from_oldest, 10)] == before + new
        got = await read_n(from_newest, 6)
        assert [e.id for e in got if e.stream_name == "readers"] == new
        assert [e.id for e in got if e.stream_name == "readers-2"] == [other_id]
        assert from_newest.cursors == {"readers": new[-1], "readers-2": other_id}
        assert [e.id for e in await read_n(after_third, 7)] == before[3:] + new
