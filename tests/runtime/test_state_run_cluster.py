"""Keyed state in a running engine on a 3-master Redis Cluster: with a shared hash tag the
state commits in the streams' script (exactly-once); without, the fallback says so and
still counts every event."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.helpers import wait_for
from topology.config.model import SinkSpec, StateSpec, StreamRef, StreamSpec, Topology
from topology.runtime import Runtime
from topology.runtime.commit import NO_ATTEMPTS, SPLIT
from topology.runtime.state import read_states, state_layout
from topology.server import ServerCluster
from topology.streams import Connection

HANDLERS = """
from topology import Emit

def count(event, state):
    state["n"] = state.get("n", 0) + 1
    return Emit("count", {"k": event.json()["k"], "n": state["n"]})
"""
KEYS = 5


@pytest.fixture
async def cconn(redis_cluster: ServerCluster) -> AsyncIterator[Connection]:
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    await client.initialize()
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield Connection(client)
    await client.aclose()


async def run_keyed(conn: Connection, tmp_path: Path, src: str, dst: str, n: int) -> Runtime:
    (tmp_path / "cst_handlers.py").write_text(HANDLERS)
    await conn.stream(src).add_many(
        ("e", json.dumps({"k": f"k{i % KEYS}"}), None) for i in range(n)
    )
    spec = SinkSpec(
        "s",
        (StreamRef(src),),
        "cst_handlers:count",
        outputs=(dst,),
        start="oldest",
        consumers=2,
        batch=20,
        key="k",
        state=StateSpec(),
    )
    topology = Topology(
        name="cst",
        streams={src: StreamSpec(src), dst: StreamSpec(dst)},
        sinks={"s": spec},
        path=tmp_path / "cst.yaml",
    )
    runtime = Runtime(conn, deployment="cst", worker_id="w", base_dir=tmp_path)
    await runtime.apply(topology)
    await wait_for(lambda: runtime.handled().get("s") == n, timeout=60)
    return runtime


async def check_exact(conn: Connection, src: str, dst: str, n: int) -> None:
    spec = SinkSpec("s", (StreamRef(src),), "x:y", key="k", state=StateSpec())
    layout = state_layout("cst", spec, conn.stream_key)
    names = [layout.name(f"k{j}") for j in range(KEYS)]
    stored = await read_states(conn.redis, names)
    assert [json.loads(stored[name].text or "{}")["n"] for name in names] == [n // KEYS] * KEYS
    per_key: dict[str, list[int]] = {}
    for _, fields in await conn.redis.xrange(conn.stream_key(dst)):
        out = json.loads(fields[b"p"])
        per_key.setdefault(out["k"], []).append(out["n"])
    assert {k: sorted(v) for k, v in per_key.items()} == {
        f"k{j}": list(range(1, n // KEYS + 1)) for j in range(KEYS)
    }


async def test_state_with_a_shared_hash_tag_commits_in_the_streams_script(
    cconn: Connection, tmp_path: Path
) -> None:
    src, dst = "{o}in", "{o}out"
    runtime = await run_keyed(cconn, tmp_path, src, dst, 400)
    try:
        assert {a.committer.mode for a in runtime.actors("s")} == {NO_ATTEMPTS}
        await check_exact(cconn, src, dst, 400)
    finally:
        await runtime.drain(5)
        await runtime.close()


async def test_state_without_a_shared_tag_falls_back_and_says_so(
    cconn: Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src, dst = "in", "out"
    with caplog.at_level(logging.WARNING, logger="topology.runtime"):
        runtime = await run_keyed(cconn, tmp_path, src, dst, 400)
    try:
        assert {a.committer.mode for a in runtime.actors("s")} == {SPLIT}
        assert "keyed state is at-least-once" in caplog.text
        await check_exact(cconn, src, dst, 400)  # no crash here: nothing applied twice
    finally:
        await runtime.drain(5)
        await runtime.close()
