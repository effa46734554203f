"""One Redis poll per interval, however many pages watch.

Every open page (server-sent events) and every ``/api/snapshot`` request reads
the hub's latest snapshot; the hub polls Redis on its own schedule while at
least one page is open, and otherwise only when a request finds the latest
snapshot older than the interval. Concurrent requests share the poll in
flight, so ten tabs and a script cost what one tab costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from topology.redact import redact_text

__all__ = ["Hub"]

log = logging.getLogger("topology.dashboard")


class Hub:
    """The latest snapshot, refreshed by one poller for all viewers."""

    def __init__(self, poll: Callable[[], Awaitable[dict[str, Any]]], interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"poll interval must be > 0, got {interval}")
        self._poll_fn = poll
        self.interval = interval
        #: Polls made so far (the test of "one poll per interval" reads it).
        self.polls = 0
        self.seq = 0
        self.latest: dict[str, Any] | None = None
        #: ``latest`` as the JSON text every viewer is sent (redacted once, here).
        self.latest_json = ""
        self._latest_at = -float("inf")
        self._inflight: asyncio.Future[None] | None = None
        self._changed = asyncio.Condition()
        self._viewers = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def viewers(self) -> int:
        return self._viewers

    @property
    def polling(self) -> bool:
        """True while the scheduled poller runs (pages are open)."""
        return self._task is not None

    async def refresh(self) -> None:
        """Poll now, or join the poll already under way."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._poll())
        inflight = self._inflight
        await asyncio.shield(inflight)

    async def _poll(self) -> None:
        try:
            snapshot = await self._poll_fn()
            self.polls += 1
            self.seq += 1
            snapshot["seq"] = self.seq
            self.latest = snapshot
            self.latest_json = redact_text(json.dumps(snapshot, default=str))
            self._latest_at = time.monotonic()
            async with self._changed:
                self._changed.notify_all()
        finally:
            self._inflight = None

    async def current(self) -> str:
        """The latest snapshot as JSON, polled first when it is older than the interval."""
        if time.monotonic() - self._latest_at >= self.interval:
            await self.refresh()
        return self.latest_json

    async def subscribe(self) -> AsyncGenerator[str, None]:
        """Each new snapshot as JSON (the latest one first) until the hub closes."""
        self._viewers += 1
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="dashboard:poll")
        try:
            seen = 0
            while not self._closed:
                async with self._changed:
                    await self._changed.wait_for(self._newer_than(seen))
                if self._closed:
                    return
                seen = self.seq
                yield self.latest_json
        finally:
            self._viewers -= 1

    def _newer_than(self, seen: int) -> Callable[[], bool]:
        return lambda: self.seq > seen or self._closed

    async def _loop(self) -> None:
        try:
            while self._viewers > 0 and not self._closed:
                started = time.monotonic()
                try:
                    await self.refresh()
                except Exception:  # a bug in a poll must not end the page's updates
                    log.exception("dashboard poll failed")
                # The poll period (a schedule, not a synchronisation).
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            self._task = None

    async def close(self) -> None:
        """End every subscription (their pages see the stream end) and the poller."""
        self._closed = True
        async with self._changed:
            self._changed.notify_all()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
