"""Semantic 3: at-least-once — redelivery after ack_grace, claims from dead instances,
stale consumers removed, one claimer at a time (a lease)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import redis.asyncio as aioredis

from tests.helpers import wait_for
from tests.streams.conftest import read_n
from topology import streams

GRACE = 0.3


async def _consumers(r: aioredis.Redis, key: str, group: str) -> dict[str, int]:
    return {c["name"].decode(): c["pending"] for c in await r.xinfo_consumers(key, group)}


async def test_unacked_event_is_redelivered_after_ack_grace(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    stream = conn.stream("grace")
    async with await stream.new_sink("s", ack_grace=GRACE) as sink:
        ids = await stream.add_many((f"e{i}", b"p", None) for i in range(3))
        first = await read_n(sink, 3)
        assert [e.id for e in first] == ids
        # Not acked: the same events come back once idle for ack_grace.
        again = await read_n(sink, 3)
        assert [e.id for e in again] == ids
        assert sink.claimed >= 3
        await sink.ack_many(again)
        assert (await r.xpending(stream.key, "s"))["pending"] == 0


async def test_events_pending_on_a_closed_instance_are_claimed_by_a_survivor(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    stream = conn.stream("closed")
    dying = await stream.new_sink("s", ack_grace=GRACE)
    ids = await stream.add_many((f"e{i}", b"p", None) for i in range(20))
    assert [e.id for e in await read_n(dying, 20)] == ids
    await dying.close()
    assert (await _consumers(r, stream.key, "s"))[dying.consumer] == 20

    async def alive(name: str, idle_ms: int) -> bool:
        return name != dying.consumer  # what the engine learns from heartbeats

    async with await stream.new_sink("s", ack_grace=GRACE, consumer_alive=alive) as survivor:
        got = await read_n(survivor, 20)
        assert sorted(e.id for e in got) == sorted(ids)
        await survivor.ack_many(got)
        assert (await r.xpending(stream.key, "s"))["pending"] == 0

        # The dead instance's consumer entry goes once its events are claimed.
        async def gone() -> bool:
            return dying.consumer not in await _consumers(r, stream.key, "s")

        await wait_for(gone, what="stale consumer removal")
        assert survivor.consumer in await _consumers(r, stream.key, "s")


async def test_an_idle_live_consumer_is_never_removed(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    """Idle for many ack graces with nothing pending is not dead: without a hook saying
    its owner is gone, the consumer stays (deleting it would drop what it reads next)."""
    stream = conn.stream("idle-live")
    idle = await stream.new_sink("s", ack_grace=GRACE)
    try:
        async with await stream.new_sink("s", ack_grace=GRACE) as active:
            ids = await stream.add_many((f"e{i}", b"p", None) for i in range(3))
            got = await read_n(active, 3)  # the idle one never reads
            assert sorted(e.id for e in got) == sorted(ids)
            await active.ack_many(got)
            for _ in range(3):  # claim passes, each past 3 x ack_grace of idleness
                await asyncio.sleep(3 * GRACE)  # idleness is what is tested
                await active.claim_once()
            assert idle.consumer in await _consumers(r, stream.key, "s")
    finally:
        await idle.close()


async def test_claim_pass_leaves_events_its_caller_holds(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    """An event the caller holds on purpose (waiting for a retry) is never handed to it
    again by its own claim pass, however long it was idle (Redis away meanwhile)."""
    stream = conn.stream("held")
    holding: set[tuple[str, str]] = set()
    async with await stream.new_sink("s", ack_grace=GRACE, held=lambda: holding) as sink:
        ids = await stream.add_many((f"e{i}", b"p", None) for i in range(2))
        await read_n(sink, 2)
        holding.add(("held", ids[0]))
        await asyncio.sleep(GRACE * 1.5)  # past the ack grace: both idle enough to claim
        await sink.claim_once()
        again = await read_n(sink, 1)
        assert [e.id for e in again] == [ids[1]]
        await sink.ack_many(again)
        await asyncio.sleep(GRACE * 1.5)  # another claim pass or two: the held one stays
        await sink.claim_once()
        assert sink.claimed == 1


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import redis.asyncio as aioredis
    from topology import streams

    async def main(url, n):
        conn = streams.Connection(aioredis.Redis.from_url(url))
        sink = await conn.stream("killed").new_sink("s", start="oldest", ack_grace=0.3)
        got = 0
        while got < n:
            got += len(await sink.read_batch(n - got))
        print(sink.consumer, flush=True)
        await asyncio.Event().wait()  # hold the events, never ack

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


async def test_events_pending_on_a_killed_process_are_claimed_by_a_survivor(
    r: aioredis.Redis, conn: streams.Connection, redis_url: str
) -> None:
    stream = conn.stream("killed")
    ids = await stream.add_many((f"e{i}", b"p", None) for i in range(50))
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        redis_url,
        "50",
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        child_consumer = line.decode().strip()
        assert (await _consumers(r, stream.key, "s"))[child_consumer] == 50
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()

    async def alive(name: str, idle_ms: int) -> bool:
        return name != child_consumer

    async with await stream.new_sink("s", ack_grace=GRACE, consumer_alive=alive) as survivor:
        got = await read_n(survivor, 50)
        assert sorted(e.id for e in got) == sorted(ids)
        await survivor.ack_many(got)

        async def gone() -> bool:
            return child_consumer not in await _consumers(r, stream.key, "s")

        await wait_for(gone, what="the killed consumer's removal")


async def test_only_the_lease_holder_claims(r: aioredis.Redis, conn: streams.Connection) -> None:
    stream = conn.stream("lease")
    lease_key = conn.keys.claim_lease("s")
    assert lease_key.startswith("pulse:")
    await r.set(lease_key, "someone-else", px=60_000)  # another instance is claiming
    a = await stream.new_sink("s", ack_grace=GRACE)
    b = await stream.new_sink("s", ack_grace=GRACE)
    try:
        ids = await stream.add_many((f"e{i}", b"p", None) for i in range(10))
        held = await read_n(a, 10)
        assert [e.id for e in held] == ids

        async def idle() -> bool:
            pending = await r.xpending_range(stream.key, "s", "-", "+", 10)
            return all(p["time_since_delivered"] > GRACE * 1000 * 2 for p in pending)

        await wait_for(idle, what="the events to idle past ack_grace")
        # Idle past the grace, yet nobody claimed: the lease is held elsewhere.
        assert await a.claim_once() == 0
        assert await b.claim_once() == 0
        assert await r.get(lease_key) == b"someone-else"
        assert (await _consumers(r, stream.key, "s"))[a.consumer] == 10

        # Lease free: the instances' claim loops race for it; the events come back once.
        received: list[str] = []
        done = asyncio.Event()

        async def run(sink: streams.Sink) -> None:
            while not done.is_set():
                batch = await sink.read_batch()
                if not batch:
                    return
                received.extend(e.id for e in batch)
                await sink.ack_many(batch)
                if len(received) >= 10:
                    done.set()

        tasks = [asyncio.ensure_future(run(s)) for s in (a, b)]
        await r.delete(lease_key)
        await asyncio.wait_for(done.wait(), 10)
        await a.close()
        await b.close()
        await asyncio.gather(*tasks)
        assert sorted(received) == sorted(ids)
        assert (await r.xpending(stream.key, "s"))["pending"] == 0
    finally:
        await a.close()
        await b.close()


async def test_one_claim_pass_takes_a_backlog_larger_than_the_buffer(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    """A dead consumer's thousands of pending events are taken page after page in the
    same pass (as fast as the sink's caller takes them), not one page per ack grace."""
    stream = conn.stream("backlog")
    ids = await stream.add_many((f"e{i}", b"p", None) for i in range(3000))
    await r.xgroup_create(stream.key, "s", id="0")
    await r.xreadgroup("s", "dead", {stream.key: ">"}, count=3000)
    # Idle for a minute already: past the sink's ack grace, with no waiting.
    await r.xclaim(stream.key, "s", "dead", 0, ids, idle=60_000, justid=True)
    async with await stream.new_sink("s", ack_grace=30, buffer=100, count=100) as sink:
        taken: list[str] = []

        async def take() -> None:
            while len(taken) < len(ids):
                batch = await sink.read_batch()
                taken.extend(e.id for e in batch)
                await sink.ack_many(batch)

        reader = asyncio.ensure_future(take())
        assert await sink.claim_once() == len(ids)
        await asyncio.wait_for(reader, 10)
    assert sorted(taken) == sorted(ids)
    assert (await r.xpending(stream.key, "s"))["pending"] == 0
