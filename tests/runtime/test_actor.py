"""One actor against a real server: handling, retries, dead letters, backpressure, drain."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from tests.helpers import wait_for
from topology import Emit, Event
from topology.config.model import RetryPolicy, SinkSpec, StreamRef, StreamSpec
from topology.runtime.actor import Actor
from topology.runtime.handlers import runner_for
from topology.runtime.keys import EngineKeys
from topology.runtime.metrics import Metrics
from topology.server import ServerProcess
from topology.streams import Connection

KEYS = EngineKeys("test")


def make_actor(
    conn: Connection,
    fn: Callable[..., Any],
    executor: Any,
    *,
    outputs: tuple[str, ...] = ("out",),
    streams: tuple[str, ...] = ("in",),
    batch: int = 64,
    retry: RetryPolicy | None = None,
    dead_letter: str | None = None,
    metrics: Metrics | None = None,
    ack_grace: float = 5.0,
    **options: Any,
) -> Actor:
    spec = SinkSpec(
        name="s",
        streams=tuple(StreamRef(s) for s in streams),
        handler="x:y",
        outputs=outputs,
        start="oldest",
        batch=batch,
        retry=retry or RetryPolicy(max_attempts=3, backoff=0.01),
        dead_letter=dead_letter,
        ack_grace=ack_grace,
        **options,
    )
    return Actor(
        spec,
        0,
        conn=conn,
        handler=runner_for(fn, outputs, executor=executor),
        attempts_key=KEYS.attempts("s"),
        streams=lambda: {"out": StreamSpec("out")},
        metrics=metrics or Metrics(),
    )


async def fill(conn: Connection, n: int, stream: str = "in") -> None:
    await conn.stream(stream).add_many((f"e{i}", str(i), None) for i in range(n))


async def pending(r: aioredis.Redis, stream: str = "in", group: str = "s") -> int:
    return int((await r.xpending(f"pulse:stream:{stream}", group))["pending"])


async def test_sync_handler_forwards_every_event_once(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    await fill(conn, 500)
    actor = make_actor(conn, lambda e: Emit("done", e.payload), executor)
    await actor.start()
    await wait_for(lambda: actor.handled == 500)
    await actor.drain(5)
    rows = await r.xrange("pulse:stream:out")
    assert sorted(int(f[b"p"]) for _, f in rows) == list(range(500))
    assert await pending(r) == 0


async def test_async_handler_forwards_every_event_once(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    async def handler(event: Event) -> list[Emit]:
        await asyncio.sleep(0)
        return [Emit("a", event.payload), Emit("b", event.payload, topic="t")]

    await fill(conn, 300)
    actor = make_actor(conn, handler, executor)
    await actor.start()
    await wait_for(lambda: actor.handled == 300)
    await actor.drain(5)
    assert await r.xlen("pulse:stream:out") == 600
    assert await pending(r) == 0


async def test_handler_failing_twice_then_succeeding_is_processed_once(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def flaky(event: Event) -> Emit:
        with lock:
            calls[event.id] = calls.get(event.id, 0) + 1
            n = calls[event.id]
        if event.name == "e3" and n <= 2:
            raise RuntimeError("not yet")
        return Emit("ok", event.payload)

    await fill(conn, 10)
    actor = make_actor(conn, flaky, executor, dead_letter="dlq")
    await actor.start()
    await wait_for(lambda: actor.handled == 10)
    await actor.drain(5)
    rows = await r.xrange("pulse:stream:out")
    assert sorted(int(f[b"p"]) for _, f in rows) == list(range(10))
    assert max(calls.values()) == 3
    assert await r.exists("pulse:stream:dlq") == 0
    assert await r.exists(KEYS.attempts("s")) == 0  # counter cleared on success
    assert await pending(r) == 0


async def test_always_failing_event_is_dead_lettered_with_its_fields_and_acked(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    def handler(event: Event) -> Emit:
        if event.name == "e1":
            raise ValueError("bad payload")
        return Emit("ok", event.payload)

    await conn.stream("in").add_many([("e0", "0", None), ("e1", "1", "tp"), ("e2", "2", None)])
    metrics = Metrics()
    actor = make_actor(conn, handler, executor, dead_letter="dlq", metrics=metrics)
    await actor.start()
    await wait_for(lambda: metrics.dead["s"] == 1 and actor.handled == 2)
    await actor.drain(5)
    ((_, dead),) = await r.xrange("pulse:stream:dlq")
    source_id = (await r.xrange("pulse:stream:in"))[1][0]
    assert dead[b"n"] == b"e1" and dead[b"p"] == b"1" and dead[b"t"] == b"tp"
    assert dead[b"origin_stream"] == b"in" and dead[b"origin_id"] == source_id
    assert dead[b"sink"] == b"s" and dead[b"attempts"] == b"3"
    assert dead[b"error_type"] == b"ValueError" and dead[b"error"] == b"bad payload"
    assert await pending(r) == 0
    assert metrics.failed["s"] == 3


async def test_emit_to_a_stream_not_in_outputs_dead_letters_the_input(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    await fill(conn, 1)
    metrics = Metrics()
    actor = make_actor(
        conn,
        lambda e: Emit("x", b"", stream="elsewhere"),
        executor,
        dead_letter="dlq",
        metrics=metrics,
    )
    await actor.start()
    await wait_for(lambda: metrics.dead["s"] == 1)
    await actor.drain(5)
    assert await r.exists("pulse:stream:elsewhere") == 0  # never a silent write
    ((_, dead),) = await r.xrange("pulse:stream:dlq")
    assert dead[b"error_type"] == b"ContractError"
    assert b"elsewhere" in dead[b"error"]
    assert await pending(r) == 0


async def test_without_dead_letter_an_exhausted_event_is_acked_and_dropped(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    def boom(event: Event) -> None:
        raise RuntimeError("always")

    await fill(conn, 2)
    metrics = Metrics()
    actor = make_actor(conn, boom, executor, metrics=metrics)
    await actor.start()
    await wait_for(lambda: metrics.dead["s"] == 2)
    await wait_for(lambda: actor.in_hand == 0)
    await actor.drain(5)
    assert await pending(r) == 0
    assert await r.exists("pulse:stream:out") == 0


async def test_attempt_count_continues_from_redis_after_a_restart(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    await fill(conn, 1)
    entry_id = (await r.xrange("pulse:stream:in"))[0][0].decode()
    await r.hset(KEYS.attempts("s"), f"in/{entry_id}", 2)  # two attempts in a previous life

    def boom(event: Event) -> None:
        raise RuntimeError("still failing")

    metrics = Metrics()
    actor = make_actor(conn, boom, executor, dead_letter="dlq", metrics=metrics)
    await actor.start()
    await wait_for(lambda: metrics.dead["s"] == 1)
    await actor.drain(5)
    assert metrics.failed["s"] == 1  # the third and last attempt
    ((_, dead),) = await r.xrange("pulse:stream:dlq")
    assert dead[b"attempts"] == b"3"


async def test_failures_do_not_hold_up_the_rest_of_the_batch(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    def handler(event: Event) -> Emit:
        if event.name == "e0":
            raise RuntimeError("slow to recover")
        return Emit("ok", event.payload)

    await fill(conn, 20)
    actor = make_actor(conn, handler, executor, retry=RetryPolicy(max_attempts=5, backoff=30.0))
    await actor.start()
    await wait_for(lambda: actor.handled == 19, timeout=5)  # long before the 30 s backoff
    assert actor.in_hand == 1
    await actor.drain(5)
    assert await pending(r) == 1  # the failing one stays pending, its count in Redis
    assert await r.hlen(KEYS.attempts("s")) == 1


async def test_actor_never_holds_more_than_batch_events(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    release = threading.Event()
    seen = []

    def blocking(event: Event) -> None:
        seen.append(event.id)
        release.wait(10)

    await fill(conn, 100)
    actor = make_actor(conn, blocking, executor, batch=8)
    await actor.start()
    await wait_for(lambda: len(seen) >= 1)
    info = await r.xpending("pulse:stream:in", "s")
    assert info["pending"] <= 8
    release.set()
    await wait_for(lambda: actor.handled == 100)
    await actor.drain(5)


async def test_drain_commits_the_batch_in_hand(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    started = threading.Event()

    def slow(event: Event) -> Emit:
        started.set()
        time.sleep(0.3)
        return Emit("ok", event.payload)

    await fill(conn, 3)
    actor = make_actor(conn, slow, executor, batch=3)
    await actor.start()
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    assert await actor.drain(10)
    assert await r.xlen("pulse:stream:out") == 3
    assert await pending(r) == 0


async def test_add_stream_to_a_running_actor_is_read(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    actor = make_actor(conn, lambda e: Emit("ok", e.payload), executor)
    await actor.start()
    await fill(conn, 1)
    await wait_for(lambda: actor.handled == 1, timeout=3)  # reading, connection established
    await fill(conn, 5, stream="other")
    await actor.add_stream("other", "oldest")
    await wait_for(lambda: actor.handled == 6, timeout=3)  # well within the 5 s block
    await actor.remove_stream("other")
    await fill(conn, 2)
    await wait_for(lambda: actor.handled == 8, timeout=3)  # reads without "other" now
    await fill(conn, 5, stream="other")
    await fill(conn, 1)
    await wait_for(lambda: actor.handled >= 9, timeout=3)
    await actor.drain(5)
    assert actor.handled == 9  # none of "other" after its removal
    assert await r.xlen("pulse:stream:out") == 9


async def test_drain_handles_events_delivered_to_it_whose_read_was_lost(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    actor = make_actor(conn, lambda e: Emit("ok", e.payload), executor)
    await actor.start()
    await fill(conn, 1)
    await wait_for(lambda: actor.handled == 1)
    await actor.remove_stream("in")
    await fill(conn, 5)
    # what a read cancelled by close() leaves: delivered to this consumer, never seen
    assert actor.sink is not None
    await r.xreadgroup("s", actor.sink.consumer, {"pulse:stream:in": ">"})
    assert await pending(r) == 5
    assert await actor.drain(5)
    assert await pending(r) == 0
    assert await r.xlen("pulse:stream:out") == 6


async def test_an_event_waiting_for_a_long_retry_is_not_claimed_away(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    calls = []

    def once_failing(event: Event) -> Emit:
        calls.append(event.id)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return Emit("ok", event.payload)

    await fill(conn, 1)
    metrics = Metrics()
    actor = make_actor(
        conn,
        once_failing,
        executor,
        metrics=metrics,
        ack_grace=0.5,
        retry=RetryPolicy(max_attempts=3, backoff=2.0),  # 4 x the ack grace
    )
    await actor.start()
    await wait_for(lambda: actor.handled == 1, timeout=10)
    await actor.drain(5)
    assert len(calls) == 2  # no duplicate delivery while it waited
    assert metrics.conflicts["s"] == 0
    assert actor.sink is not None and actor.sink.claimed == 0
    assert await r.xlen("pulse:stream:out") == 1


async def test_a_retry_queued_while_a_read_blocks_runs_after_its_backoff_not_the_block(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    # The loop no longer wakes for every finished chunk while a read is in flight
    # (a pass per read saved): a queued retry must still wake it. One event, then
    # silence: the next read blocks for READ_BLOCK (5 s) unless the retry wakes it.
    calls: list[float] = []

    def flaky(event: Event) -> Emit:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")
        return Emit("done", event.payload)

    actor = make_actor(conn, flaky, executor, retry=RetryPolicy(max_attempts=3, backoff=0.05))
    await actor.start()
    try:
        await fill(conn, 1)
        await wait_for(lambda: actor.handled == 1, 10)
        assert len(calls) == 2
        assert calls[1] - calls[0] < 2.0  # its 50 ms backoff, well under the 5 s block
    finally:
        await actor.drain(5)
    assert await r.xlen("pulse:stream:out") == 1
    assert await pending(r) == 0


async def test_a_sync_handler_on_its_own_thread_takes_the_direct_path(
    conn: Connection, executor: Any
) -> None:
    actor = make_actor(conn, lambda e: None, executor)
    await actor.start()
    try:
        assert actor._direct is (executor is None)
    finally:
        await actor.drain(5)


async def test_an_async_handler_stays_on_the_loop_path(conn: Connection) -> None:
    async def handler(event: Event) -> None:
        return None

    actor = make_actor(conn, handler, None)
    await actor.start()
    try:
        assert not actor._direct
    finally:
        await actor.drain(5)


async def test_a_drain_while_redis_is_down_ends_and_leaves_the_batch_pending(
    executor: Any, server_binary: str, tmp_path: Any
) -> None:
    """The commit cannot land: the drain gives up after a few tries instead of hanging,
    and nothing is lost — the batch is still pending when the server is back."""
    server = ServerProcess(tmp_path / "redis", appendonly=True, binary=server_binary)
    server.start()
    client = aioredis.Redis.from_url(server.url)
    in_handler = threading.Event()
    release = threading.Event()

    def held(event: Event) -> Emit:
        in_handler.set()
        release.wait(10)
        return Emit("ok", event.payload)

    try:
        conn = Connection(client)
        await fill(conn, 3)
        actor = make_actor(conn, held, executor, batch=3)
        await actor.start()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, in_handler.wait, 5)
        await loop.run_in_executor(None, server.stop)  # SIGTERM: the AOF keeps the delivery
        release.set()
        started = time.monotonic()
        await actor.drain(20)
        assert time.monotonic() - started < 10  # gave up on the commit; did not wait it out
        assert not actor.running
        await loop.run_in_executor(None, server.start)
        await client.aclose()
        client = aioredis.Redis.from_url(server.url)
        assert await client.xlen("pulse:stream:out") == 0
        assert await pending(client) == 3  # redelivered after the ack grace: nothing lost
    finally:
        await client.aclose()
        server.stop()


async def test_a_sync_handler_returning_an_awaitable_has_it_awaited_on_the_loop(
    conn: Connection, r: aioredis.Redis, executor: Any
) -> None:
    async def later(event: Event) -> Emit:
        await asyncio.sleep(0)
        return Emit("awaited", event.payload)

    await fill(conn, 5)
    actor = make_actor(conn, lambda e: later(e), executor)
    await actor.start()
    await wait_for(lambda: actor.handled == 5)
    await actor.drain(5)
    rows = await r.xrange("pulse:stream:out")
    assert [(f[b"n"], f[b"p"]) for _, f in rows] == [
        (b"awaited", str(i).encode()) for i in range(5)
    ]
