"""Reloads under continuous load: every event handled exactly once across 20+ reloads."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import redis.asyncio as aioredis

from tests.helpers import wait_for
from topology.config.model import SinkSpec, StreamRef, StreamSpec, Topology
from topology.runtime import Runtime
from topology.streams import Connection

HANDLERS = """
from topology import Emit

def forward_a(event):
    return Emit("a", event.payload)

async def forward_b(event):
    return Emit("b", event.payload)
"""

#: Events per producer tick and ticks per second: 20 x 100 = 2000 events/s offered
#: on a quiet machine. A busy one slows the producer: the test counts events, not rates.
PER_TICK = 20
TICK = 0.01


def topology(tmp_path: Path, *, consumers: int, more: bool, handler: str, extra: bool) -> Topology:
    sinks = {
        "fwd": SinkSpec(
            "fwd",
            (StreamRef("in"), StreamRef("in2")) if more else (StreamRef("in"),),
            f"load_handlers:{handler}",
            consumers=consumers,
            outputs=("out",),
            start="oldest",
            ack_grace=2.0,
            batch=64,
        )
    }
    if extra:
        sinks["extra"] = SinkSpec(
            "extra",
            (StreamRef("in"),),
            "load_handlers:forward_a",
            outputs=("out_extra",),
            start="oldest",
            ack_grace=2.0,
            batch=64,
        )
    names = ("in", "in2", "out", "out_extra")
    return Topology(
        name="load",
        streams={n: StreamSpec(n) for n in names},
        sinks=sinks,
        path=tmp_path / "load.yaml",
    )


async def test_every_event_is_handled_exactly_once_across_twenty_reloads(
    r: aioredis.Redis, tmp_path: Path
) -> None:
    (tmp_path / "load_handlers.py").write_text(HANDLERS)
    conn = Connection(r)
    runtime = Runtime(conn, deployment="load", worker_id="w", base_dir=tmp_path, drain_timeout=10)
    produced = {"in": 0, "in2": 0}
    stop = asyncio.Event()

    async def produce() -> None:
        streams = {name: conn.stream(name) for name in produced}
        while not stop.is_set():
            for name, stream in streams.items():
                start = produced[name]
                await stream.add_many(
                    ("e", f"{name}-{i}", None) for i in range(start, start + PER_TICK)
                )
                produced[name] += PER_TICK
            await asyncio.sleep(TICK)  # the offered rate, not a synchronisation

    variants = itertools.cycle(
        [
            dict(consumers=1, more=False, handler="forward_a", extra=True),
            dict(consumers=3, more=False, handler="forward_a", extra=True),
            dict(consumers=3, more=True, handler="forward_a", extra=False),
            dict(consumers=2, more=True, handler="forward_b", extra=False),
            dict(consumers=2, more=False, handler="forward_b", extra=True),
            dict(consumers=1, more=True, handler="forward_a", extra=True),
        ]
    )
    await runtime.apply(topology(tmp_path, **next(variants)))
    producer = asyncio.create_task(produce())

    async def load_flowed(since: int) -> int:
        """Wait for 5 more ticks of events: every reload happens amid a flow of events."""
        goal = since + 5 * PER_TICK * len(produced)
        await wait_for(lambda: sum(produced.values()) >= goal, timeout=30, what="load")
        return sum(produced.values())

    latencies = []
    offered = 0
    try:
        for _ in range(23):
            offered = await load_flowed(offered)
            started = time.perf_counter()
            await runtime.apply(topology(tmp_path, **next(variants)))
            latencies.append(time.perf_counter() - started)
        stop.set()
        await producer
        # the last variant reads everything: wait for the backlog to drain
        final = dict(consumers=2, more=True, handler="forward_a", extra=True)
        await runtime.apply(topology(tmp_path, **final))
        deadline = time.monotonic() + 60
        while True:
            handled = runtime.handled()
            done = (
                handled.get("fwd", 0) >= sum(produced.values())
                and handled.get("extra", 0) >= produced["in"]
            )
            if done and await runtime.pending() == 0:
                break
            assert time.monotonic() < deadline, (handled, produced)
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await runtime.drain(10)
        await runtime.close()
    assert runtime.generation == 25
    out = [f[b"p"].decode() for _, f in await r.xrange("pulse:stream:out")]
    expected = {f"{name}-{i}" for name, n in produced.items() for i in range(n)}
    assert len(out) == len(expected), f"{len(out) - len(set(out))} duplicates"
    assert set(out) == expected
    extra = [f[b"p"].decode() for _, f in await r.xrange("pulse:stream:out_extra")]
    assert sorted(extra) == sorted(f"in-{i}" for i in range(produced["in"]))
    latencies.sort()
    print(
        f"{sum(produced.values())} events, 24 reloads; apply p50 "
        f"{latencies[len(latencies) // 2] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
