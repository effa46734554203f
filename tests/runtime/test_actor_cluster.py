"""Actors on a 3-master Redis Cluster: exactly-once when a flow's streams share a slot,
a fenced at-least-once fallback (said in the log) when they do not."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from topology.config.model import SinkSpec, StreamRef, StreamSpec, Topology
from topology.runtime import Runtime
from topology.runtime.commit import NO_ATTEMPTS, SPLIT
from topology.server import ServerCluster
from topology.streams import Connection

HANDLERS = "from topology import Emit\ndef fwd(e):\n    return Emit('x', e.payload)\n"


@pytest.fixture
def cluster_port(redis_cluster: ServerCluster) -> int:
    return redis_cluster.ports[0]


@pytest.fixture
async def cconn(cluster_port: int) -> AsyncIterator[Connection]:
    client = RedisCluster(host="127.0.0.1", port=cluster_port)
    await client.initialize()
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield Connection(client)
    await client.aclose()


async def run_flow(conn: Connection, tmp_path: Path, src: str, dst: str, n: int) -> Runtime:
    (tmp_path / "cl_handlers.py").write_text(HANDLERS)
    await conn.stream(src).add_many(("e", str(i), None) for i in range(n))
    topology = Topology(
        name="cl",
        streams={src: StreamSpec(src), dst: StreamSpec(dst)},
        sinks={
            "s": SinkSpec(
                "s",
                (StreamRef(src),),
                "cl_handlers:fwd",
                outputs=(dst,),
                start="oldest",
                consumers=2,
                batch=50,
            )
        },
        path=tmp_path / "cl.yaml",
    )
    runtime = Runtime(conn, deployment="cl", worker_id="w", base_dir=tmp_path)
    await runtime.apply(topology)
    deadline = time.monotonic() + 30
    while await conn.redis.xlen(conn.stream_key(dst)) < n or await runtime.pending():
        assert time.monotonic() < deadline, runtime.handled()
        await asyncio.sleep(0.05)
    return runtime


async def test_streams_sharing_a_slot_commit_in_one_script(
    cconn: Connection, tmp_path: Path
) -> None:
    src, dst = "{flow}in", "{flow}out"
    assert cconn.redis.keyslot(cconn.stream_key(src)) == cconn.redis.keyslot(cconn.stream_key(dst))
    runtime = await run_flow(cconn, tmp_path, src, dst, 500)
    try:
        assert {a.committer.mode for a in runtime.actors("s")} <= {NO_ATTEMPTS}
        rows = await cconn.redis.xrange(cconn.stream_key(dst))
        assert sorted(int(f[b"p"]) for _, f in rows) == list(range(500))
    finally:
        await runtime.drain(5)
        await runtime.close()


async def test_streams_in_different_slots_fall_back_and_say_so(
    cconn: Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src, dst = "in", "out"
    assert cconn.redis.keyslot(cconn.stream_key(src)) != cconn.redis.keyslot(cconn.stream_key(dst))
    with caplog.at_level(logging.WARNING, logger="topology.runtime"):
        runtime = await run_flow(cconn, tmp_path, src, dst, 500)
    try:
        assert {a.committer.mode for a in runtime.actors("s")} == {SPLIT}
        assert "at-least-once" in caplog.text
        rows = await cconn.redis.xrange(cconn.stream_key(dst))
        assert sorted(int(f[b"p"]) for _, f in rows) == list(range(500))
    finally:
        await runtime.drain(5)
        await runtime.close()
