"""Worker heartbeats: registration, staleness, removal."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys

import redis.asyncio as aioredis

from topology.runtime.keys import EngineKeys
from topology.runtime.workers import (
    _PID_SPACE,
    ConsumerOwners,
    WorkerRegistry,
    live_workers,
    new_worker_id,
    read_workers,
)


def test_worker_ids_are_host_pid_random_and_unique() -> None:
    a, b = new_worker_id(), new_worker_id()
    assert a != b
    assert re.fullmatch(rf".+-{os.getpid()}-[0-9a-f]{{6}}", a)


async def test_registered_worker_is_live_with_its_info_and_removed_at_stop(
    r: aioredis.Redis,
) -> None:
    reg = WorkerRegistry(r, "dep", "w1", interval=0.2)
    reg.start(lambda: {"version": "0.1.0", "generation": 3})
    await reg.wait_registered()
    live = await reg.live()
    assert set(live) == {"w1"}
    assert live["w1"]["generation"] == 3 and live["w1"]["pid"] == os.getpid()
    assert live["w1"]["age"] < 1.0
    await reg.stop()
    assert await r.hlen(EngineKeys("dep").workers()) == 0


async def test_stop_ends_the_heartbeat_even_during_a_beat(r: aioredis.Redis) -> None:
    # Beating all the time, a stop often lands while a beat is in flight, where
    # redis-py may swallow the cancellation of the beating task (on Python 3.11,
    # asyncio.wait_for around its socket write does when the write just ended).
    for run in range(30):
        reg = WorkerRegistry(r, "dep", f"w{run}", interval=1e-6)
        reg.start(dict)
        await reg.wait_registered()
        for _ in range(run % 7):  # the stop lands at another point of a beat each time
            await asyncio.sleep(0)
        await asyncio.wait_for(reg.stop(), 10)
        assert await r.hget(EngineKeys("dep").workers(), f"w{run}") is None


async def test_missed_beats_make_a_worker_stale(r: aioredis.Redis) -> None:
    now = (await r.time())[0]
    entry = {"pid": 1, "host": "elsewhere", "interval": 2.0, "beat": now - 7}
    await r.hset(EngineKeys("dep").workers(), "ghost", json.dumps(entry))
    workers = await read_workers(r, "dep")
    assert workers["ghost"]["live"] is False
    assert await live_workers(r, "dep") == {}


async def test_a_dead_local_process_is_not_live_even_with_a_fresh_beat(r: aioredis.Redis) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    now = (await r.time())[0]
    entry = {"pid": proc.pid, "pid_space": _PID_SPACE, "interval": 2.0, "beat": now}
    await r.hset(EngineKeys("dep").workers(), "killed", json.dumps(entry))
    assert await live_workers(r, "dep") == {}


async def test_a_pid_from_another_pid_namespace_is_not_checked_here(r: aioredis.Redis) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    now = (await r.time())[0]
    entry = {
        "pid": proc.pid,
        "pid_space": "same-host/other-container",
        "interval": 2.0,
        "host": socket.gethostname(),
        "beat": now,
    }
    await r.hset(EngineKeys("dep").workers(), "elsewhere", json.dumps(entry))
    assert set(await live_workers(r, "dep")) == {"elsewhere"}


async def test_very_old_and_corrupt_entries_are_forgotten(r: aioredis.Redis) -> None:
    key = EngineKeys("dep").workers()
    await r.hset(key, "old", json.dumps({"host": "x", "pid": 1, "beat": 1.0}))
    await r.hset(key, "junk", "not json")
    assert await read_workers(r, "dep") == {}
    assert await r.hlen(key) == 0


async def test_a_consumer_is_dead_only_when_its_worker_is_known_dead(r: aioredis.Redis) -> None:
    """What a claim pass asks before removing a consumer from a group: the heartbeat of
    the worker named in the consumer, never idleness alone."""
    deployment = "owners"
    reg = WorkerRegistry(r, deployment, "live-w", interval=0.2)
    reg.start(dict)
    await reg.wait_registered()
    try:
        now = (await r.time())[0]
        ghost = {"pid": 1, "host": "elsewhere", "interval": 2.0, "beat": now - 60}
        await r.hset(EngineKeys(deployment).workers(), "dead-w", json.dumps(ghost))
        owners = ConsumerOwners(r, deployment, "me")
        hour_ms = 3600 * 1000
        assert await owners.alive(owners.consumer_name("s#0"), 10 * hour_ms)  # its own
        assert await owners.alive("live-w/s#0-abc", 10 * hour_ms)
        assert not await owners.alive("dead-w/s#0-abc", 0)
        assert await owners.alive("host-1-abc", 60_000)  # unknown owner, idle a minute
        assert not await owners.alive("host-1-abc", 2 * hour_ms)
    finally:
        await reg.stop()
