"""Fixtures and helpers for the streams tests (real servers, see tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from topology import streams


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
async def conn(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[streams.Connection]:
    """A Connection on the flushed session server, over RESP2 and RESP3 (reply shapes differ)."""
    client = aioredis.Redis.from_url(redis_url, protocol=request.param)
    yield streams.Connection(client)
    await client.aclose()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll external server state (another process, a server-side timer) until true.

    Only for state no event of ours can signal; everything else is awaited.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def blocked_clients(r: aioredis.Redis, command: str = "xreadgroup") -> set[str]:
    """Ids of the clients blocked in ``command`` right now (server-side state)."""
    clients = await r.client_list()
    return {c["id"] for c in clients if c.get("cmd") == command and "b" in c.get("flags", "")}


async def blocked_reads(r: aioredis.Redis, command: str = "xreadgroup") -> int:
    """How many clients are blocked in ``command`` right now."""
    return len(await blocked_clients(r, command))


async def wait_blocked(r: aioredis.Redis, n: int = 1, command: str = "xreadgroup") -> None:
    """Wait until ``n`` clients are blocked in ``command``: the read really is in flight."""

    async def check() -> bool:
        return await blocked_reads(r, command) >= n

    await eventually(check, what=f"{n} client(s) blocked in {command}")


async def read_n(consumer: streams.Sink | streams.Reader, n: int, timeout: float = 10.0) -> list:
    """Read exactly ``n`` events (more would be a failure of the caller's assertion)."""
    got: list = []

    async def loop() -> None:
        while len(got) < n:
            batch = await consumer.read_batch(n - len(got))
            if not batch:
                return
            got.extend(batch)

    await asyncio.wait_for(loop(), timeout)
    return got
