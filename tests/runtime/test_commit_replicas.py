"""The cross-slot commit on a cluster with replicas: an input is acked only once its
outputs are on a node that can take over, including just after a replica attached."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from tests.helpers import wait_until
from topology.runtime.commit import SPLIT, Add, Committer, Entry
from topology.runtime.keys import EngineKeys
from topology.server import ServerCluster, ServerProcess
from topology.streams import Event

GROUP = "sink"


def key(name: str) -> str:
    return f"pulse:stream:{name}"


@pytest.fixture
async def cluster(server_binary: str, tmp_path: Path) -> AsyncIterator[ServerCluster]:
    with ServerCluster(tmp_path, binary=server_binary, replicas=1) as nodes:
        yield nodes


async def _pending(client: RedisCluster, n: int) -> list[Event]:
    await client.xgroup_create(key("in"), GROUP, id="0", mkstream=True)
    for i in range(n):
        await client.xadd(key("in"), {"n": "ev", "p": str(i)})
    reply = await client.xreadgroup(GROUP, "c1", {key("in"): ">"}, count=n)
    return [
        Event(eid.decode(), f[b"n"].decode(), f[b"p"], stream_name="in", sink_name=GROUP)
        for eid, f in reply[0][1]
    ]


def _replica_of(cluster: ServerCluster, master_port: int) -> ServerProcess:
    client = redis.Redis(port=master_port)
    try:
        role = client.execute_command("ROLE")
    finally:
        client.close()
    [(_, port, _)] = role[2]
    return next(node for node in cluster.nodes if node.port == int(port))


def _synced(node: ServerProcess) -> bool:
    client = redis.Redis(port=node.port)
    try:
        return bool(client.info("replication").get("master_link_status") == "up")
    except redis.ConnectionError:
        return False
    finally:
        client.close()


async def test_a_replica_attached_since_the_last_commit_is_waited_for(
    cluster: ServerCluster,
) -> None:
    """The output's master loses its replica, commits alone (nothing can take over
    from it), gets the replica back: the next commit's outputs are not yet on the
    replica, so its inputs stay pending (retried: at-least-once), and the retry,
    waiting for the replica, acks them."""
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        assert client.keyslot(key("in")) != client.keyslot(key("out"))
        events = await _pending(client, 4)
        committer = Committer(
            client,
            group=GROUP,
            consumer="c1",
            attempts_key=EngineKeys("t").attempts(GROUP),
            stream_key=key,
            streams=dict,
        )
        committer.mode = SPLIT

        def entries(batch: list[Event]) -> list[Entry]:
            return [Entry(e, [Add("out", ["n", "x", "p", e.payload])]) for e in batch]

        master = client.get_node_from_key(key("out"))
        replica = _replica_of(cluster, master.port)
        replica.kill()
        wait_until(lambda: not _replica_count(master.port), timeout=10, what="the replica gone")
        assert await committer.commit(entries(events[:2])) == []  # alone: nothing waits
        replica.start()
        wait_until(lambda: _synced(replica), timeout=20, what="the replica synced")
        with pytest.raises(redis.exceptions.TimeoutError, match="not confirmed by its replica"):
            await committer.commit(entries(events[2:]))
        pending = await client.xpending_range(key("in"), GROUP, "-", "+", 10)
        assert [p["message_id"].decode() for p in pending] == [e.id for e in events[2:]]
        assert await committer.commit(entries(events[2:])) == []
        assert (await client.xpending(key("in"), GROUP))["pending"] == 0
        written = [f[b"p"] for _, f in await client.xrange(key("out"))]
        assert set(written) == {b"0", b"1", b"2", b"3"}  # each at least once
    finally:
        await client.aclose()


def _replica_count(port: int) -> int:
    client = redis.Redis(port=port)
    try:
        return len(client.execute_command("ROLE")[2])
    finally:
        client.close()
