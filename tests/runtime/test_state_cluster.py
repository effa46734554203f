"""Keyed state on a 3-master Redis Cluster: a sink's state keys sit in its streams' slot
when the streams share a hash tag, so one script commits them with the streams."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from topology.config.model import SinkSpec, StateSpec, StreamRef
from topology.runtime.state import (
    STATE_SCRIPT,
    KeyState,
    commit_states,
    count_states,
    read_states,
    scan_states,
    state_args,
    state_layout,
)
from topology.server import ServerCluster
from topology.streams import Connection


@pytest.fixture
async def cluster(redis_cluster: ServerCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    await client.initialize()
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    await client.aclose()


def _sink(*streams: str) -> SinkSpec:
    return SinkSpec(
        "totals", tuple(StreamRef(s) for s in streams), "h:f", key="user", state=StateSpec(60)
    )


async def test_state_keys_share_the_slot_of_tagged_streams_and_commit_in_one_script(
    cluster: RedisCluster,
) -> None:
    conn = Connection(cluster)
    layout = state_layout("dep", _sink("{orders}in", "{orders}more"), conn.stream_key)
    names = [layout.name(f"user-{i}") for i in range(20)]
    slot = cluster.keyslot(conn.stream_key("{orders}in"))
    assert {cluster.keyslot(n) for n in [*names, layout.versions]} == {slot}
    # The deployment's own slot is another one: placement really follows the streams.
    assert cluster.keyslot("ponos:{dep}:x") != slot
    states = [KeyState(n, 0, f'{{"i":{i}}}', changed=True) for i, n in enumerate(names)]
    keys, args = state_args(states, layout)
    # All in one script (a CROSSSLOT error otherwise), with a stream of the flow beside them.
    script = STATE_SCRIPT.replace(
        "return moved", "redis.call('XADD', KEYS[#KEYS], '*', 'n', 'x')\nreturn moved"
    )
    moved = await cluster.register_script(script)(
        keys=[*keys, conn.stream_key("{orders}out")], args=args
    )
    assert list(moved) == []
    assert await cluster.xlen(conn.stream_key("{orders}out")) == 1
    stored = await read_states(cluster, names)
    assert [stored[n].version for n in names] == [1] * 20
    assert 0 < await cluster.pttl(names[0]) <= 60_000


async def test_untagged_streams_keep_a_sinks_state_in_one_slot_still(
    cluster: RedisCluster,
) -> None:
    conn = Connection(cluster)
    layout = state_layout("dep", _sink("orders", "refunds"), conn.stream_key)
    names = [layout.name(f"user-{i}") for i in range(20)]
    assert {cluster.keyslot(n) for n in names} == {cluster.keyslot("ponos:{dep}:x")}
    keys, args = state_args([KeyState(n, 0, '{"n":1}', changed=True) for n in names], layout)
    assert list(await cluster.register_script(STATE_SCRIPT)(keys=keys, args=args)) == []
    moved = await cluster.register_script(STATE_SCRIPT)(keys=keys, args=args)
    assert sorted(int(i) for i in moved) == list(range(20))  # read at 0, now at 1


async def test_a_sinks_keys_are_scanned_and_counted_across_the_cluster(
    cluster: RedisCluster,
) -> None:
    conn = Connection(cluster)
    layout = state_layout("dep", _sink("orders"), conn.stream_key)
    other = state_layout("dep", SinkSpec("x", (), "h:f", key="k", state=StateSpec()), str)
    states = [KeyState(layout.name(f"u{i}"), 0, f'{{"i":{i}}}', changed=True) for i in range(30)]
    assert await commit_states(cluster, states, layout) == []
    await commit_states(cluster, [KeyState(other.name("u1"), 0, "{}", changed=True)], other)
    assert await count_states(cluster, layout) == 30
    found = {
        key: ks.text async for batch in scan_states(cluster, layout, count=7) for key, ks in batch
    }
    assert found == {f"u{i}": f'{{"i":{i}}}' for i in range(30)}
