"""The commit script: forward + ack + fencing in one step, against a real server."""

from __future__ import annotations

import redis.asyncio as aioredis

from topology.config.model import StreamSpec
from topology.runtime.commit import NO_ATTEMPTS, SPLIT, Add, Committer, Entry, attempts_field
from topology.runtime.keys import EngineKeys
from topology.streams import Event

GROUP = "sink"


def key(name: str) -> str:
    return f"pulse:stream:{name}"


async def read_pending(r: aioredis.Redis, stream: str, consumer: str, n: int) -> list[Event]:
    """Create the group, add ``n`` events and read them as ``consumer`` (so they are pending)."""
    await r.xgroup_create(key(stream), GROUP, id="0", mkstream=True)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(key(stream), {"n": "ev", "p": str(i)})
    await pipe.execute()
    reply = await r.xreadgroup(GROUP, consumer, {key(stream): ">"}, count=n)
    return [
        Event(eid.decode(), f[b"n"].decode(), f[b"p"], stream_name=stream, sink_name=GROUP)
        for eid, f in reply[0][1]
    ]


def committer(
    r: aioredis.Redis, consumer: str, streams: dict[str, StreamSpec] | None = None
) -> Committer:
    return Committer(
        r,
        group=GROUP,
        consumer=consumer,
        attempts_key=EngineKeys("t").attempts(GROUP),
        stream_key=key,
        streams=lambda: streams or {},
    )


def out(stream: str, name: str, payload: bytes, topic: str | None = None) -> Add:
    fields: list[object] = ["n", name, "p", payload]
    if topic:
        fields += ["t", topic]
    return Add(stream, fields)


async def test_commit_writes_outputs_and_acks_inputs(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 3)
    c = committer(r, "c1")
    entries = [Entry(e, [out("out", "x", e.payload, topic="tp")]) for e in events[:2]]
    entries.append(Entry(events[2]))  # handled, nothing to forward: acked all the same
    assert await c.commit(entries) == []
    assert (await r.xpending(key("in"), GROUP))["pending"] == 0
    rows = await r.xrange(key("out"))
    assert [f for _, f in rows] == [
        {b"n": b"x", b"p": b"0", b"t": b"tp"},
        {b"n": b"x", b"p": b"1", b"t": b"tp"},
    ]


async def test_claimed_away_event_outputs_do_not_land(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 2)
    # c2 claims the first event (the ack grace passed while c1 was still working on it)
    await r.xclaim(key("in"), GROUP, "c2", 0, [events[0].id])
    c = committer(r, "c1")
    conflicts = await c.commit([Entry(e, [out("out", "x", e.payload)]) for e in events])
    assert conflicts == [0]
    rows = await r.xrange(key("out"))
    assert [f[b"p"] for _, f in rows] == [b"1"]  # only the owned event's output landed
    pending = await r.xpending_range(key("in"), GROUP, "-", "+", 10)
    assert [(p["message_id"].decode(), p["consumer"]) for p in pending] == [(events[0].id, b"c2")]


async def test_retried_commit_after_a_lost_reply_writes_nothing_twice(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 2)
    c = committer(r, "c1")
    entries = [Entry(e, [out("out", "x", e.payload)]) for e in events]
    assert await c.commit(entries) == []
    assert await c.commit(entries) == [0, 1]  # already acked: fenced, no duplicate
    assert await r.xlen(key("out")) == 2


async def test_commit_clears_attempt_counters(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 2)
    attempts = EngineKeys("t").attempts(GROUP)
    await r.hincrby(attempts, attempts_field("in", events[0].id), 2)
    await r.hincrby(attempts, attempts_field("in", "999-0"), 1)
    await committer(r, "c1").commit([Entry(e) for e in events])
    assert await r.hkeys(attempts) == [attempts_field("in", "999-0").encode()]


async def test_commit_trims_outputs_with_max_len(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 300)
    c = committer(r, "c1", {"out": StreamSpec("out", max_len=10)})
    await c.commit([Entry(e, [out("out", "x", e.payload)]) for e in events])
    assert await r.xlen(key("out")) < 300  # approximate trimming (MAXLEN ~)
    assert (await r.xpending(key("in"), GROUP))["pending"] == 0


async def test_commit_on_a_wrong_type_output_writes_nothing(r: aioredis.Redis) -> None:
    events = await read_pending(r, "in", "c1", 2)
    await r.set(key("bad"), "x")
    c = committer(r, "c1")
    entries = [Entry(events[0], [out("out", "x", b"1")]), Entry(events[1], [out("bad", "x", b"2")])]
    try:
        await c.commit(entries)
    except aioredis.ResponseError as exc:
        assert "WRONGTYPE" in str(exc)
    else:
        raise AssertionError("the commit should have failed")
    assert await r.xlen(key("out")) == 0
    assert (await r.xpending(key("in"), GROUP))["pending"] == 2


async def test_commit_spans_several_input_streams(r: aioredis.Redis) -> None:
    a = await read_pending(r, "a", "c1", 2)
    b = await read_pending(r, "b", "c1", 2)
    await committer(r, "c1").commit([Entry(e, [out("out", "x", e.payload)]) for e in a + b])
    assert (await r.xpending(key("a"), GROUP))["pending"] == 0
    assert (await r.xpending(key("b"), GROUP))["pending"] == 0
    assert await r.xlen(key("out")) == 4


async def test_split_commit_fallback_is_fenced_and_complete(r: aioredis.Redis) -> None:
    """The cross-slot fallback (Redis Cluster) still writes only owned events' outputs."""
    events = await read_pending(r, "in", "c1", 3)
    attempts = EngineKeys("t").attempts(GROUP)
    await r.hincrby(attempts, attempts_field("in", events[1].id), 1)
    await r.xclaim(key("in"), GROUP, "c2", 0, [events[0].id])
    c = committer(r, "c1", {"out": StreamSpec("out", max_len=100, ttl=3600)})
    c.mode = SPLIT
    conflicts = await c.commit([Entry(e, [out("out", "x", e.payload)]) for e in events])
    assert conflicts == [0]
    assert [f[b"p"] for _, f in await r.xrange(key("out"))] == [b"1", b"2"]
    pending = await r.xpending_range(key("in"), GROUP, "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [events[0].id]
    assert await r.exists(attempts) == 0


async def test_no_attempts_mode_commits_atomically_and_clears_counters_beside(
    r: aioredis.Redis,
) -> None:
    """The cluster mode for streams sharing a slot: the attempts hash is not in the script."""
    events = await read_pending(r, "in", "c1", 2)
    attempts = EngineKeys("t").attempts(GROUP)
    await r.hincrby(attempts, attempts_field("in", events[0].id), 1)
    c = committer(r, "c1")
    c.mode = NO_ATTEMPTS
    keys, _ = c.build([Entry(e) for e in events])
    assert attempts not in keys
    assert await c.commit([Entry(e, [out("out", "x", e.payload)]) for e in events]) == []
    assert await r.xlen(key("out")) == 2
    assert await r.exists(attempts) == 0


async def test_split_commit_acks_nothing_when_an_output_fails(r: aioredis.Redis) -> None:
    """Outputs first, acks only once every output is confirmed: a failing add (a node
    lost on a cluster; here a key of the wrong type) leaves its events pending."""
    events = await read_pending(r, "in", "c1", 3)
    await r.set(key("bad"), "a string")
    c = committer(r, "c1")
    c.mode = SPLIT
    entries = [Entry(e, [out("out", "x", e.payload), out("bad", "x", e.payload)]) for e in events]
    try:
        await c.commit(entries)
    except Exception as exc:
        assert "WRONGTYPE" in str(exc)
    else:
        raise AssertionError("a failed add must fail the commit")
    pending = await r.xpending_range(key("in"), GROUP, "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [e.id for e in events]


async def test_split_commit_check_that_errors_is_not_a_conflict(r: aioredis.Redis) -> None:
    """An ownership check that fails is raised (retried by the actor), never taken as
    "claimed by another consumer"; only a missing group is."""
    events = await read_pending(r, "in", "c1", 1)
    await r.set(key("bad"), "a string")
    ghost = Event("1-1", "ev", b"x", stream_name="bad", sink_name=GROUP)
    c = committer(r, "c1")
    c.mode = SPLIT
    try:
        await c.commit([Entry(events[0]), Entry(ghost)])
    except Exception as exc:
        assert "WRONGTYPE" in str(exc)
    else:
        raise AssertionError("a failed check must fail the commit")
    assert len(await r.xpending_range(key("in"), GROUP, "-", "+", 10)) == 1
    gone = Event("1-1", "ev", b"x", stream_name="nogroup", sink_name=GROUP)
    await r.xadd(key("nogroup"), {"n": "ev", "p": "x"})
    assert await c.commit([Entry(events[0]), Entry(gone)]) == [1]


async def test_failed_counter_cleanup_after_a_commit_is_no_conflict(r: aioredis.Redis) -> None:
    """On a cluster the counters are cleared beside the script: when that fails the
    commit still went through, so it must not raise (a retry would count conflicts)."""
    events = await read_pending(r, "in", "c1", 2)
    attempts = EngineKeys("t").attempts(GROUP)
    await r.set(attempts, "not a hash")
    c = committer(r, "c1")
    c.mode = NO_ATTEMPTS
    assert await c.commit([Entry(e, [out("out", "x", e.payload)]) for e in events]) == []
    assert await r.xlen(key("out")) == 2
    assert await r.xpending_range(key("in"), GROUP, "-", "+", 10) == []
