"""A stateful sink keeps the sink limits: a handler call past ``timeout`` fails with
HandlerTimeout (retried, then dead-lettered) and an event delivered more than
``max_deliveries`` times is dead-lettered unhandled (TooManyDeliveries). Either way
the event changes no state, and the rest of its batch (its own key's events too,
from the state as it was before it) commits."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.helpers import wait_for
from tests.runtime.test_actor import pending
from topology import Emit, Event
from topology.config.model import RetryPolicy, SinkSpec, StateSpec, StreamRef, StreamSpec
from topology.runtime.actor import Actor
from topology.runtime.keys import EngineKeys
from topology.runtime.metrics import Metrics
from topology.runtime.state import StatefulRunner, StateWiring, key_function, state_layout
from topology.streams import Connection

KEYS = EngineKeys("limits")
TWICE = RetryPolicy(max_attempts=2, backoff=0.01)


@pytest.fixture
def stuck() -> Iterator[threading.Event]:
    """Holds stuck handler calls until the test ends (so their threads end too)."""
    gate = threading.Event()
    yield gate
    gate.set()


@pytest.fixture(params=["own-thread", "executor", "async"])
def path(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


def stateful_actor(
    conn: Connection, fn: Callable[..., Any], executor: Any = None, **options: Any
) -> Actor:
    spec = SinkSpec(
        name="s",
        streams=(StreamRef("in"),),
        handler="x:y",
        outputs=("out",),
        start="oldest",
        key="k",
        state=StateSpec(),
        dead_letter="dlq",
        retry=TWICE,
        **options,
    )
    layout = state_layout("limits", spec, conn.stream_key)
    return Actor(
        spec,
        0,
        conn=conn,
        handler=StatefulRunner(fn, spec.outputs, layout, executor=executor),
        attempts_key=KEYS.attempts("s"),
        streams=lambda: {"out": StreamSpec("out"), "dlq": StreamSpec("dlq")},
        metrics=Metrics(),
        state=StateWiring(key_function("k", None), layout),
    )


def count(event: Event, state: dict[str, Any]) -> Emit:
    data = event.json()
    state["n"] = state.get("n", 0) + 1
    state.setdefault("seqs", []).append(data["seq"])
    return Emit("count", {"k": data["k"], "n": state["n"], "seq": data["seq"]})


async def feed(r: aioredis.Redis, events: list[dict[str, Any]]) -> list[bytes]:
    return [await r.xadd("pulse:stream:in", {"n": "e", "p": json.dumps(e)}) for e in events]


async def states(r: aioredis.Redis) -> dict[str, Any]:
    prefix = KEYS.state_prefix("s", None)
    out = {}
    async for raw in r.scan_iter(match=prefix + "*"):
        out[raw.decode()[len(prefix) :]] = json.loads(await r.hget(raw, "s"))
    return out


async def outputs(r: aioredis.Redis) -> list[dict[str, Any]]:
    return [json.loads(f[b"p"]) for _, f in await r.xrange("pulse:stream:out")]


async def dead(r: aioredis.Redis) -> list[dict[bytes, bytes]]:
    return [f for _, f in await r.xrange("pulse:stream:dlq")]


async def test_a_stateful_call_past_the_timeout_fails_and_changes_no_state(
    conn: Connection, r: aioredis.Redis, stuck: threading.Event, path: str
) -> None:
    cancelled = threading.Event()

    def hang(event: Event, state: dict[str, Any]) -> Emit:
        if event.json()["seq"] == 1:
            state["n"] = -1000  # changed, then stuck: must never land
            stuck.wait()  # never returns while the test runs: cannot be interrupted
        return count(event, state)

    async def hang_async(event: Event, state: dict[str, Any]) -> Emit:
        if event.json()["seq"] == 1:
            state["n"] = -1000
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return count(event, state)

    pool = ThreadPoolExecutor(2) if path == "executor" else None
    fn = hang_async if path == "async" else hang
    await feed(
        r, [{"k": "a", "seq": 0}, {"k": "a", "seq": 1}, {"k": "b", "seq": 2}, {"k": "a", "seq": 3}]
    )
    actor = stateful_actor(conn, fn, pool, timeout=0.3)
    await actor.start()
    try:
        await wait_for(lambda: r.xlen("pulse:stream:dlq"), what="the stuck event dead-lettered")
        await wait_for(lambda: actor.handled == 3)
    finally:
        await actor.drain(5)
        if pool is not None:
            stuck.set()
            pool.shutdown()
    [letter] = await dead(r)
    assert letter[b"error_type"] == b"HandlerTimeout"
    assert letter[b"attempts"] == b"2"  # retried like any failure
    assert json.loads(letter[b"p"])["seq"] == 1
    # its key's later event applied from the state as it was before it
    assert await states(r) == {"a": {"n": 2, "seqs": [0, 3]}, "b": {"n": 1, "seqs": [2]}}
    assert sorted(o["seq"] for o in await outputs(r)) == [0, 2, 3]
    assert await pending(r) == 0
    if path == "async":
        assert cancelled.is_set()


async def test_a_stateful_event_delivered_too_often_is_dead_lettered_with_the_state_untouched(
    conn: Connection, r: aioredis.Redis
) -> None:
    key = "pulse:stream:in"
    ids = await feed(r, [{"k": "a", "seq": 0}, {"k": "a", "seq": 1}, {"k": "b", "seq": 2}])
    await r.xgroup_create(key, "s", id="0")
    await r.xreadgroup("s", "gone", {key: ">"}, count=3)  # a consumer that died with them
    for _ in range(4):  # the poison event killed four more consumers
        await r.xclaim(key, "s", "gone", 0, [ids[1]])
    called: list[int] = []

    def handler(event: Event, state: dict[str, Any]) -> Emit:
        called.append(event.json()["seq"])
        return count(event, state)

    actor = stateful_actor(conn, handler, ack_grace=0.2, max_deliveries=3)
    await actor.start()
    try:
        await wait_for(lambda: r.xlen("pulse:stream:dlq"), what="the poison event dead-lettered")
        await wait_for(lambda: actor.handled == 2)
    finally:
        await actor.drain(5)
    assert sorted(called) == [0, 2]  # the poison event never reached the handler
    [letter] = await dead(r)
    assert letter[b"error_type"] == b"TooManyDeliveries"
    assert json.loads(letter[b"p"])["seq"] == 1
    assert await states(r) == {"a": {"n": 1, "seqs": [0]}, "b": {"n": 1, "seqs": [2]}}
    assert sorted(o["seq"] for o in await outputs(r)) == [0, 2]
    assert await pending(r) == 0
