"""Refused writes and backlogs: how fast a sink catches up once the fault is gone.

    python tools/bench_refused.py                 # 50,000 events, 3 runs of each
    python tools/bench_refused.py --events 20000 --runs 1

Two figures, each against the same sink's normal rate measured in the same run
(an actor forwarding fresh events from ``in`` to ``out``, batch 256; each rate
from the first output to the last, so start-up and the fault's own wait are
left out):

- **backlog**: ``--events`` entries left pending, idle, on a consumer that was
  ``kill -9``ed with them (read by a raw ``XREADGROUP`` that never acks) are
  claimed and forwarded by a live actor. Ratio = backlog rate / normal rate
  (target >= 0.5).
- **refused writes**: the server refuses writes (``maxmemory`` reached) while
  the sink holds its first batch; then memory is raised. Printed: seconds from
  the raise to the first output, and the rate of the rest as a ratio to normal.

It starts its own server (the embedded binary) and runs the engine in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from topology.config import load
from topology.runtime import Runtime
from topology.server import ServerProcess
from topology.streams import Connection

CONFIG = """
version: 1
name: bench
defaults: {start: oldest, batch: 256, ack_grace: %(grace)s}
streams: {in: {}, out: {}}
sinks:
  fwd:
    streams: [in]
    handler: bench_handlers:forward
    outputs: [out]
"""

HANDLERS = """
import threading
from topology import Emit

#: Closed by the bench to hold the first batch in the handler while it sets the fault.
gate = threading.Event()
gate.set()
entered = threading.Event()

def forward(event):
    entered.set()
    gate.wait(60)
    return Emit("out", event.payload)
"""


async def _until(r: aioredis.Redis, n: int, timeout: float = 600) -> float:
    """Seconds until ``out`` holds ``n`` entries (polling the server: another task's work)."""
    started = time.monotonic()
    while await r.xlen("pulse:stream:out") < n:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"out did not reach {n} in {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def _flow_rate(r: aioredis.Redis, n: int) -> float:
    """Events/s from the first output to the ``n``-th (start-up and waits left out)."""
    await _until(r, 1)
    return (n - 1) / await _until(r, n)


async def _runtime(conn: Connection, folder: Path, grace: str) -> Runtime:
    (folder / "bench_handlers.py").write_text(HANDLERS)
    (folder / "bench.yaml").write_text(CONFIG % {"grace": grace})
    topology = load(folder / "bench.yaml")
    runtime = Runtime(conn, deployment=topology.name, worker_id="bench", base_dir=folder)
    await runtime.apply(topology)
    return runtime


async def _fill(conn: Connection, n: int) -> None:
    await conn.stream("in").add_many(("e", str(i), None) for i in range(n))


async def normal_rate(r: aioredis.Redis, folder: Path, n: int) -> float:
    await r.flushall()
    conn = Connection(r)
    await _fill(conn, n)
    runtime = await _runtime(conn, folder, "20s")
    try:
        return await _flow_rate(r, n)
    finally:
        await runtime.drain(10)
        await runtime.close()


async def backlog_rate(r: aioredis.Redis, folder: Path, n: int) -> float:
    await r.flushall()
    conn = Connection(r)
    await _fill(conn, n)
    key = "pulse:stream:in"
    await r.xgroup_create(key, "fwd", id="0")
    await r.xreadgroup("fwd", "killed", {key: ">"}, count=n)  # delivered, never acked
    runtime = await _runtime(conn, folder, "1s")
    try:
        return await _flow_rate(r, n)  # from the first claimed event handled
    finally:
        await runtime.drain(10)
        await runtime.close()


async def refused_recovery(r: aioredis.Redis, folder: Path, n: int) -> tuple[float, float]:
    await r.flushall()
    conn = Connection(r)
    await _fill(conn, n)
    handlers = sys.modules.get("bench_handlers")
    if handlers is not None:
        handlers.gate.clear()
        handlers.entered.clear()
    runtime = await _runtime(conn, folder, "20s")
    handlers = sys.modules["bench_handlers"]
    try:
        handlers.gate.clear()  # (first import: closed only now)
        while not handlers.entered.is_set():  # the first batch is in the handler
            await asyncio.sleep(0.01)
        used = int((await r.info("memory"))["used_memory"])
        await r.config_set("maxmemory-policy", "noeviction")
        await r.config_set("maxmemory", str(used))  # no room for the outputs
        handlers.gate.set()
        actor = runtime.actors("fwd")[0]
        while not actor.redis_retry.failing:  # its commit is refused and held
            await asyncio.sleep(0.01)
        await r.config_set("maxmemory", "0")
        first = await _until(r, 1)
        return first, await _flow_rate(r, n)
    finally:
        handlers.gate.set()
        await runtime.drain(10)
        await runtime.close()


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-refused-") as tmp:
        server = ServerProcess(Path(tmp) / "redis")
        server.start()
        r = aioredis.Redis.from_url(server.url)
        try:
            normal, backlog, firsts, after = [], [], [], []
            for _ in range(args.runs):  # alternating, so a drift of the machine hits both
                normal.append(await normal_rate(r, Path(tmp), args.events))
                backlog.append(await backlog_rate(r, Path(tmp), args.events))
                first, rate = await refused_recovery(r, Path(tmp), args.events)
                firsts.append(first)
                after.append(rate)
        finally:
            await r.aclose()
            server.stop()
    med = statistics.median
    print(f"normal rate      {med(normal):,.0f}/s  [{min(normal):,.0f}-{max(normal):,.0f}]")
    print(
        f"backlog claimed  {med(backlog):,.0f}/s  [{min(backlog):,.0f}-{max(backlog):,.0f}]  "
        f"ratio {med(backlog) / med(normal):.2f} (target >= 0.5)"
    )
    print(
        f"refused writes   first output {med(firsts):.2f}s after the raise "
        f"[{min(firsts):.2f}-{max(firsts):.2f}] (target < 2 s); then {med(after):,.0f}/s, "
        f"ratio {med(after) / med(normal):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
