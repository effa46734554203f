"""Adding across connection trouble: never re-sent (a re-sent XADD can duplicate the
event), a clear error when the outcome is unknown, a restart between adds unnoticed."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from topology import streams
from topology.server import ServerProcess


async def test_add_after_a_server_restart_just_works(fresh_server: ServerProcess) -> None:
    # The same client before and after: its pooled connection died with the server
    # and is replaced before anything is sent.
    client = aioredis.Redis.from_url(fresh_server.url)
    try:
        stream = streams.Connection(client).stream("restart")
        await stream.add("before", b"")
        await asyncio.to_thread(fresh_server.restart)  # no persistence: an empty server
        one = await stream.add("after", b"")
        many = await stream.add_many((f"m{i}", b"", None) for i in range(2))
        entries = await client.xrange(stream.key)
        assert [i.decode() for i, _ in entries] == [one, *many]
    finally:
        await client.aclose()


async def test_add_with_the_server_down_raises_a_connection_error_and_adds_nothing(
    fresh_server: ServerProcess,
) -> None:
    client = aioredis.Redis.from_url(fresh_server.url, retry=Retry(NoBackoff(), 0))
    try:
        stream = streams.Connection(client).stream("down")
        await stream.add("before", b"")
        await asyncio.to_thread(fresh_server.stop)
        with pytest.raises(RedisConnectionError) as raised:
            await stream.add("during", b"")
        # Failed before sending: certainly not added, so not "outcome unknown".
        assert not isinstance(raised.value, streams.AddOutcomeUnknown)
    finally:
        await client.aclose()


@pytest.mark.parametrize("many", [False, True], ids=["add", "add_many"])
async def test_add_whose_reply_is_lost_raises_outcome_unknown_and_is_not_resent(
    redis_url: str, r: aioredis.Redis, many: bool
) -> None:
    # Writes paused on the server: the XADD is sent, its reply never comes within
    # the socket timeout. redis-py's default policy would re-send it (10 times);
    # the library raises at once instead, saying the outcome is unknown.
    client = aioredis.Redis.from_url(redis_url, socket_timeout=0.3)
    stream = streams.Connection(client).stream("paused")
    try:
        await r.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        try:
            with pytest.raises(streams.AddOutcomeUnknown) as raised:
                if many:
                    await stream.add_many((f"e{i}", b"", None) for i in range(3))
                else:
                    await stream.add("e", b"")
        finally:
            await r.execute_command("CLIENT", "UNPAUSE")
        assert raised.value.count == (3 if many else 1)
        assert raised.value.stream_key == stream.key
        assert "may or may not have been added" in str(raised.value)
        assert isinstance(raised.value, RedisConnectionError)  # existing handlers catch it
        # Sent once at most: never more entries than events, whatever the server did.
        assert await r.xlen(stream.key) <= (3 if many else 1)
        # The client is usable again.
        assert await stream.add("next", b"")
    finally:
        await client.aclose()
