"""An actor overlaps its chunks (one handled while the previous one commits) without
giving up order, the one-chunk-at-a-time handler, or the in-hand bound."""

from __future__ import annotations

import threading
from typing import Any

import redis
import redis.asyncio as aioredis

from topology import Emit, Event
from topology.runtime.actor import PIPELINE_MIN_BATCH, Actor
from topology.streams import Connection

from .test_actor import fill, make_actor, wait_for


async def test_overlapping_chunks_forward_in_read_order_one_chunk_at_a_time(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    inside = 0
    most_inside = 0
    lock = threading.Lock()
    seen: list[bytes] = []

    def handler(event: Event) -> Emit:
        nonlocal inside, most_inside
        with lock:
            inside += 1
            most_inside = max(most_inside, inside)
        seen.append(event.payload)
        with lock:
            inside -= 1
        return Emit("done", event.payload)

    await fill(conn, 600)
    actor = make_actor(conn, handler, executor, batch=PIPELINE_MIN_BATCH)
    await actor.start()
    await wait_for(lambda: actor.handled == 600)
    await actor.drain(5)
    expected = [str(i).encode() for i in range(600)]
    assert seen == expected
    rows = await r.xrange("pulse:stream:out")
    assert [f[b"p"] for _, f in rows] == expected
    assert most_inside == 1


async def test_a_small_batch_is_read_whole(conn: Connection, executor: Any) -> None:
    small = make_actor(conn, lambda e: None, executor, batch=PIPELINE_MIN_BATCH - 1)
    large = make_actor(conn, lambda e: None, executor, batch=2 * PIPELINE_MIN_BATCH)
    assert small._chunk == PIPELINE_MIN_BATCH - 1
    assert large._chunk == PIPELINE_MIN_BATCH


async def test_server_side_pending_never_exceeds_batch_while_chunks_overlap(
    conn: Connection, r: aioredis.Redis, executor: Any, redis_url: str
) -> None:
    """Sampled from inside the handler: what the server counts as delivered to this
    consumer and not acked (in hand, in the sink's buffer, in flight) stays <= batch."""
    probe = redis.Redis.from_url(redis_url)
    consumer: list[str] = []
    highest = 0

    def handler(event: Event) -> Emit:
        nonlocal highest
        rows = probe.xpending_range("pulse:stream:in", "s", "-", "+", 1000, consumer[0])
        highest = max(highest, len(rows))
        return Emit("done", event.payload)

    await fill(conn, 400)
    actor: Actor = make_actor(conn, handler, executor, batch=40)
    await actor.start()
    assert actor.sink is not None
    consumer.append(actor.sink.consumer)
    try:
        await wait_for(lambda: actor.handled == 400)
    finally:
        await actor.drain(5)
        probe.close()
    assert 0 < highest <= 40
    assert await r.xlen("pulse:stream:out") == 400
