"""A connection that stops answering without closing: sinks and readers resume on new ones.

The proxy in front of the server freezes every open connection (``stall``) while
new ones go through, as a NAT that forgot a flow or a stuck proxy does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.proxy import TcpProxy
from topology import streams

#: The client's bound on a reply (its socket timeout) in these tests.
TIMEOUT = 0.5
BLOCK = 0.3


@pytest.fixture
async def via_proxy(proxy: TcpProxy) -> AsyncIterator[streams.Connection]:
    """A library user's client, through the proxy, with a short socket timeout."""
    client = aioredis.Redis.from_url(proxy.url, socket_timeout=TIMEOUT)
    yield streams.Connection(client)
    await client.aclose()


@pytest.fixture
async def direct(redis_url: str) -> AsyncIterator[streams.Connection]:
    client = aioredis.Redis.from_url(redis_url)
    yield streams.Connection(client)
    await client.aclose()


async def _read(consumer: streams.Sink | streams.Reader, n: int, bound: float) -> list[str]:
    """The payloads of the next ``n`` events, within ``bound`` seconds."""
    got: list[str] = []

    async def take() -> None:
        while len(got) < n:
            batch = await consumer.read_batch()
            got.extend(e.payload.decode() for e in batch)
            if isinstance(consumer, streams.Sink):
                await consumer.ack_many(batch)

    await asyncio.wait_for(take(), bound)
    return got


async def test_a_sink_resumes_on_a_new_connection_after_a_stall(
    proxy: TcpProxy,
    via_proxy: streams.Connection,
    direct: streams.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="topology.streams")
    sink = await via_proxy.stream("s").new_sink("g", start="oldest", block=BLOCK)
    async with sink:
        assert sink.read_deadline == pytest.approx(BLOCK + TIMEOUT)
        await direct.stream("s").add_many((f"e{i}", str(i), None) for i in range(5))
        assert await _read(sink, 5, 5) == [str(i) for i in range(5)]
        reading = asyncio.ensure_future(_read(sink, 20, 10))
        await asyncio.sleep(0)  # the read is on its way before the path freezes
        assert proxy.stall() >= 1
        await direct.stream("s").add_many((f"e{i}", str(i), None) for i in range(5, 25))
        # Once past its deadline the frozen read is cut and the next goes on a new connection.
        assert await reading == [str(i) for i in range(5, 25)]
    pending = await direct.redis.xpending(direct.stream_key("s"), "g")
    assert pending["pending"] == 0
    assert f"at 127.0.0.1:{proxy.port} within" in caplog.text  # names the node, once a connection


async def test_a_reader_resumes_on_a_new_connection_after_a_stall(
    proxy: TcpProxy, via_proxy: streams.Connection, direct: streams.Connection
) -> None:
    reader = await via_proxy.stream("s").new_reader(start="oldest", block=BLOCK)
    async with reader:
        await direct.stream("s").add_many((f"e{i}", str(i), None) for i in range(3))
        assert await _read(reader, 3, 5) == ["0", "1", "2"]
        reading = asyncio.ensure_future(_read(reader, 10, 10))
        await asyncio.sleep(0)
        assert proxy.stall() >= 1
        await direct.stream("s").add_many((f"e{i}", str(i), None) for i in range(3, 13))
        assert await reading == [str(i) for i in range(3, 13)]  # none lost, none twice


async def test_a_blocking_read_has_a_deadline_without_a_socket_timeout(
    proxy: TcpProxy,
) -> None:
    """A client with no socket timeout at all: its reads still end, BLOCK plus a margin."""
    client = aioredis.Redis.from_url(proxy.url, socket_timeout=None)
    try:
        reader = await streams.Connection(client).stream("s").new_reader(block=0.2)
        async with reader:
            assert reader.read_deadline == pytest.approx(0.2 + streams.DEFAULT_TIMEOUT)
    finally:
        await client.aclose()


async def test_an_add_past_its_deadline_is_never_sent_again(
    proxy: TcpProxy, via_proxy: streams.Connection, direct: streams.Connection
) -> None:
    stream = via_proxy.stream("s")
    await stream.add("warm", b"")  # a pooled connection exists
    accepted = proxy.accepted
    proxy.delay(TIMEOUT * 3)  # the XADD reaches the server, its reply comes too late
    with pytest.raises(streams.AddOutcomeUnknown) as info:
        await stream.add("slow", b"x")
    assert isinstance(info.value.__cause__, streams.DeadlineExceeded)
    # A re-send would have needed a new connection: none was opened.
    assert proxy.accepted == accepted
    proxy.delay(0)

    async def arrived() -> bool:
        return int(await direct.redis.xlen(direct.stream_key("s"))) >= 2

    await asyncio.wait_for(_until(arrived), 5)
    names = [f[b"n"] for _, f in await direct.redis.xrange(direct.stream_key("s"))]
    assert names == [b"warm", b"slow"]


async def _until(check):  # type: ignore[no-untyped-def]
    while not await check():
        await asyncio.sleep(0.02)  # server state written by the delayed proxy: no event
