"""The library on a 3-master Redis Cluster: streams in different hash slots.

Multi-key reads cannot cross slots, so a sink over streams in several slots
reads each slot at once and takes the first answer; raw commands go to the node
serving their key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError

from tests.helpers import LatencyPromise, blocked_reads, wait_for
from tests.streams.conftest import read_n
from topology import streams
from topology.server import ServerCluster


@pytest.fixture
def cluster(redis_cluster: ServerCluster) -> int:
    """The port of one node of the session's 3-master cluster."""
    return redis_cluster.ports[0]


@pytest.fixture
async def cconn(cluster: int) -> AsyncIterator[streams.Connection]:
    client = RedisCluster(host="127.0.0.1", port=cluster)
    await client.initialize()
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield streams.Connection(client)
    await client.aclose()


async def test_sink_reads_streams_in_different_slots_and_shares_them(
    cconn: streams.Connection,
) -> None:
    names = ["alpha", "beta", "gamma", "delta"]
    slots = {cconn.redis.keyslot(cconn.stream_key(n)) for n in names}
    assert len({cconn.redis.get_node_from_key(cconn.stream_key(n)).name for n in names}) >= 2
    assert len(slots) == 4
    stream_list = [cconn.stream(n) for n in names]
    sinks = [await stream_list[0].new_sink("s", count=10) for _ in range(2)]
    for sink in sinks:
        for stream in stream_list[1:]:
            await sink.add_stream(stream)
    # Entry ids are per stream: the same id can exist on two streams (same ms).
    ids: set[tuple[str, str]] = set()
    for stream in stream_list:
        added = await stream.add_many((f"e{i}", b"x", None) for i in range(50))
        ids |= {(stream.name, entry_id) for entry_id in added}
    received: list[tuple[str, str]] = []
    done = asyncio.Event()

    async def run(sink: streams.Sink) -> None:
        while not done.is_set():
            batch = await sink.read_batch()
            if not batch:
                return
            received.extend((e.stream_name, e.id) for e in batch)
            await sink.ack_many(batch)
            if len(received) >= len(ids):
                done.set()

    tasks = [asyncio.ensure_future(run(s)) for s in sinks]
    await asyncio.wait_for(done.wait(), 20)
    for sink in sinks:
        await sink.close()
    await asyncio.gather(*tasks)
    assert len(received) == len(ids) == 200
    assert set(received) == ids


async def _wait_blocked_on_nodes(conn: streams.Connection, on: list[streams.Stream]) -> None:
    """Wait until each stream's node has a client blocked in XREADGROUP."""
    ports = [conn.redis.get_node_from_key(s.key).port for s in on]
    clients = [aioredis.Redis(port=port) for port in ports]
    try:

        async def blocked() -> bool:
            return all([await blocked_reads(c) >= 1 for c in clients])

        await wait_for(blocked, what="per-slot reads to block")
    finally:
        for client in clients:
            await client.aclose()


async def test_add_stream_interrupts_cluster_reads_within_100ms(cconn: streams.Connection) -> None:
    first, second, third = cconn.stream("alpha"), cconn.stream("beta"), cconn.stream("gamma")
    async with await first.new_sink("s", block=5.0) as sink:
        await sink.add_stream(second)
        reading = asyncio.ensure_future(sink.read_batch())
        await _wait_blocked_on_nodes(cconn, [first, second])
        promise = LatencyPromise(0.1)
        await sink.add_stream(third)
        entry = await third.add("x", b"")
        got = await asyncio.wait_for(reading, 5)
        assert [e.id for e in got] == [entry]
        promise.check("add_stream")


async def test_redelivery_and_readers_on_a_cluster(cconn: streams.Connection) -> None:
    first, second = cconn.stream("alpha"), cconn.stream("beta")
    reader = await first.new_reader(start="oldest")
    await reader.add_stream(second)
    async with reader, await first.new_sink("s", ack_grace=0.3, topic="t") as sink:
        await sink.add_stream(second)
        a = await first.topic("t").add("a", b"")
        await first.add("unmatched", b"")
        b = await second.topic("t").add("b", b"")
        first_read = await read_n(sink, 2)
        assert sorted(e.id for e in first_read) == sorted([a, b])
        again = await read_n(sink, 2)  # not acked: claimed back after the grace
        assert sorted(e.id for e in again) == sorted([a, b])
        await sink.ack_many(again)
        for stream in (first, second):
            assert (await cconn.redis.xpending(stream.key, "s"))["pending"] == 0
        assert len(await read_n(reader, 3)) == 3


async def test_close_and_remove_stream_are_bounded_on_a_cluster_at_any_offset(
    cconn: streams.Connection,
) -> None:
    # Per-slot reads on several nodes, each on a connection of the sink's own: cut
    # at every small offset from the start of the read, within 100 ms on a 5 s block.
    first, second, third = cconn.stream("alpha"), cconn.stream("beta"), cconn.stream("gamma")
    for offset in range(12):
        sink = await first.new_sink("s", block=5.0)
        await sink.add_stream(second)
        await sink.add_stream(third)
        reading = asyncio.ensure_future(sink.read_batch())
        for _ in range(offset):
            await asyncio.sleep(0)  # an offset into the read, not a synchronisation
        promise = LatencyPromise(0.1)
        await sink.remove_stream(third)
        await third.add("removed", b"")
        kept = await second.add("kept", b"")
        got = await asyncio.wait_for(reading, 10)
        assert [e.id for e in got] == [kept], f"offset {offset}"
        promise.check(f"offset {offset}: remove_stream")
        reading = asyncio.ensure_future(sink.read_batch())
        for _ in range(offset):
            await asyncio.sleep(0)
        promise = LatencyPromise(0.1)
        await sink.close()
        assert await asyncio.wait_for(reading, 10) == []
        promise.check(f"offset {offset}: close")
        await sink.ack_many(got)


async def test_reads_during_a_slot_migration_follow_ask(
    cconn: streams.Connection, redis_cluster: ServerCluster
) -> None:
    """Half-way through a slot migration the stream has moved: its old node answers ASK,
    and reads (raw commands and a sink's blocking read) go to the new one."""
    import redis as sync_redis

    stream = cconn.stream("askme")
    ids = await stream.add_many((f"e{i}", b"p", None) for i in range(3))
    sink = await stream.new_sink("s", start="oldest")
    try:
        slot = cconn.redis.keyslot(stream.key)
        nodes = {}
        for port in redis_cluster.ports:
            client = sync_redis.Redis(port=port)
            nodes[port] = (client, client.execute_command("CLUSTER", "MYID").decode())
        source = cconn.redis.get_node_from_key(stream.key).port
        target = next(p for p in nodes if p != source and p in redis_cluster.ports[:3])
        src, src_id = nodes[source]
        dst, dst_id = nodes[target]
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        try:
            src.execute_command("MIGRATE", "127.0.0.1", target, stream.key, 0, 5000)
            rows = await cconn.execute_raw(stream.key, b"XRANGE", stream.key, "-", "+")
            assert [row[0].decode() for row in rows] == ids
            got = await asyncio.wait_for(read_n(sink, 3), 10)
            assert [e.id for e in got] == ids
        finally:
            for client, _ in nodes.values():  # finish the move: the slot is the target's
                with contextlib.suppress(Exception):
                    client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            for client, _ in nodes.values():
                client.close()
            await cconn.redis.nodes_manager.initialize()
    finally:
        await sink.close()


def test_errors_of_a_cluster_in_flux_are_retried_and_redirects_are_routine() -> None:
    """What a master kill or a slot migration raises through redis-py's cluster client is
    worth trying again, never final (the commit is held and retried)."""
    from redis.exceptions import (
        AskError,
        BusyLoadingError,
        ClusterDownError,
        MovedError,
        RedisClusterException,
        TryAgainError,
    )

    for exc in (
        RedisClusterException("TTL exhausted."),
        ClusterDownError("CLUSTERDOWN The cluster is down"),
        TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        BusyLoadingError("Redis is loading the dataset in memory"),
        MovedError("3999 127.0.0.1:6381"),
        AskError("3999 127.0.0.1:6381"),
    ):
        assert streams.is_transient(exc), exc
    assert streams.is_routine_redirect(AskError("1 127.0.0.1:7000"))
    assert not streams.is_transient(RedisClusterException("Keys in request don't hash"))
    text = streams.describe_error(AskError("3999 127.0.0.1:6381"))
    assert text.startswith("AskError: 3999 127.0.0.1:6381")


async def test_a_cluster_error_names_the_node_it_came_from(cconn: streams.Connection) -> None:
    """CLUSTERDOWN says nothing of where it was sent: the error logged does."""
    key = cconn.stream_key("unserved")
    slot = cconn.redis.keyslot(key)
    node = cconn.redis.get_node_from_key(key)
    owner = aioredis.Redis(host=node.host, port=node.port)
    await owner.execute_command("CLUSTER", "DELSLOTS", slot)
    try:
        with pytest.raises(ClusterDownError) as raised:
            await cconn.execute_raw(key, b"XLEN", key)
        assert streams.describe_error(raised.value).endswith(f"(node {node.name})")
    finally:
        await owner.execute_command("CLUSTER", "ADDSLOTS", slot)
        await owner.aclose()
