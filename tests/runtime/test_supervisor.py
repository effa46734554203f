"""Runtime.apply against a real server: start = apply from empty; live changes; rollback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.helpers import wait_for
from topology.config.model import RetryPolicy, SinkSpec, SourceSpec, StreamRef, StreamSpec, Topology
from topology.runtime import ApplyError, Runtime
from topology.streams import Connection

HANDLERS = """
from topology import Emit

def forward(event):
    return Emit(event.name, event.payload)

async def forward_async(event):
    return Emit(event.name, event.payload)

def tag(event):
    return Emit(event.name, event.payload, topic="tagged")
"""


def topo(tmp_path: Path, *sinks: SinkSpec, streams: tuple[str, ...] = ()) -> Topology:
    names = set(streams)
    for sink in sinks:
        names.update(sink.stream_names)
        names.update(sink.outputs)
    return Topology(
        name="sup",
        streams={n: StreamSpec(n) for n in sorted(names)},
        sinks={s.name: s for s in sinks},
        path=tmp_path / "topology.yaml",
    )


def sink(name: str = "fwd", streams: tuple[str, ...] = ("in",), **kw: Any) -> SinkSpec:
    kw.setdefault("handler", "sup_handlers:forward")
    kw.setdefault("outputs", ("out",))
    kw.setdefault("start", "oldest")
    kw.setdefault("retry", RetryPolicy(max_attempts=2, backoff=0.01))
    return SinkSpec(name=name, streams=tuple(StreamRef(s) for s in streams), **kw)


@pytest.fixture
async def runtime(r: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Runtime]:
    (tmp_path / "sup_handlers.py").write_text(HANDLERS)
    rt = Runtime(Connection(r), deployment="sup", worker_id="w1", base_dir=tmp_path)
    yield rt
    await rt.drain(5)
    await rt.close()


async def add(r: aioredis.Redis, stream: str, n: int, name: str = "e") -> None:
    conn = Connection(r)
    await conn.stream(stream).add_many((name, str(i), None) for i in range(n))


async def test_start_is_applying_the_plan_from_empty(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    await add(r, "in", 50)
    plan = await runtime.apply(topo(tmp_path, sink(consumers=2)))
    assert plan.sinks_added == ("fwd",)
    assert runtime.generation == 1
    assert len(runtime.actors("fwd")) == 2
    await wait_for(lambda: runtime.handled().get("fwd") == 50)
    assert await r.xlen("pulse:stream:out") == 50


async def test_adding_and_removing_a_stream_on_a_running_sink(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    await runtime.apply(topo(tmp_path, sink()))
    actors = runtime.actors("fwd")
    await add(r, "in", 1)
    await wait_for(lambda: runtime.handled().get("fwd") == 1)
    await add(r, "more", 5)
    await runtime.apply(topo(tmp_path, sink(streams=("in", "more"))))
    assert runtime.actors("fwd") == actors  # no restart
    await wait_for(lambda: runtime.handled().get("fwd") == 6, timeout=3)
    plan = await runtime.apply(topo(tmp_path, sink(streams=("in",)), streams=("more",)))
    assert plan.sink_change("fwd").streams_removed == ("more",)
    await add(r, "in", 2)
    await wait_for(lambda: runtime.handled().get("fwd") == 8, timeout=3)  # reading without it
    await add(r, "more", 5)
    await add(r, "in", 1)
    await wait_for(lambda: runtime.handled().get("fwd", 0) >= 9, timeout=3)
    assert runtime.handled()["fwd"] == 9  # none of "more" after its removal
    groups = await r.xinfo_groups("pulse:stream:more")
    assert [g["name"] for g in groups] == [b"fwd"]  # the group stays
    assert runtime.generation == 3


async def test_rescaling_a_sink_adds_and_drains_actors(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    await runtime.apply(topo(tmp_path, sink(consumers=1)))
    first = runtime.actors("fwd")
    await runtime.apply(topo(tmp_path, sink(consumers=3)))
    assert len(runtime.actors("fwd")) == 3
    assert runtime.actors("fwd")[0] is first[0]
    await runtime.apply(topo(tmp_path, sink(consumers=1)))
    assert runtime.actors("fwd") == first
    await add(r, "in", 20)
    await wait_for(lambda: runtime.handled().get("fwd") == 20)


async def test_changing_the_handler_restarts_only_that_sink(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    other = sink("other", streams=("in",), outputs=("out2",))
    await runtime.apply(topo(tmp_path, sink(), other))
    kept = runtime.actors("other")
    old = runtime.actors("fwd")
    await runtime.apply(topo(tmp_path, sink(handler="sup_handlers:tag"), other))
    assert runtime.actors("other") == kept
    assert runtime.actors("fwd") != old
    await add(r, "in", 3)
    await wait_for(lambda: runtime.handled().get("fwd") == 3)
    rows = await r.xrange("pulse:stream:out")
    assert {f[b"t"] for _, f in rows} == {b"tagged"}


async def test_removing_a_sink_drains_it_and_keeps_its_group(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    await runtime.apply(topo(tmp_path, sink()))
    await add(r, "in", 10)
    await wait_for(lambda: runtime.handled().get("fwd") == 10)
    await runtime.apply(topo(tmp_path, streams=("in", "out")))
    assert runtime.actors() == []
    assert [g["name"] for g in await r.xinfo_groups("pulse:stream:in")] == [b"fwd"]


async def test_a_handler_that_does_not_import_changes_nothing(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    await runtime.apply(topo(tmp_path, sink()))
    actors = runtime.actors("fwd")
    with pytest.raises(ApplyError, match="nothing changed"):
        await runtime.apply(topo(tmp_path, sink(handler="sup_handlers:missing")))
    assert runtime.actors("fwd") == actors and all(a.running for a in actors)
    assert runtime.generation == 1
    await add(r, "in", 3)
    await wait_for(lambda: runtime.handled().get("fwd") == 3)


async def test_a_redis_failure_half_way_rolls_back(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    await runtime.apply(topo(tmp_path, sink()))
    actors = runtime.actors("fwd")
    await r.set("pulse:stream:broken", "not a stream")  # XGROUP CREATE will fail
    new = topo(tmp_path, sink(consumers=2), sink("bad", streams=("broken",)))
    with pytest.raises(ApplyError, match="generation 1 is running"):
        await runtime.apply(new)
    assert runtime.actors("fwd") == actors  # the added consumer was drained again
    assert runtime.actors("bad") == []
    assert runtime.generation == 1
    await add(r, "in", 3)
    await wait_for(lambda: runtime.handled().get("fwd") == 3)


async def test_idle_for_and_pending_report_a_finished_run(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    await add(r, "in", 30)
    await runtime.apply(topo(tmp_path, sink(handler="sup_handlers:forward_async")))
    await wait_for(lambda: runtime.handled().get("fwd") == 30)
    await wait_for(lambda: runtime.idle_for() > 0.1)
    assert await runtime.pending() == 0


SOURCES = """
import asyncio
from topology import Emit

async def slow_numbers():
    for i in range(100):
        if i % 10 == 0:
            await asyncio.sleep(0.01)
        yield Emit("n", str(i))

async def forever(ctx):
    i = 0
    while not ctx.stop.is_set():
        yield Emit("n", str(i))
        i += 1
        await asyncio.sleep(0.005)
"""


async def test_sources_run_and_idle_waits_for_them(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    (tmp_path / "sup_sources.py").write_text(SOURCES)
    base = topo(tmp_path, sink())
    source = SourceSpec("gen", "sup_sources:slow_numbers", "in")
    with_source = replace(base, sources={"gen": source})
    await runtime.apply(with_source)
    assert runtime.idle_for() == 0.0  # the source still runs
    await wait_for(lambda: runtime.handled().get("fwd") == 100)
    await wait_for(lambda: runtime.sources["gen"].done)
    await wait_for(lambda: runtime.idle_for() > 0.05)


async def test_removing_a_source_stops_it(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    (tmp_path / "sup_sources.py").write_text(SOURCES)
    base = topo(tmp_path, sink())
    with_source = replace(base, sources={"gen": SourceSpec("gen", "sup_sources:forever", "in")})
    await runtime.apply(with_source)
    await wait_for(lambda: runtime.handled().get("fwd", 0) >= 10)
    plan = await runtime.apply(base)
    assert plan.sources_removed == ("gen",)
    assert runtime.sources == {}
    produced = await r.xlen("pulse:stream:in")
    await wait_for(lambda: runtime.handled().get("fwd") == produced)
    assert await r.xlen("pulse:stream:in") == produced  # nothing added after the stop
