"""Semantics 6 and 7: a lost consumer group is re-created; a lost connection is retried."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.helpers import LatencyPromise, wait_blocked, wait_for
from tests.streams.conftest import read_n
from topology import streams
from topology.server import ServerProcess


async def test_destroyed_group_is_recreated_and_reading_resumes(
    r: aioredis.Redis, conn: streams.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    stream = conn.stream("lost")
    async with await stream.new_sink("s", block=5.0) as sink:
        delivered = await stream.add_many((f"a{i}", b"", None) for i in range(3))
        await sink.ack_many(await read_n(sink, 3))
        reading = asyncio.ensure_future(sink.read_batch())
        await wait_blocked(r)
        with caplog.at_level(logging.WARNING, logger="topology.streams"):
            await r.xgroup_destroy(stream.key, "s")
            after = await stream.add("b", b"")
            got = await asyncio.wait_for(reading, 5)
        assert [e.id for e in got] == [after]
        # Re-created right after the last delivered event, not at "newest" nor "oldest".
        groups = await r.xinfo_groups(stream.key)
        assert [g["name"] for g in groups] == [b"s"]
        assert delivered[-1] < after
        assert sum("consumer group missing" in m for m in caplog.messages) == 1


async def test_flushall_recreates_the_group_and_reading_resumes(
    r: aioredis.Redis, conn: streams.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    stream = conn.stream("flushed")
    async with await stream.new_sink("s", block=0.2) as sink:
        await stream.add("a", b"")
        await sink.ack_many(await read_n(sink, 1))
        with caplog.at_level(logging.WARNING, logger="topology.streams"):
            await r.flushall()
            # The sink's next read meets NOGROUP (or a missing key): it re-creates the
            # group; events added after the flush are delivered.
            reading = asyncio.ensure_future(read_n(sink, 1))
            await asyncio.sleep(0)
            after = await stream.add("b", b"")
            got = await reading
        assert [e.id for e in got] == [after]
        assert any("consumer group missing" in m for m in caplog.messages)


async def _restart_scenario(
    server: ServerProcess, caplog: pytest.LogCaptureFixture
) -> tuple[list[str], list[str], list[streams.Event]]:
    client = aioredis.Redis.from_url(server.url)
    conn = streams.Connection(client)
    stream = conn.stream("restart")
    try:
        async with await stream.new_sink("s", block=0.5) as sink:
            acked = await stream.add_many((f"a{i}", b"", None) for i in range(3))
            await sink.ack_many(await read_n(sink, 3))
            with caplog.at_level(logging.WARNING, logger="topology.streams"):
                reading = asyncio.ensure_future(sink.read_batch())
                await wait_blocked(client)  # the read is in flight when the server goes
                await asyncio.to_thread(server.stop)

                async def retrying() -> bool:
                    return any("read failed" in m for m in caplog.messages)

                await wait_for(retrying, what="the sink to retry")
                assert not reading.done()
                await asyncio.to_thread(server.start)
                # The test's producer uses its own fresh client: the old one's pooled
                # connections died with the server (the sink's recovery is under test).
                producer = aioredis.Redis.from_url(server.url)
                try:
                    added = (
                        await streams.Connection(producer)
                        .stream("restart")
                        .add_many((f"b{i}", b"", None) for i in range(3))
                    )
                finally:
                    await producer.aclose()
                got = list(await asyncio.wait_for(reading, 10))
                if len(got) < 3:
                    got += await read_n(sink, 3 - len(got))
            assert any("read failed" in m for m in caplog.messages)
            return acked, added, got
    finally:
        await client.aclose()


async def test_connection_loss_then_restart_resumes_without_persistence(
    fresh_server: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    # No persistence: the restarted server is empty, so the group is lost too.
    _acked, added, got = await _restart_scenario(fresh_server, caplog)
    assert [e.id for e in got] == added


async def test_connection_loss_then_restart_with_persistence_redelivers_nothing_acked(
    server_binary: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = ServerProcess(
        tmp_path / "aof",
        binary=server_binary,
        appendonly=True,
        extra_args=("--appendfsync", "always"),
    )
    server.start()
    try:
        acked, added, got = await _restart_scenario(server, caplog)
    finally:
        server.stop()
    assert [e.id for e in got] == added
    assert not set(acked) & {e.id for e in got}


async def test_close_during_an_outage_returns_at_once(
    fresh_server: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    client = aioredis.Redis.from_url(fresh_server.url)
    try:
        sink = await streams.Connection(client).stream("down").new_sink("s", block=5.0)
        with caplog.at_level(logging.WARNING, logger="topology.streams"):
            reading = asyncio.ensure_future(sink.read_batch())
            await wait_blocked(client)
            await asyncio.to_thread(fresh_server.stop)

            async def retrying() -> bool:
                return any("read failed" in m for m in caplog.messages)

            await wait_for(retrying, what="the sink to retry")
            promise = LatencyPromise(0.1)
            await sink.close()
            assert await asyncio.wait_for(reading, 1) == []
            promise.check("close during an outage")
    finally:
        await client.aclose()
