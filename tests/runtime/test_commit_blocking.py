"""The commit script sent from a thread (the actor's direct path), against a real server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.runtime.test_commit import committer, key, out, read_pending
from topology.runtime.commit import Entry, attempts_field
from topology.runtime.connect import client_from_url
from topology.server import ServerCluster
from topology.streams import RETRYABLE_ERRORS

GROUP = "sink"


async def test_a_blocking_commit_forwards_acks_and_fences_like_the_loop_one(
    r: aioredis.Redis,
) -> None:
    events = await read_pending(r, "in", "c1", 3)
    await r.xclaim(key("in"), GROUP, "c2", 0, [events[0].id])  # claimed away meanwhile
    c = committer(r, "c1")
    assert c.can_block
    entries = [Entry(e, [out("out", "x", e.payload)]) for e in events]
    conflicts = await asyncio.to_thread(c.commit_blocking, entries)
    assert conflicts == [0]
    assert [f[b"p"] for _, f in await r.xrange(key("out"))] == [b"1", b"2"]
    pending = await r.xpending_range(key("in"), GROUP, "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [events[0].id]
    c.close_blocking()


async def test_a_sent_commit_lands_once_its_reply_is_read(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 2)
    c = committer(r, "c1")
    c.send_commit_blocking([Entry(e, [out("out", "x", e.payload)]) for e in events])
    assert await asyncio.to_thread(c.finish_commit_blocking) == []
    assert await r.xlen(key("out")) == 2
    assert (await r.xpending(key("in"), GROUP))["pending"] == 0
    with pytest.raises(RedisConnectionError):  # nothing sent: nothing to finish
        c.finish_commit_blocking()
    c.close_blocking()


async def test_a_blocking_commit_loads_the_script_again_after_a_flush(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 2)
    c = committer(r, "c1")
    assert await asyncio.to_thread(c.commit_blocking, [Entry(events[0])]) == []
    await r.script_flush()  # what a restarted server without persistence looks like
    assert await asyncio.to_thread(c.commit_blocking, [Entry(events[1])]) == []
    assert (await r.xpending(key("in"), GROUP))["pending"] == 0
    c.close_blocking()


async def test_a_killed_blocking_connection_fails_one_commit_and_the_retry_lands_once(
    r: aioredis.Redis,
) -> None:
    events = await read_pending(r, "in", "c1", 2)
    c = committer(r, "c1")
    assert await asyncio.to_thread(c.commit_blocking, [Entry(events[0])]) == []
    await r.client_kill_filter(_type="normal", skipme=True)  # cuts the committer's connection
    entries = [Entry(events[1], [out("out", "x", b"once")])]
    with pytest.raises(RETRYABLE_ERRORS):
        await asyncio.to_thread(c.commit_blocking, entries)
    assert await asyncio.to_thread(c.commit_blocking, entries) == []  # reconnects
    assert [f[b"p"] for _, f in await r.xrange(key("out"))] == [b"once"]
    assert (await r.xpending(key("in"), GROUP))["pending"] == 0
    c.close_blocking()


async def test_attempts_are_counted_from_a_thread(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 2)
    c = committer(r, "c1")
    assert await asyncio.to_thread(c.count_attempts_blocking, events) == [1, 1]
    assert await asyncio.to_thread(c.count_attempts_blocking, events[:1]) == [2]
    assert await c.count_attempts(events[1:]) == [2]
    field = attempts_field("in", events[0].id).encode()
    assert await r.hget(c.attempts_key, field) == b"2"
    c.close_blocking()


async def test_the_blocking_connection_logs_in_as_the_clients_acl_user(redis_url: str) -> None:
    admin = aioredis.Redis.from_url(redis_url)
    await admin.acl_setuser(
        "worker", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"]
    )
    user_url = redis_url.replace("redis://", "redis://worker:s3cret@")
    client = client_from_url(user_url)
    try:
        events = await read_pending(client, "in", "c1", 1)
        c = committer(client, "c1")
        assert await asyncio.to_thread(c.commit_blocking, [Entry(events[0])]) == []
        who = [cl for cl in await admin.client_list() if cl["user"] == "worker"]
        assert who, "no connection of the ACL user"
        c.close_blocking()
    finally:
        await client.aclose()
        await admin.acl_deluser("worker")
        await admin.aclose()


async def test_a_cluster_client_has_no_blocking_commit(redis_cluster: ServerCluster) -> None:
    client = aioredis.RedisCluster.from_url(redis_cluster.url)
    try:
        assert not committer(client, "c1").can_block  # the loop path commits there
    finally:
        await client.aclose()
