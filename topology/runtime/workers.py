"""Worker heartbeats: who runs this deployment right now.

Each ``run`` process writes its entry in the hash :meth:`EngineKeys.workers`
(``worker id -> JSON``) every ``interval`` seconds. Beats are stamped with the
Redis server's clock (``TIME``), not the worker's, so workers on machines with
skewed clocks still agree on who is alive. An entry is stale after 3 missed
beats; a worker on this host whose pid is gone is dead at once (a restart after
``kill -9`` need not wait for its ghost to go stale). ``status`` shows the
entries, and sources use :func:`live_workers` to tell a fresh start of the
deployment from a worker joining others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from topology.runtime.keys import EngineKeys
from topology.streams import STALE_AFTER, after_failure, pause

__all__ = [
    "MISSED_BEATS",
    "ConsumerOwners",
    "GenerationLog",
    "WorkerRegistry",
    "live_workers",
    "new_worker_id",
    "read_workers",
    "server_time",
]

log = logging.getLogger(__name__)

#: An entry is stale after this many missed beats.
MISSED_BEATS = 3
#: Stale entries older than this many seconds are removed by whoever reads them.
FORGET_AFTER = 3600.0


def new_worker_id() -> str:
    """``host-pid-random``: unique per process start, readable in ``status``."""
    host = socket.gethostname().split(".", 1)[0] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


async def server_time(client: Any) -> float:
    """The Redis server's clock (``TIME``), the one clock every worker shares."""
    seconds, micros = await client.time()
    return float(seconds) + float(micros) / 1e6


def _pid_space() -> str:
    """Where pids mean the same thing: this boot of this kernel, this pid namespace.

    Hostnames are not enough: two containers may share one, each with its own
    pids, and a pid checked in the wrong namespace would declare a live worker dead.
    """
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return "/".join(parts)


_PID_SPACE = _pid_space()


def _pid_gone(entry: dict[str, Any]) -> bool:
    """True when ``entry`` is a process of this host (pid namespace) that no longer exists."""
    if entry.get("pid_space") != _PID_SPACE:
        return False
    pid = entry.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def read_workers(client: Any, deployment: str) -> dict[str, dict[str, Any]]:
    """Every entry of the registry, each with ``age`` (seconds since its beat) and ``live``."""
    key = EngineKeys(deployment).workers()
    raw = await client.hgetall(key)
    now = await server_time(client)
    out: dict[str, dict[str, Any]] = {}
    forget: list[bytes | str] = []
    for field, value in raw.items():
        wid = field.decode() if isinstance(field, bytes) else str(field)
        try:
            entry = json.loads(value)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except ValueError:
            forget.append(field)
            continue
        beat = float(entry.get("beat", 0))
        interval = float(entry.get("interval", 2.0))
        entry["age"] = max(0.0, now - beat)
        entry["live"] = entry["age"] <= MISSED_BEATS * interval and not _pid_gone(entry)
        if not entry["live"] and entry["age"] > FORGET_AFTER:
            forget.append(field)
            continue
        out[wid] = entry
    if forget:
        await client.hdel(key, *forget)
    return out


async def live_workers(client: Any, deployment: str) -> dict[str, dict[str, Any]]:
    """The registry entries that beat recently."""
    return {k: v for k, v in (await read_workers(client, deployment)).items() if v["live"]}


class GenerationLog:
    """When this worker's last few generations began, for its heartbeat.

    A reload shows in the registry as a new ``generation``; the times let a
    dashboard opened afterwards still list the reloads (this machine's clock:
    for people to read, not to order workers by).
    """

    def __init__(self, keep: int = 5) -> None:
        self._entries: list[dict[str, Any]] = []
        self._keep = keep

    def __call__(self, generation: int) -> list[dict[str, Any]]:
        """The log, newest first, after noting ``generation`` if it is new."""
        if generation and (not self._entries or self._entries[0]["generation"] != generation):
            self._entries.insert(0, {"generation": generation, "at": time.time()})
            del self._entries[self._keep :]
        return list(self._entries)


class WorkerRegistry:
    """This process's heartbeat in the registry.

    ``info_fn`` is called at every beat for what the worker wants to publish
    (version, generation, config, actors...); pid, host, started, interval and
    beat are added here.
    """

    def __init__(
        self, client: Any, deployment: str, worker_id: str, *, interval: float = 2.0
    ) -> None:
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be > 0, got {interval}")
        self.client = client
        self.deployment = deployment
        self.worker_id = worker_id
        self.interval = interval
        self.key = EngineKeys(deployment).workers()
        #: Server time of the first beat: workers on skewed clocks still agree who came first.
        self.started: float | None = None
        self._info_fn: Callable[[], dict[str, Any]] = dict
        self._task: asyncio.Task[None] | None = None
        self._first_beat = asyncio.Event()
        self._stopping = asyncio.Event()

    async def beat(self) -> None:
        """Write this worker's entry now (the loop calls it every ``interval``)."""
        entry: dict[str, Any] = dict(self._info_fn())
        now = await server_time(self.client)
        if self.started is None:
            self.started = now
        entry.update(
            pid=os.getpid(),
            host=socket.gethostname(),
            pid_space=_PID_SPACE,
            started=self.started,
            interval=self.interval,
            beat=now,
        )
        await self.client.hset(self.key, self.worker_id, json.dumps(entry, default=str))

    def start(self, info_fn: Callable[[], dict[str, Any]]) -> None:
        """Start beating in a task; the first beat is written at once."""
        self._info_fn = info_fn
        if self._task is None:
            self._stopping.clear()
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name=f"heartbeat:{self.worker_id}"
            )

    async def wait_registered(self) -> None:
        """Return once the first beat has been written (sources check it at start)."""
        await self._first_beat.wait()

    async def _loop(self) -> None:
        failing = False
        while not self._stopping.is_set():
            try:
                await self.beat()
                if failing:
                    log.info("heartbeat restored")
                failing = False
                self._first_beat.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: keep trying, say it once
                await after_failure(self.client, exc)
                if not failing:
                    log.warning("heartbeat failed: %s", exc)
                failing = True
            await pause(self.interval, self._stopping)

    async def stop(self) -> None:
        """Stop beating and remove this worker's entry (a clean exit is not a crash)."""
        task, self._task = self._task, None
        if task is not None:
            # The event ends the loop even when redis-py swallows the cancellation of
            # a beat in flight; the cancellation still cuts short a beat that hangs.
            self._stopping.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.client.hdel(self.key, self.worker_id)
        except Exception as exc:  # Redis gone at shutdown: the entry goes stale by itself
            log.debug("could not remove heartbeat entry: %s", exc)

    async def live(self) -> dict[str, dict[str, Any]]:
        """Live workers of the deployment (this one included once it has beaten)."""
        return await live_workers(self.client, self.deployment)


class ConsumerOwners:
    """Which worker owns a consumer of a sink's group, and whether it still lives.

    The engine names its consumers ``<worker id>/<actor>-<random>``, so a claim
    pass can ask the heartbeats before removing a consumer from a group: only
    the consumer of a worker whose entry is there and stale (or whose pid is
    gone) is dead. A consumer of a worker the registry does not know (forgotten,
    or named by something else) is dead only once idle for
    :data:`~topology.streams.STALE_AFTER`.
    """

    #: How long one read of the registry answers for (claim passes of many sinks).
    CACHE = 1.0

    def __init__(self, client: Any, deployment: str, worker_id: str) -> None:
        self.client = client
        self.deployment = deployment
        self.worker_id = worker_id
        self._entries: dict[str, dict[str, Any]] = {}
        self._read_at = -self.CACHE

    def consumer_name(self, actor: str) -> str:
        return f"{self.worker_id}/{actor}-{secrets.token_hex(3)}"

    async def alive(self, consumer: str, idle_ms: int) -> bool:
        """The streams' ``consumer_alive`` hook."""
        worker, slash, _ = consumer.partition("/")
        if slash and worker == self.worker_id:
            return True
        now = time.monotonic()
        if now - self._read_at >= self.CACHE:
            self._entries = await read_workers(self.client, self.deployment)
            self._read_at = now
        entry = self._entries.get(worker) if slash else None
        if entry is None:
            return idle_ms <= STALE_AFTER * 1000
        return bool(entry["live"])
