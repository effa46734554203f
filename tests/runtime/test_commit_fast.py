"""The commit's fast paths (uniform batches, one ownership query, hiredis packing) keep
every guarantee of the general path: fencing, trimming, counters, recovery."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis

from tests.runtime.test_commit import committer, key, read_pending
from topology.config.model import StreamSpec
from topology.runtime.commit import Add, Entry, attempts_field
from topology.runtime.keys import EngineKeys
from topology.streams import Event

GROUP = "sink"
ATTEMPTS = EngineKeys("t").attempts(GROUP)


def forward(events: list[Event], stream: str = "out") -> list[Entry]:
    return [Entry(e, [Add(stream, ["n", "x", "p", e.payload])]) for e in events]


async def test_a_map_stage_batch_takes_the_compact_uniform_form(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 3)
    _, args = committer(r, "c1").build(forward(events))
    assert "u" in args and "g" not in args
    assert len(args) < 3 * 9  # 3 arguments per event, not 9
    mixed = [*forward(events[:2]), Entry(events[2])]  # one event with no output
    _, args = committer(r, "c1").build(mixed)
    assert "g" in args


async def test_uniform_batch_is_fenced_against_claimed_away_events(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 4)
    await r.xclaim(key("in"), GROUP, "c2", 0, [events[1].id, events[3].id])
    conflicts = await committer(r, "c1").commit(forward(events))
    assert conflicts == [1, 3]
    assert [f[b"p"] for _, f in await r.xrange(key("out"))] == [b"0", b"2"]
    owners = await r.xpending_range(key("in"), GROUP, "-", "+", 10)
    assert [p["consumer"] for p in owners] == [b"c2", b"c2"]


async def test_ownership_beyond_the_pending_window_is_checked_event_by_event(
    r: aioredis.Redis,
) -> None:
    """The consumer holds far more than the one query returns: its tail is still owned."""
    events = await read_pending(r, "in", "c1", 300)
    tail = events[-2:]  # outside the 2 * 2 + 64 first pending entries
    await r.xclaim(key("in"), GROUP, "c2", 0, [tail[0].id])
    conflicts = await committer(r, "c1").commit(forward(tail))
    assert conflicts == [0]
    assert [f[b"p"] for _, f in await r.xrange(key("out"))] == [b"299"]
    assert (await r.xpending(key("in"), GROUP))["pending"] == 299


async def test_uniform_batch_clears_attempt_counters_and_trims(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 300)
    await r.hincrby(ATTEMPTS, attempts_field("in", events[5].id), 2)
    await r.hincrby(ATTEMPTS, attempts_field("in", "999-0"), 1)
    c = committer(r, "c1", {"out": StreamSpec("out", max_len=10)})
    assert await c.commit(forward(events)) == []
    assert await r.xlen(key("out")) < 300  # MAXLEN ~ applied on the uniform path too
    assert await r.hkeys(ATTEMPTS) == [attempts_field("in", "999-0").encode()]
    assert (await r.xpending(key("in"), GROUP))["pending"] == 0


async def test_a_retried_uniform_commit_writes_nothing_twice(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 5)
    c = committer(r, "c1")
    assert await c.commit(forward(events)) == []
    assert await c.commit(forward(events)) == [0, 1, 2, 3, 4]
    assert await r.xlen(key("out")) == 5


async def test_plain_client_commits_through_hiredis_packing(r: aioredis.Redis) -> None:
    assert committer(r, "c1")._packer is not None


async def test_commit_loads_the_script_again_after_a_script_flush(r: aioredis.Redis) -> None:
    """A restarted (or flushed) server forgot the script: NOSCRIPT, load, run once."""
    events = await read_pending(r, "in", "c1", 4)
    c = committer(r, "c1")
    assert await c.commit(forward(events[:2])) == []
    await r.script_flush()
    assert await c.commit(forward(events[2:])) == []
    assert await r.xlen(key("out")) == 4


async def test_a_cancelled_commit_leaves_the_client_usable(r: aioredis.Redis) -> None:
    """Cancelled mid-flight, the connection is dropped (its reply may still come), not reused."""
    events = await read_pending(r, "in", "c1", 200)
    c = committer(r, "c1")
    task = asyncio.ensure_future(c.commit(forward(events[:100])))
    await asyncio.sleep(0)  # let it send (a cancellation point, not a synchronisation)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    conflicts = await c.commit(forward(events))
    # Whatever the cancelled one did, every event is committed exactly once.
    assert (await r.xpending(key("in"), GROUP))["pending"] == 0
    assert await r.xlen(key("out")) == 200
    assert len(conflicts) in (0, 100)
    assert await r.ping()


async def test_a_wrong_type_output_fails_a_uniform_batch_before_writing(
    r: aioredis.Redis,
) -> None:
    events = await read_pending(r, "in", "c1", 3)
    await r.set(key("bad"), "x")
    try:
        await committer(r, "c1").commit(forward(events, "bad"))
    except aioredis.ResponseError as exc:
        assert "WRONGTYPE" in str(exc)
    else:
        raise AssertionError("the commit should have failed")
    assert (await r.xpending(key("in"), GROUP))["pending"] == 3


async def test_commits_reuse_the_committers_own_connection_not_the_pool(
    r: aioredis.Redis,
) -> None:
    events = await read_pending(r, "in", "c1", 6)
    c = committer(r, "c1")
    pool = r.connection_pool
    taken: list[object] = []
    original = pool.get_connection

    async def counting(*args: object, **kwargs: object) -> object:
        conn = await original(*args, **kwargs)
        taken.append(conn)
        return conn

    pool.get_connection = counting  # type: ignore[method-assign]
    try:
        for i in range(3):
            assert await c.commit(forward(events[2 * i : 2 * i + 2])) == []
    finally:
        del pool.get_connection
    assert taken == []  # no pool round trip per commit
    assert await r.xlen(key("out")) == 6
    await c.close()
    await c.close()  # idempotent


async def test_overlapping_commits_fall_back_to_the_pool(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 100)
    c = committer(r, "c1")
    results = await asyncio.gather(c.commit(forward(events[:50])), c.commit(forward(events[50:])))
    assert results == [[], []]
    assert await r.xlen(key("out")) == 100
    assert (await r.xpending(key("in"), GROUP))["pending"] == 0
    await c.close()


async def test_a_commit_after_the_server_dropped_its_connection_reconnects(
    r: aioredis.Redis,
) -> None:
    events = await read_pending(r, "in", "c1", 4)
    c = committer(r, "c1")
    assert await c.commit(forward(events[:2])) == []
    await r.client_kill_filter(_type="normal", skipme=True)  # the committer's socket too
    for _ in range(3):  # the first may see the dead socket: the actor retries likewise
        try:
            assert await c.commit(forward(events[2:])) == []
            break
        except (ConnectionError, OSError, aioredis.ConnectionError):
            continue
    assert await r.xlen(key("out")) == 4
    assert (await r.xpending(key("in"), GROUP))["pending"] == 0
    await c.close()
