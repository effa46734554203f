"""A whole topology in-process: 10k events through three stages arrive exactly once."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import redis.asyncio as aioredis
import redis.exceptions

from topology.config import load
from topology.runtime import Runtime
from topology.streams import Connection

N = 10_000

CONFIG = """
version: 1
name: three
defaults:
  batch: 256
  start: oldest
streams:
  in: {}
  a: {}
  b: {}
  out: {}
sinks:
  stage1:
    streams: [in]
    handler: three_handlers:sync_stage
    consumers: 2
    outputs: [a]
  stage2:
    streams: [a]
    handler: three_handlers:async_stage
    consumers: 2
    outputs: [b]
  stage3:
    streams: [b]
    handler: three_handlers:mixed_stage
    outputs: [out]
"""

HANDLERS = '''
import asyncio
from topology import Emit

def sync_stage(event):
    return Emit("s1", event.payload)

async def async_stage(event):
    if int(event.payload) % 100 == 0:
        await asyncio.sleep(0.001)  # some calls really suspend
    return [Emit("s2", event.payload)]

class MixedStage:
    """A callable object: sync, returning a generator of Emits or None."""
    def __call__(self, event):
        if int(event.payload) % 2:
            return (e for e in [Emit("s3", event.payload)])
        return Emit("s3", event.payload)

mixed_stage = MixedStage()
'''


async def test_ten_thousand_events_through_three_stages_arrive_exactly_once(
    r: aioredis.Redis, tmp_path: Path
) -> None:
    (tmp_path / "three_handlers.py").write_text(textwrap.dedent(HANDLERS))
    (tmp_path / "topology.yaml").write_text(CONFIG)
    topology = load(tmp_path / "topology.yaml")
    conn = Connection(r)
    await conn.stream("in").add_many(("e", str(i), None) for i in range(N))
    runtime = Runtime(conn, deployment=topology.name, worker_id="w", base_dir=tmp_path)
    started = time.monotonic()
    await runtime.apply(topology)
    try:
        deadline = time.monotonic() + 60
        while runtime.handled().get("stage3", 0) < N:
            assert time.monotonic() < deadline, runtime.handled()
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        assert await runtime.pending() == 0
    finally:
        await runtime.drain(5)
        await runtime.close()
    rows = await r.xrange("pulse:stream:out")
    payloads = [int(f[b"p"]) for _, f in rows]
    assert len(payloads) == N
    assert sorted(payloads) == list(range(N))
    assert runtime.handled() == {"stage1": N, "stage2": N, "stage3": N}
    print(f"3 stages, {N} events: {elapsed:.2f}s ({N / elapsed:.0f} ev/s end to end)")


RESTART_CONFIG = """
version: 1
name: restart
defaults: {start: oldest, batch: 50, ack_grace: 2s}
streams: {in: {}, out: {}}
sinks:
  fwd:
    streams: [in]
    handler: restart_handlers:forward
    consumers: 2
    outputs: [out]
"""

RESTART_HANDLERS = """
import time
from topology import Emit

def forward(event):
    time.sleep(0.0005)
    return Emit("out", event.payload)
"""


async def test_a_redis_restart_mid_run_loses_and_duplicates_nothing(
    server_binary: str, tmp_path: Path
) -> None:
    from topology.server import ServerProcess

    server = ServerProcess(tmp_path / "redis", appendonly=True, binary=server_binary)
    server.start()
    (tmp_path / "restart_handlers.py").write_text(RESTART_HANDLERS)
    (tmp_path / "restart.yaml").write_text(RESTART_CONFIG)
    client = aioredis.Redis.from_url(server.url)
    n = 4000
    try:
        conn = Connection(client)
        await conn.stream("in").add_many(("e", str(i), None) for i in range(n))
        runtime = Runtime(conn, deployment="restart", worker_id="w", base_dir=tmp_path)
        await runtime.apply(load(tmp_path / "restart.yaml"))
        loop = asyncio.get_running_loop()
        try:
            while runtime.handled().get("fwd", 0) < n // 4:
                await asyncio.sleep(0.01)
            await loop.run_in_executor(None, server.restart)  # SIGTERM (AOF kept), start
            deadline = time.monotonic() + 60
            # not handled(): a commit whose reply the restart cut is applied but not counted
            while True:
                try:
                    if await client.xlen("pulse:stream:out") >= n and not await runtime.pending():
                        break
                except redis.exceptions.ConnectionError:  # this test's own stale connection
                    pass
                assert time.monotonic() < deadline, runtime.handled()
                await asyncio.sleep(0.05)
        finally:
            await runtime.drain(5)
            await runtime.close()
        payloads = sorted(int(f[b"p"]) for _, f in await client.xrange("pulse:stream:out"))
        assert len(payloads) == n, f"{len(payloads) - len(set(payloads))} duplicates"
        assert payloads == list(range(n))
    finally:
        await client.aclose()
        server.stop()
