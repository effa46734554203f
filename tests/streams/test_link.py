"""The read link: a connection of a consumer's own, its replies, cut and reconnected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from tests.helpers import wait_blocked
from topology import streams
from topology.streams._link import ReadInterrupted, ReadLink, new_link
from topology.streams._wire import entries_of

BLOCKING_READ = (b"XREADGROUP", "GROUP", "g", "c", "BLOCK", 5000, "STREAMS", "s", ">")


@pytest.fixture
async def r(conn: streams.Connection) -> aioredis.Redis:
    await conn.redis.xgroup_create("s", "g", id="$", mkstream=True)
    return conn.redis


@pytest.fixture
async def link(r: aioredis.Redis) -> AsyncIterator[ReadLink]:
    made = new_link(r)
    assert made is not None
    yield made
    await made.close()


async def blocked_read(link: ReadLink, r: aioredis.Redis) -> asyncio.Future[object]:
    """A blocking read on ``link``, once the server has it blocked."""
    read = asyncio.ensure_future(link.call(*BLOCKING_READ))
    await wait_blocked(r)
    return read


async def test_a_reply_is_the_servers_raw_reply(
    conn: streams.Connection, r: aioredis.Redis, link: ReadLink
) -> None:
    await r.xadd("s", {"n": "e", "p": "1"})
    reply = await link.call(b"XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "STREAMS", "s", ">")
    [(key, entries)] = list(entries_of(reply))
    assert key == b"s"
    assert [fields for _id, fields in entries] == [[b"n", b"e", b"p", b"1"]]


async def test_an_error_reply_is_raised_and_the_link_stays_usable(
    conn: streams.Connection, r: aioredis.Redis, link: ReadLink
) -> None:
    first = await link.call(b"CLIENT", "ID")
    with pytest.raises(ResponseError, match=r"^NOGROUP"):
        await link.call(b"XREADGROUP", "GROUP", "nope", "c", "STREAMS", "s", ">")
    assert await link.call(b"CLIENT", "ID") == first  # the same connection


async def test_a_cancelled_read_never_answers_the_next_command(
    conn: streams.Connection, r: aioredis.Redis, link: ReadLink
) -> None:
    read = await blocked_read(link, r)
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    await r.xadd("s", {"n": "late", "p": "x"})  # what the cut read would have been sent
    assert await link.call(b"PING") in (b"PONG", "PONG")


async def test_abort_ends_a_blocked_read_at_once_and_the_next_call_reconnects(
    conn: streams.Connection, r: aioredis.Redis, link: ReadLink
) -> None:
    before = await link.call(b"CLIENT", "ID")
    read = await blocked_read(link, r)
    link.abort()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(read, 1.0)
    assert await link.call(b"CLIENT", "ID") != before


async def test_a_connection_the_server_kills_fails_the_read_and_the_next_one_reconnects(
    conn: streams.Connection, r: aioredis.Redis, link: ReadLink
) -> None:
    ident = await link.call(b"CLIENT", "ID")
    read = await blocked_read(link, r)
    await r.client_kill_filter(_id=ident)
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(read, 2.0)
    assert not isinstance(read.exception(), ReadInterrupted)  # the server, not an abort
    await r.xadd("s", {"n": "e", "p": "1"})
    reply = await link.call(b"XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">")
    assert reply  # read on a new connection


async def test_a_resp3_push_between_replies_is_not_taken_for_a_reply(
    conn: streams.Connection, r: aioredis.Redis, link: ReadLink
) -> None:
    if not isinstance(await link.call(b"HELLO"), dict):  # HELLO answers a map on RESP3
        pytest.skip("pushes are RESP3-only")
    assert await link.call(b"CLIENT", "TRACKING", "ON") in (b"OK", "OK")
    await link.call(b"GET", "watched")
    await r.set("watched", "changed")  # the server pushes an invalidation to the link
    await r.set("watched", "again")
    assert await link.call(b"PING") in (b"PONG", "PONG")
    assert await link.call(b"ECHO", "after") == b"after"


async def _steps(n: int) -> None:
    """Let the event loop run ``n`` steps: an offset into the call, not a synchronisation."""
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_cut_at_any_offset_into_a_call_leaves_the_link_usable_at_once(
    conn: streams.Connection, r: aioredis.Redis, link: ReadLink
) -> None:
    # Each call starts on a closed link, so the cut lands anywhere in connecting
    # (redis-py's handshake sends several commands), sending and reading. A cut
    # that let anything be sent on the aborted transport broke the next call on
    # Python 3.13.0 (AttributeError, or a connect that hangs for the connect timeout).
    for offset in range(40):
        await link.close()
        call = asyncio.ensure_future(link.call(b"PING"))
        await _steps(offset)
        link.abort()
        try:
            reply = await asyncio.wait_for(call, 1.0)
        except ReadInterrupted:
            pass  # cut before its reply was in: never any other error
        else:
            assert reply in (b"PONG", "PONG"), f"offset {offset}"
        assert not link.busy
        assert await asyncio.wait_for(link.call(b"PING"), 1.0) in (b"PONG", "PONG"), offset
