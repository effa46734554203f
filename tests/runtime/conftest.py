"""Fixtures of the actor tests (real servers: see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis.asyncio as aioredis

from topology.streams import Connection


@pytest.fixture
async def conn(r: aioredis.Redis) -> AsyncIterator[Connection]:
    yield Connection(r)


@pytest.fixture(params=["loop-path", "direct-path"])
def executor(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Each actor behaviour on both paths: a sync handler in an executor (the loop
    commits; several threads, so only the actor's lock serialises chunks) and on the
    actor's own thread (that thread commits: the direct path)."""
    if request.param == "direct-path":
        yield None
        return
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown(wait=False)
