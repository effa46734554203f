"""Deployments: a config published in Redis (``apply``) and the workers that follow it.

``ponos-topology apply CONFIG`` stores the config's YAML text in the hash
:meth:`EngineKeys.config` of the deployment its ``name`` names, with a version
number, the source file name, a sha256 of the text and the server time, and
announces the version on :meth:`EngineKeys.config_channel` — all in one Lua
script, so a worker never sees the text of one version with the number of
another, and a version is announced only once it can be read.

``ponos-topology run --deployment NAME`` workers hold a
:class:`DeploymentFollower`: it validates each published version exactly as
``validate`` would (on the worker, against the worker's handler modules and
environment) and hands it to ``Runtime.apply`` — the same call a file reload
makes. The pub/sub message only wakes the follower up; the version is also
polled every few seconds, because a message published while the subscriber
was reconnecting is lost for good.

The text is published as written: ``${VAR}`` substitutions resolve on each
worker, in its own environment, as if it had read the file itself, and no
secret the publisher's environment holds ends up in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from topology.config.model import Topology
from topology.runtime.keys import EngineKeys
from topology.streams import Backoff, pause

__all__ = [
    "POLL_INTERVAL",
    "DeploymentFollower",
    "Published",
    "publish",
    "read_published",
    "sha256_of",
]

log = logging.getLogger("topology.deployment")

#: Seconds between two version polls (the safety net under pub/sub).
POLL_INTERVAL = 2.0
#: Longest wait before re-subscribing after the subscription failed.
MAX_RESUBSCRIBE_DELAY = 5.0

# KEYS[1] config hash; ARGV: text, source, sha256, channel.
# Returns {version, changed}: publishing the text already current is a no-op
# (no new version, no announcement), so re-running ``apply`` in a deploy script
# does not make every worker recompute a plan.
PUBLISH_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'sha256')
if current == ARGV[3] then
  return {tonumber(redis.call('HGET', KEYS[1], 'version') or '0'), 0}
end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'text', ARGV[1], 'source', ARGV[2], 'sha256', ARGV[3],
  'applied_at', now[1] .. '.' .. string.format('%06d', tonumber(now[2])))
redis.call('PUBLISH', ARGV[4], version)
return {version, 1}
"""


def sha256_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Published:
    """One published version of a deployment's config."""

    deployment: str
    version: int
    text: str
    source: str  # the file name it was applied from (no folder: workers have their own)
    sha256: str
    applied_at: float  # Redis server time, seconds


def _s(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


async def publish(client: Any, deployment: str, text: str, *, source: str) -> tuple[int, bool]:
    """Publish ``text`` as ``deployment``'s config: ``(version, changed)``.

    ``changed`` is False when the text is the one already published (its
    version is returned and nothing is announced).
    """
    keys = EngineKeys(deployment)
    version, changed = await client.eval(
        PUBLISH_SCRIPT,
        1,
        keys.config(),
        text,
        Path(source).name,
        sha256_of(text),
        keys.config_channel(),
    )
    return int(version), bool(int(changed))


async def read_published(client: Any, deployment: str) -> Published | None:
    """The deployment's current published config, or None before the first ``apply``."""
    raw = await client.hgetall(EngineKeys(deployment).config())
    fields = {_s(k): v for k, v in raw.items()}
    if "text" not in fields or "version" not in fields:
        return None
    return Published(
        deployment=deployment,
        version=int(_s(fields["version"])),
        text=_s(fields["text"]),
        source=_s(fields.get("source", b"config.yaml")) or "config.yaml",
        sha256=_s(fields.get("sha256", b"")),
        applied_at=float(_s(fields.get("applied_at", b"0")) or 0),
    )


class DeploymentFollower:
    """Keeps one worker at its deployment's latest published config.

    :meth:`first` waits for the first valid version (a worker may start before
    anything was applied); :meth:`start` then follows every later version in
    the background, each through ``runtime.apply``. A version that does not
    validate here (a handler this worker cannot import, a ``${VAR}`` missing
    from its environment), or that ``Runtime.apply`` rolls back, is logged and
    skipped: the running generation stays, and the next version is tried as
    usual. SIGHUP makes the worker try the current version again.
    """

    def __init__(
        self,
        client: Any,
        deployment: str,
        *,
        handlers_dir: Path,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.client = client
        self.deployment = deployment
        self.handlers_dir = Path(handlers_dir).absolute()
        self.poll_interval = poll_interval
        self.keys = EngineKeys(deployment)
        #: The version running here (0 before the first).
        self.version = 0
        self.sha256 = ""
        #: (version, sha256) last looked at, valid or not: not validated twice.
        self._seen: tuple[int, str] = (0, "")
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._metrics: Any = None  # the runtime's, once following (counts invalid versions)

    # -- reading and validating ------------------------------------------------------

    def _validate(self, published: Published) -> Topology | None:
        """The model of ``published`` as this worker sees it, or None (errors logged)."""
        from topology.config import check_text

        # Named after the applied file but located in --handlers-dir: its folder
        # is where the config's handler modules import from.
        path = self.handlers_dir / Path(published.source).name
        topology, problems = check_text(published.text, path=path)
        where = f"deployment {self.deployment} version {published.version}"
        if topology is not None and topology.name != self.deployment:
            log.error(
                "%s: the config is named %r, not %r; ignored",
                where,
                topology.name,
                self.deployment,
            )
            return None
        if topology is None:
            for problem in problems:
                log.error("%s: %s", where, problem)
            log.error("%s is invalid here; %s", where, self._keeps())
            if self._metrics is not None:
                self._metrics.reloads.labels("invalid").inc()
            return None
        for problem in problems:
            log.warning("%s: %s", where, problem)
        return topology

    def _keeps(self) -> str:
        if self.version:
            return f"version {self.version} keeps running"
        return "waiting for a valid version"

    async def _next(self) -> tuple[Published, Topology] | None:
        """The published version if it is new here and valid; marks it seen either way."""
        # The poll runs every few seconds on every worker: two short fields, not the text.
        version, digest = await self.client.hmget(self.keys.config(), "version", "sha256")
        if version is None or (int(version), _s(digest or b"")) == self._seen:
            return None
        published = await read_published(self.client, self.deployment)
        if published is None:
            return None
        mark = (published.version, published.sha256)
        if mark == self._seen:
            return None
        if published.version < self._seen[0]:
            log.warning(
                "deployment %s: version went back from %d to %d (its key was recreated)",
                self.deployment,
                self._seen[0],
                published.version,
            )
        self._seen = mark
        topology = self._validate(published)
        return None if topology is None else (published, topology)

    # -- waking up ---------------------------------------------------------------------

    def wake(self) -> None:
        """Look at the published version now (pub/sub message, SIGHUP)."""
        self._wake.set()

    async def _wait_wake(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.poll_interval)
        self._wake.clear()

    async def _subscribe_loop(self) -> None:
        """Wake on every announcement; re-subscribe (with backoff) when the connection drops."""
        channel = self.keys.config_channel()
        backoff = Backoff(0.1, MAX_RESUBSCRIBE_DELAY)
        while not self._stopping.is_set():
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(channel)
                backoff.reset()
                self.wake()  # anything published while unsubscribed
                while not self._stopping.is_set():
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.poll_interval
                    )
                    if message is not None:
                        self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("deployment %s: subscription lost: %r", self.deployment, exc)
                await pause(backoff.next(), self._stopping)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    # -- the two phases ------------------------------------------------------------------

    async def first(self, stop: asyncio.Event) -> Topology | None:
        """Wait for the first valid published version; None when ``stop`` is set first."""
        if not any(t.get_name() == "deployment:subscribe" for t in self._tasks):
            self._spawn(self._subscribe_loop(), "deployment:subscribe")
        told = False
        while not stop.is_set():
            try:
                found = await self._next()
            except Exception as exc:  # Redis away for a moment: keep waiting
                log.warning("deployment %s: cannot read the config: %r", self.deployment, exc)
                found = None
            if found is not None:
                published, topology = found
                self.version, self.sha256 = published.version, published.sha256
                log.info(
                    "deployment %s version %d (%s, sha256 %s)",
                    self.deployment,
                    published.version,
                    published.source,
                    published.sha256[:12],
                )
                return topology
            if not told:
                log.info(
                    "waiting for a config: ponos-topology apply CONFIG (deployment %s)",
                    self.deployment,
                )
                told = True
            waker = asyncio.ensure_future(self._wait_wake())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waker, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (waker, stopper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return None

    def start(self, runtime: Any, *, hup: asyncio.Event | None = None) -> None:
        """Follow later versions in the background, applying each with ``runtime.apply``."""
        if not any(t.get_name() == "deployment:subscribe" for t in self._tasks):
            self._spawn(self._subscribe_loop(), "deployment:subscribe")
        self._metrics = runtime.metrics
        self._spawn(self._follow_loop(runtime.apply), "deployment:follow")
        if hup is not None:
            self._spawn(self._hup_loop(hup), "deployment:sighup")

    async def _hup_loop(self, hup: asyncio.Event) -> None:
        """SIGHUP: validate and apply the current version again, even if already seen.

        The operator's retry for a version that failed here (a handler module
        fixed on this machine since); an unchanged one is an empty plan.
        """
        while not self._stopping.is_set():
            await hup.wait()
            hup.clear()
            self._seen = (0, "")
            self.wake()

    async def _follow_loop(self, apply: Callable[[Topology], Any]) -> None:
        from topology.runtime.supervisor import ApplyError

        while not self._stopping.is_set():
            await self._wait_wake()
            try:
                found = await self._next()
            except Exception as exc:
                log.warning("deployment %s: cannot read the config: %r", self.deployment, exc)
                continue
            if found is None:
                continue
            published, topology = found
            log.info(
                "deployment %s: version %d published (sha256 %s); reconciling",
                self.deployment,
                published.version,
                published.sha256[:12],
            )
            try:
                await apply(topology)
            except ApplyError as exc:
                log.error(
                    "deployment %s version %d rolled back: %s",
                    self.deployment,
                    published.version,
                    exc,
                )
                continue
            except Exception:
                log.exception(
                    "deployment %s: apply failed unexpectedly; %s", self.deployment, self._keeps()
                )
                continue
            self.version, self.sha256 = published.version, published.sha256
            log.info("deployment %s: running version %d", self.deployment, self.version)

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
