"""Helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import contextlib
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


def _run_delay(schedstat: Path) -> int:
    """Nanoseconds a task spent runnable but waiting for a CPU (0 when unreadable)."""
    try:
        return int(schedstat.read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _children(pid: int) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_wait() -> float:
    """Seconds the calling thread and this process's children (the test servers) have
    spent waiting for a CPU so far (Linux schedstat; 0 where it is not available)."""
    total = _run_delay(Path("/proc/thread-self/schedstat"))
    for child in _children(os.getpid()):
        with contextlib.suppress(OSError):
            total += sum(
                _run_delay(task / "schedstat") for task in Path(f"/proc/{child}/task").iterdir()
            )
    return total / 1e9


class LatencyPromise:
    """A latency the product promises (``add_stream`` within 100 ms...), timed from creation.

    The bound stays the promise. The tolerance on a loaded machine: time the event
    loop's thread and the test servers spent runnable but waiting for a CPU (another
    process had it) is not counted, since no code of ours can act while it is not
    running. Waiting out a timeout, a backoff or a block is sleeping, not waiting for
    a CPU, so it still fails the check.
    """

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self._waited = cpu_wait()
        self._started = time.monotonic()

    def check(self, what: str) -> None:
        elapsed = time.monotonic() - self._started
        waited = cpu_wait() - self._waited
        assert elapsed - waited < self.bound, (
            f"{what} took {elapsed * 1000:.0f} ms, {waited * 1000:.0f} ms of it waiting for a "
            f"CPU: promised within {self.bound * 1000:.0f} ms"
        )
