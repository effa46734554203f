"""Helpers shared by the test modules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
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
