"""Helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> None:
    """Poll until ``predicate`` (sync, or returning an awaitable) holds; fail at the deadline.

    Only for state no event of ours can signal: Redis as another task or process
    left it, counters of actors running in other tasks. Everything else is awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            suffix = f": {what}" if what else ""
            raise AssertionError(f"condition not reached in {timeout}s{suffix}")
        await asyncio.sleep(0.01)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll another process's effect (Redis state, a file it writes), with a deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # another process: no event of ours to await


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

    await wait_for(check, what=f"{n} client(s) blocked in {command}")


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (dead, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
