"""Throughput of ``topology.streams`` next to hand-written redis-py loops (not a test).

One run, one server (started here with ``topology.server.ServerProcess``), same
data for every contender, median of ``--repeat`` runs:

- consumer: a library Sink (``read_batch`` + ``ack_many`` per batch, default
  COUNT) vs a hand-written redis.asyncio XREADGROUP + XACK loop vs the same loop
  with sync redis-py;
- producer: ``Stream.add_many`` vs a hand-written redis.asyncio pipeline of XADD
  vs a sync redis-py pipeline.

    python tools/bench_streams.py [--events 200000] [--batch 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis
import redis.asyncio as aioredis

from topology import streams
from topology.server import ServerProcess

PAYLOAD = (
    b'{"order_id": 123456, "customer": "c-42", "amount": 99.95, "currency": "EUR"}' + b"x" * 24
)


async def produce_library(url: str, key_name: str, n: int, batch: int) -> float:
    client = aioredis.Redis.from_url(url)
    stream = streams.Connection(client).stream(key_name)
    started = time.perf_counter()
    for offset in range(0, n, batch):
        await stream.add_many(("evt", PAYLOAD, None) for _ in range(min(batch, n - offset)))
    elapsed = time.perf_counter() - started
    await client.aclose()
    return elapsed


async def produce_asyncio(url: str, key: str, n: int, batch: int) -> float:
    client = aioredis.Redis.from_url(url)
    started = time.perf_counter()
    for offset in range(0, n, batch):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(batch, n - offset)):
            pipe.xadd(key, {"n": "evt", "p": PAYLOAD})
        await pipe.execute()
    elapsed = time.perf_counter() - started
    await client.aclose()
    return elapsed


def produce_sync(url: str, key: str, n: int, batch: int) -> float:
    client = redis.Redis.from_url(url)
    started = time.perf_counter()
    for offset in range(0, n, batch):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(batch, n - offset)):
            pipe.xadd(key, {"n": "evt", "p": PAYLOAD})
        pipe.execute()
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


async def consume_library(url: str, key_name: str, group: str, n: int) -> float:
    client = aioredis.Redis.from_url(url)
    stream = streams.Connection(client).stream(key_name)
    sink = await stream.new_sink(group, start="oldest")
    got = 0
    started = time.perf_counter()
    while got < n:
        batch = await sink.read_batch()
        got += len(batch)
        await sink.ack_many(batch)
    elapsed = time.perf_counter() - started
    await sink.close()
    await client.aclose()
    return elapsed


async def consume_asyncio(url: str, key: str, group: str, n: int, count: int) -> float:
    client = aioredis.Redis.from_url(url)
    await client.xgroup_create(key, group, "0")
    got = 0
    started = time.perf_counter()
    while got < n:
        reply = await client.xreadgroup(group, "c", {key: ">"}, count=count, block=5000)
        for _key, entries in reply.items() if isinstance(reply, dict) else reply:
            ids = [entry_id for entry_id, _fields in entries]
            got += len(ids)
            await client.xack(key, group, *ids)
    elapsed = time.perf_counter() - started
    await client.aclose()
    return elapsed


def consume_sync(url: str, key: str, group: str, n: int, count: int) -> float:
    client = redis.Redis.from_url(url)
    client.xgroup_create(key, group, "0")
    got = 0
    started = time.perf_counter()
    while got < n:
        reply = client.xreadgroup(group, "c", {key: ">"}, count=count, block=5000)
        for _key, entries in reply.items() if isinstance(reply, dict) else reply:
            ids = [entry_id for entry_id, _fields in entries]
            got += len(ids)
            client.xack(key, group, *ids)
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def median_rate(n: int, runs: list[float]) -> float:
    return n / statistics.median(runs)


async def run_bench(url: str, n: int, batch: int, repeat: int) -> None:
    conn_key = streams.Connection(aioredis.Redis.from_url(url)).stream_key
    admin = redis.Redis.from_url(url)
    count = 1000  # the library's default COUNT, used by the hand-written loops too

    producers: dict[str, list[float]] = {
        "library add_many": [],
        "asyncio pipeline": [],
        "sync pipeline": [],
    }
    for i in range(repeat):
        producers["library add_many"].append(await produce_library(url, f"p-lib-{i}", n, batch))
        producers["asyncio pipeline"].append(
            await produce_asyncio(url, conn_key(f"p-aio-{i}"), n, batch)
        )
        producers["sync pipeline"].append(produce_sync(url, conn_key(f"p-sync-{i}"), n, batch))
        admin.flushall()

    await produce_asyncio(url, conn_key("data"), n, batch)
    key = conn_key("data")
    consumers: dict[str, list[float]] = {"library sink": [], "asyncio loop": [], "sync loop": []}
    runners: dict[str, Callable[[int], Awaitable[float] | float]] = {
        "library sink": lambda i: consume_library(url, "data", f"lib-{i}", n),
        "asyncio loop": lambda i: consume_asyncio(url, key, f"aio-{i}", n, count),
        "sync loop": lambda i: consume_sync(url, key, f"sync-{i}", n, count),
    }
    for i in range(repeat):
        for name, runner in runners.items():
            result = runner(i)
            consumers[name].append(await result if asyncio.iscoroutine(result) else result)
    admin.close()

    print(f"{n} events of {len(PAYLOAD)} B, median of {repeat} runs, server {url}")
    print("\nconsumer (read + ack per batch, COUNT 1000)")
    base = median_rate(n, consumers["asyncio loop"])
    for name, runs in consumers.items():
        rate = median_rate(n, runs)
        print(f"  {name:<18} {rate:>10,.0f} ev/s   {rate / base:5.2f}x asyncio loop")
    print(f"\nproducer (pipelines of {batch})")
    base = median_rate(n, producers["asyncio pipeline"])
    for name, runs in producers.items():
        rate = median_rate(n, runs)
        print(f"  {name:<18} {rate:>10,.0f} ev/s   {rate / base:5.2f}x asyncio pipeline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="producer pipeline size")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(Path(tmp)) as server:
        asyncio.run(run_bench(server.url, args.events, args.batch, args.repeat))


if __name__ == "__main__":
    main()
