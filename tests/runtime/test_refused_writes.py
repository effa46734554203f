"""A server that answers but refuses writes for a while: the batch is held and retried,
nothing new is read meanwhile, and everything goes through once writes are accepted."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.helpers import wait_for
from tests.runtime.test_actor import fill, make_actor, pending
from topology import Emit
from topology.runtime.metrics import Metrics
from topology.server import ServerProcess
from topology.streams import Connection

N = 2000
BATCH = 64


async def _outputs(r: aioredis.Redis) -> list[int]:
    return sorted(int(f[b"p"].split(b":")[0]) for _, f in await r.xrange("pulse:stream:out"))


async def _run_through_refusal(
    fresh_server: ServerProcess,
    executor: Any,
    caplog: pytest.LogCaptureFixture,
    refuse: dict[str, str],
    accept: dict[str, str],
) -> None:
    r = aioredis.Redis.from_url(fresh_server.url)
    conn = Connection(r)
    await fill(conn, N)
    metrics = Metrics()
    calls: list[str] = []
    gate = threading.Event()

    def forward(event: Any) -> Emit:
        calls.append(event.id)
        gate.wait(30)  # the first chunk is in hand when the server starts refusing
        return Emit("done", event.payload.decode() + ":" + "x" * 512)

    actor = make_actor(conn, forward, executor, batch=BATCH, metrics=metrics)
    caplog.set_level(logging.INFO, logger="topology.runtime")
    await actor.start()
    try:
        await wait_for(lambda: calls, what="the first event in the handler")
        if "maxmemory" in refuse:  # no room for the outputs: what is used now
            refuse["maxmemory"] = str(int((await r.info("memory"))["used_memory"]))
        for name, value in refuse.items():
            await r.config_set(name, value)
        gate.set()
        # Refused: the actor keeps retrying its batch and reads nothing more.
        await wait_for(lambda: actor.redis_retry._streak_tries >= 4, what="retries")
        assert await pending(r) <= BATCH
        assert len(calls) <= BATCH  # the handler is not run again for a refused commit
        assert actor.handled == 0
        assert await r.xlen("pulse:stream:out") == 0
        for name, value in accept.items():
            await r.config_set(name, value)
        await wait_for(lambda: actor.handled == N, timeout=30, what="all handled")
        await actor.drain(5)
        assert await _outputs(r) == list(range(N))  # none lost, none twice
        assert await pending(r) == 0
        assert metrics.handled["s"] == N  # counters count what committed
        assert len(calls) == N
        warnings = [m for m in caplog.messages if "holding the batch" in m]
        assert len(warnings) == 1, warnings  # one WARNING per streak, not one per try
        assert any("accepts again after" in m for m in caplog.messages)
    finally:
        await actor.stop_now()
        await r.aclose()


async def test_a_commit_refused_for_lack_of_replicas_is_held_and_retried(
    fresh_server: ServerProcess, executor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await _run_through_refusal(
        fresh_server,
        executor,
        caplog,
        refuse={"min-replicas-to-write": "1"},
        accept={"min-replicas-to-write": "0"},
    )


async def test_a_full_memory_holds_the_batch_until_memory_is_raised(
    fresh_server: ServerProcess, executor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await _run_through_refusal(
        fresh_server,
        executor,
        caplog,
        refuse={"maxmemory-policy": "noeviction", "maxmemory": "(used now)"},
        accept={"maxmemory": "0"},
    )
