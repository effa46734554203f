"""Fixtures and helpers for the streams tests (real servers, see tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from topology import streams


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
async def conn(redis_url: str, request: pytest.FixtureRequest) -> AsyncIterator[streams.Connection]:
    """A Connection on the flushed session server, over RESP2 and RESP3 (reply shapes differ)."""
    client = aioredis.Redis.from_url(redis_url, protocol=request.param)
    yield streams.Connection(client)
    await client.aclose()


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
