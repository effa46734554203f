"""Helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> None:
    """Poll until ``predicate`` (sync or async) holds; fail the test at the deadline.

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
