"""A stalled path to Redis (open connections frozen, new ones working): the commit
path on both lanes, sources and the deployment watcher resume on new connections
within their deadline, with nothing lost or written twice."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from tests.helpers import wait_for
from tests.proxy import TcpProxy
from tests.runtime.test_actor import fill, make_actor, pending
from tests.runtime.test_deployment import Recorder, wait_applied, write_config
from tests.runtime.test_sources import _topology
from topology import Emit, Event
from topology.runtime.connect import client_from_url
from topology.runtime.deployment import DeploymentFollower, publish
from topology.runtime.sources import SourceRunner
from topology.streams import Connection

#: redis.timeout in these tests: every deadline is a small multiple of it.
TIMEOUT = 0.5


async def _payloads(r: aioredis.Redis, stream: str) -> list[int]:
    return [int(f[b"p"]) for _, f in await r.xrange(f"pulse:stream:{stream}")]


async def test_a_commit_past_its_deadline_is_retried_once_fenced(
    proxy: TcpProxy, r: aioredis.Redis, executor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    client = client_from_url(proxy.url, TIMEOUT)
    conn = Connection(client)
    entered, gate = threading.Event(), threading.Event()

    def handler(event: Event) -> Emit:
        if event.payload == b"1":  # the second batch waits while the path freezes
            entered.set()
            gate.wait(10)
        return Emit("done", event.payload)

    actor = make_actor(conn, handler, executor, batch=1)
    try:
        await fill(conn, 1)  # a first commit opens the commit connection
        await actor.start()
        await wait_for(lambda: actor.handled == 1)
        await r.xadd("pulse:stream:in", {"n": "e1", "p": "1"})
        assert await asyncio.to_thread(entered.wait, 10)
        assert proxy.stall() >= 2  # the read link and the commit connection at least
        gate.set()  # its commit goes out on the frozen connection
        for i in range(2, 30):
            await r.xadd("pulse:stream:in", {"n": f"e{i}", "p": str(i)})
        await wait_for(lambda: actor.handled == 30, timeout=20 * TIMEOUT + 10)
    finally:
        await actor.drain(5)
        await client.aclose()
    assert sorted(await _payloads(r, "out")) == list(range(30))  # none lost, none twice
    assert await pending(r) == 0
    assert "a commit got no reply from Redis at 127.0.0.1:" in caplog.text


async def test_a_source_resumes_after_a_stall_with_nothing_lost_or_added_twice(
    proxy: TcpProxy, r: aioredis.Redis, tmp_path: Path
) -> None:
    topo = _topology(
        tmp_path,
        """
        import asyncio
        from topology import Emit
        async def gen():
            for i in range(60):
                yield Emit("n", str(i))
                await asyncio.sleep(0.02)
        """,
    )
    client = client_from_url(proxy.url, TIMEOUT)
    conn = Connection(client)
    runner = SourceRunner(topo.sources["gen"], topo, conn, worker_id="w1", lease_ttl=5.0)
    try:
        runner.start()
        await wait_for(lambda: runner.produced >= 10)
        assert proxy.stall() >= 1
        await asyncio.wait_for(runner.wait(), 30)
    finally:
        await runner.stop()
        await client.aclose()
    assert runner.done and runner.produced == 60
    assert await _payloads(r, "out") == list(range(60))


async def test_the_deployment_watcher_resumes_after_a_stall(
    proxy: TcpProxy, r: aioredis.Redis, tmp_path: Path
) -> None:
    text = write_config(tmp_path, "depst").read_text()
    await publish(r, "depst", text, source="dep.yaml")
    client = client_from_url(proxy.url, TIMEOUT)
    # No polling to fall back on: the subscription itself must find the frozen path.
    follower = DeploymentFollower(client, "depst", handlers_dir=tmp_path, poll_interval=60)
    recorder = Recorder()
    try:
        assert await follower.first(asyncio.Event()) is not None
        follower.start(recorder)
        await wait_for(lambda: proxy.open_links() >= 2)  # subscribed
        assert proxy.stall() >= 2
        await publish(r, "depst", text.replace("streams: [a]", "streams: [a, b]"), source="d")
        await wait_applied(recorder, 1)
        assert recorder.applied[0].sinks["fwd"].stream_names == ("a", "b")
        assert follower.version == 2
    finally:
        await follower.stop()
        await client.aclose()


CLI_CONFIG = """\
version: 1
name: rt
redis: {timeout: 1s}
streams:
  orders: {}
"""


def test_tail_follow_resumes_after_a_stall(proxy: TcpProxy, redis_url: str, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(CLI_CONFIG)
    direct = redis.Redis.from_url(redis_url)
    first = direct.xadd("pulse:stream:orders", {"n": "before", "p": "1"}).decode()
    argv = ["tail", str(config), "orders", "--follow", "--from", first, "-n", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "topology.cli", *argv, "--redis-url", proxy.url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split()[2] == "before"  # tail is reading now
        assert proxy.stall() >= 1
        direct.xadd("pulse:stream:orders", {"n": "after", "p": "2"})
        assert proc.stdout.readline().split()[2] == "after"
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        direct.close()


def test_status_gives_up_at_the_deadline(proxy: TcpProxy, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text(CLI_CONFIG)
    proxy.delay(30)  # every reply comes far too late
    done = subprocess.run(
        [sys.executable, "-m", "topology.cli", "status", str(config), "--redis-url", proxy.url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1, done.stderr
    assert f"127.0.0.1:{proxy.port}" in done.stderr
