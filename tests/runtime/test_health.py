"""``run --metrics-port``: /healthz, /readyz (with its reasons) and the latency, retry,
lag and pending metrics, against a real server the test can stop."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from tests.helpers import wait_for, wait_until
from tests.runtime.test_run_cli import start_run
from topology.config import load
from topology.runtime import Runtime
from topology.runtime.health import Sampler, readiness_problems
from topology.server import ServerProcess, free_port
from topology.streams import Connection

CONFIG = """\
version: 1
name: hz
defaults: {start: oldest, retry: {max_attempts: 2, backoff: 10ms}}
streams: {in: {}, out: {}, dlq: {}}
sinks:
  work:
    streams: [in]
    handler: hz_handlers:work
    outputs: [out]
    dead_letter: dlq
"""

HANDLERS = """\
from topology import Emit

def work(event):
    if event.payload == b"bad":
        raise ValueError("bad")
    return Emit("done", event.payload)
"""


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def answers(port: int, path: str, status: int, text: str = "") -> bool:
    try:
        got = get(port, path)
    except OSError:  # not listening yet
        return False
    return got[0] == status and text in got[1]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "hz_handlers.py").write_text(HANDLERS)
    path = tmp_path / "hz.yaml"
    path.write_text(CONFIG)
    return path


def test_probes_and_metrics_of_a_running_worker(config: Path, fresh_server: ServerProcess) -> None:
    port = free_port()
    proc = start_run(config, fresh_server.url, "--metrics-port", str(port), watch=True)
    client = redis.Redis.from_url(fresh_server.url)
    try:
        wait_until(lambda: answers(port, "/readyz", 200, "ready"), 30, "ready")
        assert get(port, "/healthz") == (200, "ok\n")
        for payload in ("a", "bad", "b"):
            client.xadd("pulse:stream:in", {"n": "e", "p": payload})
        wait_until(lambda: client.xlen("pulse:stream:dlq") == 1, 30, "the dead letter")
        wait_until(lambda: 'ponos_pending{sink="work"}' in get(port, "/metrics")[1], 30, "sample")
        metrics = get(port, "/metrics")[1]
        assert 'ponos_handler_seconds_bucket{le="0.0005",sink="work"}' in metrics
        assert 'ponos_commit_seconds_count{sink="work"}' in metrics
        assert 'ponos_retries_total{sink="work"} 1.0' in metrics  # attempt 1 of 2 retried
        assert 'ponos_lag{sink="work"}' in metrics
        assert 'ponos_events_handled_total{sink="work"} 2.0' in metrics

        config.write_text("version: 1\nname: hz\nsinks: [\n")  # an invalid file: not applied
        wait_until(lambda: answers(port, "/readyz", 503, "last reload failed (invalid)"), 30, "503")
        config.write_text(CONFIG)
        wait_until(lambda: answers(port, "/readyz", 200, "ready"), 30, "ready again")

        fresh_server.stop()
        wait_until(lambda: answers(port, "/readyz", 503, "redis unreachable"), 30, "no redis")
        assert get(port, "/healthz") == (200, "ok\n")  # the process is up all the same
    finally:
        client.close()
        proc.terminate()
        proc.communicate(timeout=30)


async def test_readyz_names_an_actor_that_stopped_unbidden(config: Path, r: aioredis.Redis) -> None:
    runtime = Runtime(Connection(r), deployment="hz", worker_id="w", base_dir=config.parent)
    await runtime.apply(load(config))
    sampler = Sampler(runtime)
    try:
        await sampler.sample()
        assert readiness_problems(runtime, sampler, lambda: "applied") == []
        actor = runtime.actors("work")[0]
        actor._task.cancel()  # what a bug in the actor's loop would leave: its task over
        await wait_for(lambda: not actor.running)
        assert readiness_problems(runtime, sampler, lambda: "rolled_back") == [
            f"actor crashed: {actor.name}",
            "last reload failed (rolled_back): generation 1 runs, not the config on disk",
        ]
    finally:
        await runtime.drain(5)
        await runtime.close()
