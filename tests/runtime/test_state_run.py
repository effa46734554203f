"""Keyed state in a running engine, against a real server: handler(event, state), the
state committed with the outputs and the ack, failures and contract errors changing
no state, conflicts handled again from the current state, ttl, reloads."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.helpers import wait_for
from tests.runtime.test_supervisor import sink, topo
from topology import Emit
from topology.config.model import RetryPolicy, StateSpec, Topology
from topology.runtime import Runtime
from topology.runtime.commit import Committer, Entry
from topology.runtime.keys import EngineKeys
from topology.runtime.state import (
    KeyState,
    apply_batch,
    keyed_batch,
    read_states,
    state_layout,
)
from topology.streams import Connection

HANDLERS = """
import asyncio
from topology import Emit

def count(event, state):
    data = event.json()
    if data.get("boom"):
        state["n"] = -1000  # changed, then raises: must not land
        raise RuntimeError("boom")
    if data.get("bad_state"):
        state["x"] = object()
        return None
    if data.get("bad_emit"):
        return Emit("x", {}, stream="nowhere")
    state["n"] = state.get("n", 0) + 1
    state.setdefault("seqs", []).append(data["seq"])
    return Emit("count", {"k": data["k"], "n": state["n"], "seq": data["seq"]})

async def count_async(event, state):
    await asyncio.sleep(0)
    return count(event, state)

def count_v2(event, state):
    state["n"] = state.get("n", 0) + 1
    state["v2"] = True
    return Emit("count", {"k": event.json()["k"], "n": state["n"]}, stream="out2")

def returns_awaitable(event, state):
    state["n"] = 1
    return count_async(event, state)

def key_fn(event):
    return event.json()["k"].upper()
"""


def keyed(name: str = "agg", **kw: Any) -> Any:
    kw.setdefault("handler", "sh:count")
    kw.setdefault("key", "k")
    kw.setdefault("state", StateSpec())
    kw.setdefault("dead_letter", "dead")
    kw.setdefault("retry", RetryPolicy(max_attempts=2, backoff=0.01))
    return sink(name, **kw)


def topo_of(tmp_path: Path, *sinks: Any) -> Topology:
    return replace(topo(tmp_path, *sinks, streams=("dead",)), name="st")


async def runtime_for(r: aioredis.Redis, tmp_path: Path, **kw: Any) -> Runtime:
    return Runtime(Connection(r), deployment="st", worker_id="w1", base_dir=tmp_path, **kw)


@pytest.fixture
async def runtime(r: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Runtime]:
    (tmp_path / "sh.py").write_text(HANDLERS)
    rt = await runtime_for(r, tmp_path)
    yield rt
    await rt.drain(5)
    await rt.close()


async def feed(r: aioredis.Redis, events: list[dict[str, Any]], stream: str = "in") -> None:
    conn = Connection(r)
    await conn.stream(stream).add_many(("e", json.dumps(e), None) for e in events)


async def states(r: aioredis.Redis, sink_name: str = "agg") -> dict[str, dict[str, Any]]:
    prefix = EngineKeys("st").state_prefix(sink_name, None)
    out = {}
    async for raw in r.scan_iter(match=prefix + "*"):
        name = raw.decode()
        text = await r.hget(name, "s")
        out[name[len(prefix) :]] = json.loads(text)
    return out


async def outputs(r: aioredis.Redis, stream: str = "out") -> list[dict[str, Any]]:
    return [json.loads(f[b"p"]) for _, f in await r.xrange(f"pulse:stream:{stream}")]


async def dead(r: aioredis.Redis) -> list[dict[bytes, bytes]]:
    return [f for _, f in await r.xrange("pulse:stream:dead")]


def per_key(outs: list[dict[str, Any]]) -> dict[str, list[int]]:
    got: dict[str, list[int]] = {}
    for o in outs:
        got.setdefault(o["k"], []).append(o["n"])
    return got


@pytest.mark.parametrize("handler", ["sh:count", "sh:count_async", "pool"])
async def test_state_counts_in_stream_order_per_key(
    r: aioredis.Redis, tmp_path: Path, handler: str
) -> None:
    (tmp_path / "sh.py").write_text(HANDLERS)
    rt = await runtime_for(r, tmp_path, handler_threads=4 if handler == "pool" else None)
    try:
        events = [{"k": f"k{i % 7}", "seq": i} for i in range(700)]
        await feed(r, events)
        fn = "sh:count" if handler == "pool" else handler
        await rt.apply(topo_of(tmp_path, keyed(handler=fn, batch=64)))
        await wait_for(lambda: rt.handled().get("agg") == 700)
        # one actor: a chunk sharing keys with the one before starts from its commit
        # (never from a state read before it), so it never conflicts with itself
        assert rt.metrics.totals(rt.metrics.state_moved).get("agg", 0) == 0
    finally:
        await rt.drain(5)
        await rt.close()
    got = await states(r)
    assert {k: s["n"] for k, s in got.items()} == {f"k{j}": 100 for j in range(7)}
    for j in range(7):  # stream order per key: consumers 1
        assert got[f"k{j}"]["seqs"] == list(range(j, 700, 7))
    assert per_key(await outputs(r)) == {f"k{j}": list(range(1, 101)) for j in range(7)}
    assert (await r.xpending("pulse:stream:in", "agg"))["pending"] == 0


async def test_a_failing_handler_changes_no_state_and_is_dead_lettered(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    events = [{"k": "a", "seq": 0}, {"k": "a", "seq": 1, "boom": True}, {"k": "a", "seq": 2}]
    await feed(r, events)
    await runtime.apply(topo_of(tmp_path, keyed()))
    await wait_for(lambda: r.xlen("pulse:stream:dead"))  # committed, not only planned
    await wait_for(lambda: runtime.handled().get("agg") == 2)
    got = await states(r)
    assert got["a"]["n"] == 2 and got["a"]["seqs"] == [0, 2]
    (letter,) = await dead(r)
    assert letter[b"error_type"] == b"RuntimeError"
    assert letter[b"attempts"] == b"2"
    assert runtime.metrics.totals(runtime.metrics.failed)["agg"] == 2


async def test_contract_errors_are_dead_lettered_with_the_state_untouched(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    events = [
        {"k": "a", "seq": 0},
        {"seq": 1},  # no key
        {"k": "a", "seq": 2, "bad_state": True},
        {"k": "a", "seq": 3, "bad_emit": True},
        {"k": "a", "seq": 4},
    ]
    await feed(r, events)
    await runtime.apply(topo_of(tmp_path, keyed()))
    await wait_for(_length(r, "dead", 3))
    await wait_for(lambda: runtime.handled().get("agg") == 2)
    assert (await states(r))["a"] == {"n": 2, "seqs": [0, 4]}
    types = sorted(letter[b"error_type"].decode() for letter in await dead(r))
    assert types == ["ContractError", "StateContractError", "StateContractError"]
    assert [o["seq"] for o in await outputs(r)] == [0, 4]
    assert runtime.metrics.totals(runtime.metrics.failed)["agg"] == 3  # not retried


async def test_a_sync_handler_returning_an_awaitable_is_a_contract_error(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    await feed(r, [{"k": "a", "seq": 0}])
    await runtime.apply(topo_of(tmp_path, keyed(handler="sh:returns_awaitable")))
    await wait_for(lambda: r.xlen("pulse:stream:dead"))
    (letter,) = await dead(r)
    assert letter[b"error_type"] == b"StateContractError"
    assert await states(r) == {}  # its state change never landed


async def test_a_key_function_sets_the_state_key(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    await feed(r, [{"k": "a", "seq": 0}, {"k": "A", "seq": 1}])
    await runtime.apply(topo_of(tmp_path, keyed(key="sh:key_fn")))
    await wait_for(lambda: runtime.handled().get("agg") == 2)
    assert (await states(r))["A"]["n"] == 2


async def test_two_runtimes_hammering_one_key_lose_no_update(
    r: aioredis.Redis, tmp_path: Path
) -> None:
    (tmp_path / "sh.py").write_text(HANDLERS)
    n = 1500
    await feed(r, [{"k": "hot", "seq": i} for i in range(n)])
    rts = [await runtime_for(r, tmp_path) for _ in range(2)]
    try:
        spec = keyed(batch=8, consumers=2)
        for rt in rts:
            await rt.apply(topo_of(tmp_path, spec))

        def total() -> int:
            return sum(rt.handled().get("agg", 0) for rt in rts)

        await wait_for(lambda: total() == n, timeout=60)
        moved = sum(rt.metrics.totals(rt.metrics.state_moved).get("agg", 0) for rt in rts)
    finally:
        for rt in rts:
            await rt.drain(5)
            await rt.close()
    assert (await states(r))["hot"]["n"] == n
    assert sorted(per_key(await outputs(r))["hot"]) == list(range(1, n + 1))
    assert moved > 0  # they did contend, and every conflict was handled again
    text = rts[0].metrics.registry.get_sample_value("ponos_state_conflicts_total", {"sink": "agg"})
    assert text is not None


async def test_a_commit_whose_key_moved_writes_nothing_of_its_events(
    r: aioredis.Redis, conn: Connection
) -> None:
    stream = conn.stream("in")
    await stream.add_many(("e", json.dumps({"k": k}), None) for k in ("a", "b"))
    sink_ = await stream.new_sink("agg", start="oldest", block=0.1, count=10)
    events = await sink_.read_batch(10)
    spec = keyed()
    layout = state_layout("st", spec, conn.stream_key)
    names = [layout.name("a"), layout.name("b")]
    stored = await read_states(r, names)
    # Another actor commits key "a" meanwhile (version 0 -> 1).
    await r.hset(layout.name("a"), mapping={"v": 1, "s": '{"n":5}'})

    def fn(event: Any, state: dict[str, Any]) -> Any:
        state["n"] = state.get("n", 0) + 1
        return Emit("count", {"n": state["n"]})

    keys = ["a", "b"]
    applied = apply_batch(fn, events, keys, stored, layout, ("out",))
    entries = [Entry(e, o) for e, o in zip(events, applied.outcomes, strict=True)]  # type: ignore[arg-type]
    committer = Committer(
        r,
        group="agg",
        consumer=sink_.consumer,
        attempts_key="att",
        stream_key=conn.stream_key,
        streams=dict,
    )
    try:
        result = await committer.commit_keyed(keyed_batch(entries, keys, applied, layout))
    finally:
        await committer.close()
        await sink_.close()
    assert result.conflicts == [] and result.moved == [0]
    assert [json.loads(f[b"p"]) for _, f in await r.xrange("pulse:stream:out")] == [{"n": 1}]
    assert (await read_states(r, [layout.name("a")]))[layout.name("a")] == KeyState(
        layout.name("a"), 1, '{"n":5}'
    )
    assert (await r.xpending("pulse:stream:in", "agg"))["pending"] == 1  # "a" not acked


async def test_ttl_drops_an_idle_key_in_a_running_engine(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path
) -> None:
    await feed(r, [{"k": "a", "seq": 0}])
    await runtime.apply(topo_of(tmp_path, keyed(state=StateSpec(ttl=0.2))))
    await wait_for(lambda: runtime.handled().get("agg") == 1)
    prefix = EngineKeys("st").state_prefix("agg", None)
    assert 0 < await r.pttl(prefix + "a") <= 200
    await wait_for(lambda: r.exists(prefix + "a"), what="key present")
    await wait_for(_gone(r, prefix + "a"), timeout=5, what="key expired")
    await feed(r, [{"k": "a", "seq": 1}])
    await wait_for(lambda: runtime.handled().get("agg") == 2)
    assert per_key(await outputs(r))["a"] == [1, 1]  # started afresh from {}


def _length(r: aioredis.Redis, stream: str, n: int) -> Any:
    async def check() -> bool:
        return bool(await r.xlen(f"pulse:stream:{stream}") == n)

    return check


def _gone(r: aioredis.Redis, name: str) -> Any:
    async def check() -> bool:
        return not await r.exists(name)

    return check


async def test_reload_keeps_state_and_logs_a_key_change(
    runtime: Runtime, r: aioredis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await feed(r, [{"k": "a", "seq": i} for i in range(10)])
    await runtime.apply(topo_of(tmp_path, keyed()))
    await wait_for(lambda: runtime.handled().get("agg") == 10)
    # handler, outputs and consumers change: the state carries on
    await runtime.apply(
        topo_of(tmp_path, keyed(handler="sh:count_v2", outputs=("out2",), consumers=2))
    )
    await feed(r, [{"k": "a", "seq": i} for i in range(10, 15)])
    await wait_for(lambda: runtime.handled().get("agg") == 15)
    assert (await states(r))["a"]["n"] == 15 and (await states(r))["a"]["v2"] is True
    assert [o["n"] for o in await outputs(r, "out2")] == [11, 12, 13, 14, 15]
    # key changes: allowed, logged, the old keys stay
    caplog.set_level(logging.INFO, logger="topology")
    await runtime.apply(topo_of(tmp_path, keyed(key="sh:key_fn")))
    assert any("key changed" in rec.getMessage() for rec in caplog.records)
    await feed(r, [{"k": "a", "seq": 99}])
    await wait_for(lambda: runtime.handled().get("agg") == 16)
    got = await states(r)
    assert got["a"]["n"] == 15 and got["A"]["n"] == 1
    # state removed, then the sink removed: the keys stay
    await runtime.apply(topo_of(tmp_path, sink("agg", handler="sh:count", key=None)))
    await runtime.apply(topo_of(tmp_path, sink("other", handler="sh:key_fn")))
    assert set(await states(r)) == {"a", "A"}
