"""A stuck handler call and an event that keeps coming back do not stall a sink:
the call fails with HandlerTimeout, the event is dead-lettered with
TooManyDeliveries, and the rest of their batch commits."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.helpers import wait_for
from tests.runtime.test_actor import fill, make_actor, pending
from topology import Emit, Event
from topology.config.model import RetryPolicy
from topology.runtime.timeouts import isolate_redelivered
from topology.streams import Connection

ONCE = RetryPolicy(max_attempts=1, backoff=0.01)


@pytest.fixture
def stuck() -> Iterator[threading.Event]:
    """Holds stuck handler calls until the test ends (so their threads end too)."""
    gate = threading.Event()
    yield gate
    gate.set()


async def _dead(r: aioredis.Redis) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await r.xrange("pulse:stream:dlq")]


async def _out(r: aioredis.Redis) -> list[int]:
    return sorted(int(f[b"p"]) for _, f in await r.xrange("pulse:stream:out"))


async def test_a_sync_call_past_the_timeout_is_abandoned_and_its_batch_commits(
    conn: Connection, r: aioredis.Redis, executor: Any, stuck: threading.Event
) -> None:
    def handler(event: Event) -> Emit:
        if event.payload == b"3":
            stuck.wait()  # never returns while the test runs: cannot be interrupted
        return Emit("done", event.payload)

    await fill(conn, 10)
    actor = make_actor(
        conn, handler, executor, batch=16, retry=ONCE, dead_letter="dlq", timeout=0.3
    )
    await actor.start()
    try:
        await wait_for(lambda: actor.handled == 9)
        await wait_for(_dead_count(r, 1))
    finally:
        await actor.drain(5)
    assert await _out(r) == [i for i in range(10) if i != 3]
    [dead] = await _dead(r)
    assert dead[b"error_type"] == b"HandlerTimeout" and dead[b"p"] == b"3"
    assert await pending(r) == 0


def _dead_count(r: aioredis.Redis, n: int) -> Any:
    async def check() -> bool:
        return int(await r.xlen("pulse:stream:dlq")) >= n

    return check


async def test_an_async_call_past_the_timeout_is_cancelled(
    conn: Connection, r: aioredis.Redis
) -> None:
    cancelled = asyncio.Event()

    async def handler(event: Event) -> Emit:
        if event.payload == b"2":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return Emit("done", event.payload)

    await fill(conn, 6)
    actor = make_actor(conn, handler, None, retry=ONCE, dead_letter="dlq", timeout=0.2)
    await actor.start()
    try:
        await asyncio.wait_for(cancelled.wait(), 10)
        await wait_for(_dead_count(r, 1))
        await wait_for(lambda: actor.handled == 5)
    finally:
        await actor.drain(5)
    assert await _out(r) == [0, 1, 3, 4, 5]
    [dead] = await _dead(r)
    assert dead[b"error_type"] == b"HandlerTimeout"
    assert await pending(r) == 0


async def test_a_handler_timeout_error_of_its_own_is_not_a_handler_timeout(
    conn: Connection, r: aioredis.Redis
) -> None:
    async def handler(event: Event) -> Emit:
        raise TimeoutError("the handler's own HTTP call timed out")

    await fill(conn, 1)
    actor = make_actor(conn, handler, None, retry=ONCE, dead_letter="dlq", timeout=5.0)
    await actor.start()
    try:
        await wait_for(_dead_count(r, 1))
    finally:
        await actor.drain(5)
    [dead] = await _dead(r)
    assert dead[b"error_type"] == b"TimeoutError"


async def test_an_event_delivered_too_often_is_dead_lettered_without_a_call(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    key = "pulse:stream:in"
    ids = [await r.xadd(key, {"n": f"e{i}", "p": str(i)}) for i in range(3)]
    await r.xgroup_create(key, "s", id="0")
    await r.xreadgroup("s", "gone", {key: ">"}, count=3)  # a consumer that died with them
    for _ in range(11):  # the poison event killed eleven more consumers
        await r.xclaim(key, "s", "gone", 0, [ids[1]])
    called: list[bytes] = []

    def handler(event: Event) -> Emit:
        called.append(event.payload)
        return Emit("done", event.payload)

    actor = make_actor(
        conn, handler, executor, retry=ONCE, dead_letter="dlq", ack_grace=0.2, max_deliveries=10
    )
    await actor.start()
    try:
        await wait_for(_dead_count(r, 1))
        await wait_for(lambda: actor.handled == 2)
    finally:
        await actor.drain(5)
    assert sorted(called) == [b"0", b"2"]  # the poison event never reached the handler
    assert await _out(r) == [0, 2]
    [dead] = await _dead(r)
    assert dead[b"error_type"] == b"TooManyDeliveries" and dead[b"p"] == b"1"
    assert b"delivered 13 times" in dead[b"error"]
    assert await pending(r) == 0


def _events(*deliveries: int) -> list[Event]:
    return [
        Event(f"1-{i}", "n", b"", stream_name="in", deliveries=d) for i, d in enumerate(deliveries)
    ]


def test_suspect_events_are_handled_one_chunk_each_in_rotating_order() -> None:
    fresh = _events(1, 2, 1)
    assert isolate_redelivered(fresh) == [fresh]  # one redelivery is routine: one chunk
    mixed = _events(1, 3, 2, 3)
    assert [[e.id for e in part] for part in isolate_redelivered(mixed)] == [
        ["1-0", "1-2"],
        ["1-3"],  # rotated by the delivery count
        ["1-1"],
    ]
    # An event read behind a crashing one goes first on the next delivery.
    assert [p[0].id for p in isolate_redelivered(_events(3, 3))] == ["1-1", "1-0"]
    assert [p[0].id for p in isolate_redelivered(_events(4, 4))] == ["1-0", "1-1"]
