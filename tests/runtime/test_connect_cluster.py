"""A Redis Cluster is reached through any node's URL, and the CLI commands work on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from topology.cli import main
from topology.config.model import Topology
from topology.runtime.connect import open_redis
from topology.server import ServerCluster, ServerProcess

SLOTS = 16384


@pytest.fixture
def cluster_nodes(redis_cluster: ServerCluster) -> list[ServerProcess]:
    return redis_cluster.nodes


async def test_any_node_url_gives_a_cluster_client(cluster: list[ServerProcess]) -> None:
    async with open_redis(Topology(name="t"), cli_url=cluster[1].url) as connected:
        assert isinstance(connected.client, aioredis.RedisCluster)
        for i in range(20):  # keys spread over the three masters
            await connected.client.set(f"k{i}", i)
        assert [await connected.client.get(f"k{i}") for i in range(20)] == [
            str(i).encode() for i in range(20)
        ]


@pytest.fixture
def cluster(cluster_nodes: list[ServerProcess]) -> list[ServerProcess]:
    """The module's cluster, every master flushed."""
    for node in cluster_nodes:
        client = redis.Redis.from_url(node.url)
        try:
            client.flushall()
        finally:
            client.close()
    return cluster_nodes


CONFIG = """\
version: 1
name: cl
streams:
  orders: {}
  orders-dlq: {}
sinks:
  enrich:
    streams: [orders]
    handler: handlers:enrich
    dead_letter: orders-dlq
"""


def test_emit_tail_and_status_work_on_a_cluster(
    cluster: list[ServerProcess], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "handlers.py").write_text("def enrich(event):\n    return None\n")
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG)
    url = ("--redis-url", cluster[0].url)
    assert main(["emit", str(config), "orders", "a", "1", "--topic", "eu", *url]) == 0
    events = tmp_path / "e.jsonl"
    events.write_text("\n".join(json.dumps({"name": f"n{i}", "payload": i}) for i in range(50)))
    assert main(["emit", str(config), "orders-dlq", "-f", str(events), *url]) == 0
    capsys.readouterr()
    assert main(["status", str(config), "--format", "json", *url]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sinks"]["enrich"]["dead_letter"]["length"] == 50
    assert data["sinks"]["enrich"]["streams"]["orders"]["length"] == 1


def test_tail_works_on_a_cluster(
    cluster: list[ServerProcess], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "handlers.py").write_text("def enrich(event):\n    return None\n")
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG)
    url = ("--redis-url", cluster[0].url)
    assert main(["emit", str(config), "orders", "a", "1", "--topic", "eu", *url]) == 0
    capsys.readouterr()
    assert main(["tail", str(config), "orders", "--format", "json", *url]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["topic"] == "eu"


async def test_sources_and_heartbeats_work_on_a_cluster(
    cluster: list[ServerProcess], tmp_path: Path
) -> None:
    from topology.config.model import SourceSpec, StreamSpec
    from topology.runtime.sources import SourceRunner
    from topology.runtime.workers import WorkerRegistry

    (tmp_path / "cluster_src.py").write_text(
        "from topology import Emit\n"
        "def gen(ctx):\n"
        "    for i in range(300):\n"
        "        yield Emit('n', str(i))\n"
        "    ctx.checkpoint('300')\n"
    )
    topo = Topology(
        name="cl",
        path=tmp_path / "pipeline.yaml",
        streams={"out": StreamSpec("out")},
        sources={"gen": SourceSpec("gen", "cluster_src:gen", "out")},
    )
    async with open_redis(topo, cli_url=cluster[2].url) as connected:
        registry = WorkerRegistry(connected.client, "cl", "w1", interval=0.5)
        registry.start(lambda: {"version": "x"})
        await registry.wait_registered()
        runner = SourceRunner(topo.sources["gen"], topo, connected.conn, worker_id="w1")
        runner.start()
        await runner.wait()
        assert runner.done and runner.produced == 300
        assert await connected.client.xlen(connected.conn.stream_key("out")) == 300
        assert set(await registry.live()) == {"w1"}
        await registry.stop()


def test_the_start_line_says_a_cluster_was_detected(
    cluster: list[ServerProcess], tmp_path: Path
) -> None:
    (tmp_path / "handlers.py").write_text("def enrich(event):\n    return None\n")
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "topology.cli",
            "run",
            str(config),
            "--no-watch",
            "--redis-url",
            cluster[0].url,
            "--stop-when-idle",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    start = next(line for line in proc.stderr.splitlines() if "ponos-topology" in line)
    assert "(Redis Cluster detected: 3 masters)" in start
