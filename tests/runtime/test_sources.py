"""Sources: batching, exactly one runner per deployment (lease), done marks, resume."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.helpers import LatencyPromise, wait_for
from topology.config.model import SourceSpec, StreamSpec, Topology
from topology.runtime.keys import EngineKeys
from topology.runtime.sources import SourceRunner
from topology.runtime.workers import WorkerRegistry
from topology.server import ServerProcess
from topology.streams import Connection

_names = itertools.count()


def _topology(tmp_path: Path, code: str, fn: str = "gen", topic: str | None = "tp") -> Topology:
    """A deployment with one source whose handler is ``code`` in a module of its own."""
    module = f"src_mod_{next(_names)}_{int(time.time() * 1000)}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(code))
    return Topology(
        name=f"dep{next(_names)}",
        path=tmp_path / "pipeline.yaml",
        streams={"out": StreamSpec("out"), "other": StreamSpec("other")},
        sources={"gen": SourceSpec("gen", f"{module}:{fn}", "out", topic=topic)},
    )


@pytest.fixture
async def conn(r: aioredis.Redis) -> AsyncIterator[Connection]:
    yield Connection(r)


async def _entries(r: aioredis.Redis, conn: Connection) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await r.xrange(conn.stream_key("out"))]


async def test_finite_source_adds_everything_and_marks_done(
    tmp_path: Path, r: aioredis.Redis, conn: Connection
) -> None:
    topo = _topology(
        tmp_path,
        """
        from topology import Emit
        async def gen():
            for i in range(1000):
                yield Emit("n", {"i": i})
            yield Emit("last", "x", topic="special")
        """,
    )
    runner = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=1.0)
    runner.start()
    await runner.wait()
    assert runner.done and runner.produced == 1001
    entries = await _entries(r, conn)
    assert len(entries) == 1001
    assert entries[0] == {b"n": b"n", b"p": b'{"i":0}', b"t": b"tp"}
    assert entries[-1][b"t"] == b"special"
    state = await r.hgetall(EngineKeys(topo.name).source_state("gen"))
    assert b"done" in state and state[b"produced"] == b"1001"
    assert await r.exists(EngineKeys(topo.name).source_lease("gen")) == 0  # released


async def test_a_done_source_stays_done_across_restarts_unless_it_asks_for_a_rerun(
    tmp_path: Path, r: aioredis.Redis, conn: Connection
) -> None:
    topo = _topology(
        tmp_path,
        """
        from topology import Emit
        def gen():
            yield from (Emit("n", str(i)) for i in range(5))
        """,
    )
    first = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=1.0)
    first.start()
    await first.wait()
    registry = WorkerRegistry(r, topo.name, "w1", interval=0.5)
    registry.start(dict)
    await registry.wait_registered()
    joiner = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w2", lease_ttl=1.0)
    joiner.start()
    await joiner.wait()
    assert joiner.done and joiner.produced == 0
    assert len(await _entries(r, conn)) == 5
    await registry.stop()  # the deployment is gone: a new start is a fresh start
    again = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w3", lease_ttl=1.0)
    again.start()
    await again.wait()
    assert again.done and again.produced == 0  # a restart does not repeat a finished source
    assert len(await _entries(r, conn)) == 5
    rerun = dataclasses.replace(topo.sources["gen"], rerun=True)  # asked for: it runs again
    asked = SourceRunner(rerun, topo, conn, worker_id="w4", lease_ttl=1.0)
    asked.start()
    await asked.wait()
    assert asked.produced == 5 and len(await _entries(r, conn)) == 10


_FOREVER = """
import asyncio
from topology import Emit
async def gen(ctx):
    i = 0
    while not ctx.stop.is_set():
        yield Emit("tick", f"{ctx.worker_id}:{i}")
        i += 1
        await asyncio.sleep(0.01)
"""


async def test_a_run_ends_even_when_it_ends_during_a_lease_renewal(
    tmp_path: Path, r: aioredis.Redis, conn: Connection
) -> None:
    # A lease this short is renewed all the time: the end of a run often lands
    # while a renewal is in flight, where redis-py may swallow the cancellation
    # of the renewing task. The run must end all the same.
    topo = _topology(
        tmp_path,
        """
        import asyncio
        from topology import Emit
        async def gen():
            for i in range(20):
                yield Emit("n", str(i))
                await asyncio.sleep(0.001)
        """,
    )
    for run in range(20):
        spec = dataclasses.replace(topo.sources["gen"], rerun=True)
        runner = SourceRunner(spec, topo, conn, worker_id=f"w{run}", lease_ttl=0.003)
        runner.start()
        await asyncio.wait_for(runner.wait(), 10)  # not stop(): it would wait just the same
        assert runner.done and runner.failed is None


async def test_only_one_worker_runs_a_source_and_another_takes_over_when_it_stops(
    tmp_path: Path, r: aioredis.Redis, conn: Connection
) -> None:
    topo = _topology(tmp_path, _FOREVER)
    a = SourceRunner(topo.sources["gen"], topo, conn, worker_id="wa", lease_ttl=0.6)
    b = SourceRunner(topo.sources["gen"], topo, conn, worker_id="wb", lease_ttl=0.6)
    a.start()
    b.start()

    async def some_events() -> bool:
        return len(await _entries(r, conn)) >= 20

    await wait_for(some_events)
    holder, other = (a, b) if a.holding else (b, a)
    assert holder.holding and not other.holding
    writers = {e[b"p"].split(b":")[0] for e in await _entries(r, conn)}
    assert writers == {holder.worker_id.encode()}

    await holder.stop()
    assert not holder.done  # stopped is not ended

    async def other_writes() -> bool:
        return any(e[b"p"].startswith(other.worker_id.encode()) for e in await _entries(r, conn))

    await wait_for(other_writes)
    assert other.holding
    await other.stop()
    assert await r.exists(EngineKeys(topo.name).source_lease("gen")) == 0


async def test_a_killed_holder_is_replaced_once_its_lease_expires(
    tmp_path: Path, redis_url: str, r: aioredis.Redis, conn: Connection
) -> None:
    topo = _topology(tmp_path, _FOREVER)
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        import redis.asyncio as aioredis
        from topology.config.model import SourceSpec, StreamSpec, Topology
        from topology.runtime.sources import SourceRunner
        from topology.streams import Connection
        from pathlib import Path

        async def main():
            topo = Topology(
                name={topo.name!r}, path=Path({str(topo.path)!r}),
                streams={{"out": StreamSpec("out")}},
                sources={{"gen": SourceSpec("gen", {topo.sources["gen"].handler!r}, "out")}},
            )
            conn = Connection(aioredis.Redis.from_url({redis_url!r}))
            spec = topo.sources["gen"]
            runner = SourceRunner(spec, topo, conn, worker_id="victim", lease_ttl=1.0)
            runner.start()
            await asyncio.sleep(600)

        asyncio.run(main())
        """
    )
    victim = subprocess.Popen([sys.executable, "-c", script])
    try:

        async def victim_writes() -> bool:
            return len(await _entries(r, conn)) >= 5

        await wait_for(victim_writes, timeout=20)
        spec = topo.sources["gen"]
        survivor = SourceRunner(spec, topo, conn, worker_id="survivor", lease_ttl=1.0)
        survivor.start()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        takeover = LatencyPromise(1.0 + 1.0)  # lease TTL + one poll period, with slack

        async def survivor_writes() -> bool:
            return any(e[b"p"].startswith(b"survivor:") for e in await _entries(r, conn))

        await wait_for(survivor_writes)
        takeover.check("the survivor's first event after the holder was killed")
        assert survivor.holding
        await survivor.stop()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


async def test_events_are_added_while_the_generator_waits(
    tmp_path: Path, r: aioredis.Redis, conn: Connection
) -> None:
    topo = _topology(
        tmp_path,
        """
        import asyncio
        from topology import Emit
        gate = asyncio.Event()
        async def gen():
            yield Emit("first", "1")
            await gate.wait()
            yield Emit("second", "2")
        """,
    )
    runner = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=1.0)
    runner.start()

    async def first_added() -> bool:
        return len(await _entries(r, conn)) == 1

    await wait_for(first_added)  # flushed although the generator has not ended
    module = sys.modules[topo.sources["gen"].handler.split(":")[0]]
    module.gate.set()
    await runner.wait()
    assert [e[b"n"] for e in await _entries(r, conn)] == [b"first", b"second"]


async def test_a_sync_source_resumes_from_its_checkpoint(
    tmp_path: Path, r: aioredis.Redis, conn: Connection
) -> None:
    topo = _topology(
        tmp_path,
        """
        from topology import Emit
        def gen(ctx):
            for i in range(int(ctx.resume_from or 0), 10):
                yield Emit("n", str(i))
                ctx.checkpoint(str(i + 1))
        """,
    )
    first = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=1.0)
    first.start()
    await first.wait()
    assert first.done and first.produced == 10
    assert await r.hget(EngineKeys(topo.name).source_state("gen"), "checkpoint") == b"10"
    again = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w2", lease_ttl=1.0)
    again.start()
    await again.wait()
    assert again.produced == 0 and len(await _entries(r, conn)) == 10


async def test_an_emit_for_another_stream_fails_the_source_without_writing_there(
    tmp_path: Path, r: aioredis.Redis, conn: Connection
) -> None:
    topo = _topology(
        tmp_path,
        """
        from topology import Emit
        def gen():
            yield Emit("ok", "1")
            yield Emit("bad", "2", stream="other")
        """,
    )
    runner = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=1.0)
    runner.start()
    await runner.wait()
    assert runner.failed is not None and "other" in str(runner.failed)
    assert not runner.done
    assert await r.exists(conn.stream_key("other")) == 0
    assert await r.hget(EngineKeys(topo.name).source_state("gen"), "failed")


@pytest.mark.parametrize("n", [5, 3000])
async def test_a_sync_source_that_raises_keeps_what_it_yielded_before(
    tmp_path: Path, r: aioredis.Redis, conn: Connection, n: int
) -> None:
    topo = _topology(
        tmp_path,
        f"""
        from topology import Emit
        def gen():
            for i in range({n}):
                yield Emit("ok", str(i))
            raise RuntimeError("boom")
        """,
    )
    runner = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=1.0)
    runner.start()
    await runner.wait()
    assert isinstance(runner.failed, RuntimeError)
    assert [e[b"p"] for e in await _entries(r, conn)] == [str(i).encode() for i in range(n)]


async def test_a_raising_source_is_marked_failed(
    tmp_path: Path, r: aioredis.Redis, conn: Connection
) -> None:
    topo = _topology(
        tmp_path,
        """
        from topology import Emit
        async def gen():
            yield Emit("ok", "1")
            raise RuntimeError("boom")
        """,
    )
    runner = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=1.0)
    runner.start()
    await runner.wait()
    assert isinstance(runner.failed, RuntimeError)
    assert len(await _entries(r, conn)) == 1  # what it yielded before raising is kept
    state = await r.hget(EngineKeys(topo.name).source_state("gen"), "failed")
    assert state == b"RuntimeError: boom"


async def test_a_blocking_sync_source_does_not_stall_the_loop(
    tmp_path: Path, r: aioredis.Redis, conn: Connection
) -> None:
    topo = _topology(
        tmp_path,
        """
        import time
        from topology import Emit
        def gen():
            time.sleep(0.5)
            yield Emit("late", "1")
        """,
    )
    runner = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=1.0)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)  # a tick of the loop, counted: not a synchronisation
            ticks += 1

    ticker = asyncio.get_running_loop().create_task(tick())
    runner.start()
    await runner.wait()  # awaited, not timed: a loaded machine only makes it later
    ticker.cancel()
    assert runner.done
    assert ticks > 10  # the loop kept running while the generator slept in its thread


async def test_workers_started_together_rerun_a_previously_done_source_exactly_once(
    tmp_path: Path, r: aioredis.Redis, conn: Connection
) -> None:
    """A source with ``rerun: true``: of workers started together, one clears ``done``."""
    topo = _topology(
        tmp_path,
        """
        from topology import Emit
        def gen():
            yield from (Emit("n", str(i)) for i in range(5))
        """,
    )
    state = EngineKeys(topo.name).source_state("gen")
    await r.hset(state, "done", "1")  # left by the previous run of the deployment
    registries = [WorkerRegistry(r, topo.name, w, interval=0.5) for w in ("w1", "w2")]
    for registry in registries:
        registry.start(dict)
        await registry.wait_registered()
    runners = [
        SourceRunner(
            dataclasses.replace(topo.sources["gen"], rerun=True),
            topo,
            conn,
            worker_id=w,
            lease_ttl=1.0,
        )
        for w in ("w2", "w1")  # the later worker checks first: it must not clear
    ]
    try:
        for runner in runners:
            runner.start()
        for runner in runners:
            await runner.wait()
        assert len(await _entries(r, conn)) == 5
        assert sum(runner.produced for runner in runners) == 5
    finally:
        for registry in registries:
            await registry.stop()


async def test_a_coroutine_function_is_refused_clearly(
    tmp_path: Path, r: aioredis.Redis, conn: Connection
) -> None:
    topo = _topology(tmp_path, "async def gen():\n    return 1\n")
    runner = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=1.0)
    runner.start()
    await runner.wait()
    assert runner.failed is not None and "generator" in str(runner.failed)


async def test_a_source_keeps_adding_after_redis_restarts(
    tmp_path: Path, fresh_server: ServerProcess
) -> None:
    topo = _topology(tmp_path, _FOREVER)
    client = aioredis.Redis.from_url(fresh_server.url)
    conn = Connection(client)
    runner = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=0.6)
    try:
        runner.start()

        async def some() -> bool:
            try:
                return await client.xlen(conn.stream_key("out")) >= 5
            except Exception:
                return False

        await wait_for(some)
        fresh_server.kill()  # no persistence: the stream and the lease are gone
        fresh_server.start()
        lease = EngineKeys(topo.name).source_lease("gen")

        async def leased_again() -> bool:
            try:
                return await client.get(lease) == b"w1"
            except Exception:
                return False

        await wait_for(leased_again)  # noticed the vanished lease and took it back
        await wait_for(some)  # and adds again
        before = await client.xlen(conn.stream_key("out"))

        async def growing() -> bool:
            return await client.xlen(conn.stream_key("out")) > before

        await wait_for(growing)
        assert runner.holding and runner.failed is None
        payloads = [e[b"p"] for _, e in await client.xrange(conn.stream_key("out"))]
        assert b"w1:0" not in payloads  # the generator carried on, it did not start over
    finally:
        await runner.stop()
        await client.aclose()


async def test_a_redis_outage_ends_no_runner_and_one_keeps_the_source_going(
    tmp_path: Path, fresh_server: ServerProcess
) -> None:
    topo = _topology(tmp_path, _FOREVER)
    client = aioredis.Redis.from_url(fresh_server.url)
    conn = Connection(client)
    runners = [
        SourceRunner(topo.sources["gen"], topo, conn, worker_id=w, lease_ttl=0.6)
        for w in ("w1", "w2")
    ]
    key = conn.stream_key("out")

    async def length() -> int:
        try:
            return int(await client.xlen(key))
        except Exception:
            return -1

    try:
        for runner in runners:
            runner.start()

        async def some() -> bool:
            return await length() >= 5

        await wait_for(some)
        fresh_server.kill()
        await asyncio.sleep(0.5)  # Redis stays away for a while (not a synchronisation)
        fresh_server.start()
        await wait_for(some)
        before = await length()

        async def growing() -> bool:
            return await length() > before

        await wait_for(growing)
        assert [r.failed for r in runners] == [None, None]

        async def one_holder() -> bool:
            # A holder whose lease lapsed during the outage learns it at its next
            # renewal (within a lease period): ownership settles on exactly one.
            return sum(r.holding for r in runners) == 1

        await wait_for(one_holder, timeout=5 * 0.6)
    finally:
        for runner in runners:
            await runner.stop()
        await client.aclose()


async def test_redis_refusing_the_events_fails_the_source_instead_of_spinning(
    tmp_path: Path, r: aioredis.Redis, conn: Connection
) -> None:
    topo = _topology(tmp_path, _FOREVER)
    await r.set(conn.stream_key("out"), "not a stream")
    runner = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=1.0)
    runner.start()
    await asyncio.wait_for(runner.wait(), 10)
    assert runner.failed is not None and "WRONGTYPE" in str(runner.failed)
    assert (await r.hget(EngineKeys(topo.name).source_state("gen"), "failed")).startswith(
        b"ResponseError"
    )


async def test_a_runner_stopped_before_its_generator_first_runs_still_stops(
    tmp_path: Path, r: aioredis.Redis, conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # A stop (or a lost lease) can cancel the generator's task before its first
    # step, when none of its code runs: the flusher must learn of that end too.
    caplog.set_level(logging.INFO, logger="topology.runtime.sources")
    topo = _topology(tmp_path, _FOREVER)
    runner = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=1.0)
    runner.start()
    # The "started" line is logged in the same loop step that creates the
    # generator's task: polling each step sees it before that task first runs.
    while not any(m.startswith("source gen started") for m in caplog.messages):
        await asyncio.sleep(0)
    # stop() awaited in this task, not wrapped in one (wait_for would start it a
    # step later, after the generator's task): a watchdog bounds the wait instead.
    task = asyncio.current_task()
    assert task is not None
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        task.cancel()

    watchdog = asyncio.get_running_loop().call_later(10, expire)
    with contextlib.suppress(asyncio.CancelledError):  # stop() may swallow it: see expired
        await runner.stop()
    watchdog.cancel()
    assert not expired, "stop() still waiting after 10s"
    assert not runner.done and runner.failed is None
    assert await r.exists(conn.stream_key("out")) == 0  # the generator never ran
    assert await r.exists(EngineKeys(topo.name).source_lease("gen")) == 0  # released
