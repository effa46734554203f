"""Deployments: a config published in Redis (``apply``) and the workers that follow it.

``ponos-topology apply CONFIG`` stores the config's YAML text in the hash
:meth:`EngineKeys.config` of the deployment its ``name`` names, with a version
number, the source file name, a sha256 of the text, its signature and the server time, and
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

Redis is not trusted to say what runs: whoever can write to it can write a
config. The follower resolves callables only to the operator's modules
(:class:`topology.callables.Origins`), and, given a deploy key, runs only
versions signed with it (:mod:`topology.runtime.signing`). The signature covers
the version number, so ``publish`` picks the number, signs, and the script
only checks it is still the next one. Each version is also kept under
:meth:`EngineKeys.config_version` (the last :data:`HISTORY`) for ``history``
and ``rollback``, which publishes an old text again as a new version.
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

from topology.callables import Origins
from topology.config.model import Topology
from topology.runtime.keys import EngineKeys
from topology.runtime.signing import DeployKey
from topology.streams import (
    DEFAULT_TIMEOUT,
    Backoff,
    after_failure,
    missed,
    pause,
    socket_timeout_of,
)

__all__ = [
    "HISTORY",
    "POLL_INTERVAL",
    "DeploymentFollower",
    "Published",
    "history",
    "publish",
    "read_published",
    "read_version",
    "sha256_of",
]

log = logging.getLogger("topology.deployment")

#: Seconds between two version polls (the safety net under pub/sub).
POLL_INTERVAL = 2.0
#: Longest wait before re-subscribing after the subscription failed.
MAX_RESUBSCRIBE_DELAY = 5.0
#: Published versions kept for ``history`` and ``rollback`` (older ones are deleted).
HISTORY = 50
#: Times ``publish`` signs again when another ``apply`` took the version it signed for.
_PUBLISH_ATTEMPTS = 20

# KEYS[1] current config hash, KEYS[2] the new version's hash, KEYS[3] the hash of
# the version that falls out of the history. ARGV: version (the one signed for),
# text, source, sha256, signature, note, channel.
# The signature covers the version number, so the number is chosen by the caller
# and the script only checks it is still the next one: {version, 1} when
# published, {current, 0} when another publisher took it first (sign again).
PUBLISH_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local version = tonumber(ARGV[1])
if version ~= current + 1 then
  return {current, 0}
end
local now = redis.call('TIME')
local at = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
local fields = {'version', ARGV[1], 'text', ARGV[2], 'source', ARGV[3], 'sha256', ARGV[4],
  'signature', ARGV[5], 'note', ARGV[6], 'applied_at', at}
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('DEL', KEYS[3])
redis.call('PUBLISH', ARGV[7], version)
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
    signature: str = ""  # hex HMAC-SHA256 (topology.runtime.signing); "" when unsigned
    note: str = ""  # e.g. "rollback to 3"

    def verified_by(self, key: DeployKey) -> bool:
        return bool(self.signature) and key.verifies(
            self.deployment, self.version, self.text, self.signature
        )


def _s(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _unchanged(current: Published | None, text: str, key: DeployKey | None) -> bool:
    """True when publishing ``text`` would change nothing a worker can see."""
    if current is None or current.sha256 != sha256_of(text):
        return False
    # Same text: a new version only to sign what is unsigned (or signed with another key);
    # without a key, never an unsigned copy of a signed version (keyed workers would refuse it).
    return current.verified_by(key) if key is not None else True


async def publish(
    client: Any,
    deployment: str,
    text: str,
    *,
    source: str,
    key: DeployKey | None = None,
    note: str = "",
) -> tuple[int, bool]:
    """Publish ``text`` as ``deployment``'s config: ``(version, changed)``.

    ``changed`` is False when the text is the one already published (its
    version is returned and nothing is announced), so re-running ``apply`` in a
    deploy script does not make every worker recompute a plan. With ``key`` the
    version is signed; the last :data:`HISTORY` versions are kept.
    """
    keys = EngineKeys(deployment)
    for _ in range(_PUBLISH_ATTEMPTS):
        current = await read_published(client, deployment)
        if _unchanged(current, text, key):
            assert current is not None
            return current.version, False
        version = (current.version if current is not None else 0) + 1
        signature = key.sign(deployment, version, text) if key is not None else ""
        got, published = await client.eval(
            PUBLISH_SCRIPT,
            3,
            keys.config(),
            keys.config_version(version),
            keys.config_version(version - HISTORY),
            version,
            text,
            Path(source).name,
            sha256_of(text),
            signature,
            note,
            keys.config_channel(),
        )
        if int(published):
            return int(got), True
    raise RuntimeError(f"deployment {deployment}: other publishers kept taking the next version")


def _published(deployment: str, raw: dict[Any, Any]) -> Published | None:
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
        signature=_s(fields.get("signature", b"")),
        note=_s(fields.get("note", b"")),
    )


async def read_published(client: Any, deployment: str) -> Published | None:
    """The deployment's current published config, or None before the first ``apply``."""
    return _published(deployment, await client.hgetall(EngineKeys(deployment).config()))


async def read_version(client: Any, deployment: str, version: int) -> Published | None:
    """Version ``version`` as it was published, or None when it is not in the history."""
    raw = await client.hgetall(EngineKeys(deployment).config_version(version))
    found = _published(deployment, raw)
    return found if found is not None and found.version == version else None


async def history(client: Any, deployment: str) -> list[Published]:
    """The versions kept, oldest first (their ``text`` is empty: listing them need not read it)."""
    keys = EngineKeys(deployment)
    latest = await client.hget(keys.config(), "version")
    if latest is None:
        return []
    newest = int(_s(latest))
    names = ("version", "source", "sha256", "applied_at", "signature", "note")
    found = []
    for version in range(max(1, newest - HISTORY + 1), newest + 1):
        values = await client.hmget(keys.config_version(version), *names)
        if values[0] is None:
            continue
        fields = dict(zip(names, values, strict=True))
        found.append(_published(deployment, {**fields, "text": b""}))
    kept = [entry for entry in found if entry is not None]
    if not kept or kept[-1].version != newest:  # published before versions were kept
        current = await read_published(client, deployment)
        if current is not None:
            kept.append(current)
    return kept


class DeploymentFollower:
    """Keeps one worker at its deployment's latest published config.

    :meth:`first` waits for the first valid version (a worker may start before
    anything was applied); :meth:`start` then follows every later version in
    the background, each through ``runtime.apply``. A version that does not
    validate here (a handler this worker cannot import, a ``${VAR}`` missing
    from its environment), or that ``Runtime.apply`` rolls back, is logged and
    skipped: the running generation stays, and the next version is tried as
    usual. SIGHUP makes the worker try the current version again.

    Callables resolve only to modules under ``handlers_dir`` or the prefixes of
    ``allow_modules``. With ``key``, a version whose signature does not verify
    (unsigned, tampered, another key's, or a signed version older than the one
    running, replayed) is refused before its text is even parsed, and recorded
    in :attr:`rejected` for the heartbeat.
    """

    def __init__(
        self,
        client: Any,
        deployment: str,
        *,
        handlers_dir: Path,
        allow_modules: tuple[str, ...] = (),
        key: DeployKey | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.client = client
        self.deployment = deployment
        self.handlers_dir = Path(handlers_dir).absolute()
        self.origins = Origins(folder=self.handlers_dir, allow=allow_modules)
        self.key = key
        #: The last version refused here, ``{"version", "reason"}``, until a later one runs.
        self.rejected: dict[str, Any] | None = None
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
        self._metrics: Any = None  # the runtime's, once following (counts refused versions)

    # -- reading and validating ------------------------------------------------------

    def _refusal(self, published: Published) -> str | None:
        """Why ``published`` may not run here although it may be valid (its signature)."""
        if self.key is None:
            return None
        if not published.signature:
            return "it is unsigned, and this worker runs only signed versions"
        if not published.verified_by(self.key):
            return "its signature does not verify (altered, or signed with another key)"
        if published.version < self.version:
            return f"it is older than version {self.version} running here (replayed?)"
        return None

    def _reject(self, published: Published, reason: str) -> None:
        log.error(
            "deployment %s version %d refused: %s; %s",
            self.deployment,
            published.version,
            reason,
            self._keeps(),
        )
        self.rejected = {"version": published.version, "reason": reason}
        if self._metrics is not None:
            self._metrics.reloads.labels("rejected").inc()

    def _validate(self, published: Published) -> Topology | None:
        """The model of ``published`` as this worker sees it, or None (errors logged)."""
        from topology.config import check_text

        reason = self._refusal(published)
        if reason is not None:
            self._reject(published, reason)
            return None
        # Named after the applied file but located in --handlers-dir: its folder
        # is where the config's handler modules import from.
        path = self.handlers_dir / Path(published.source).name
        topology, problems = check_text(published.text, path=path, origins=self.origins)
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
            first = next((p for p in problems if p.is_error), None)
            self.rejected = {
                "version": published.version,
                "reason": f"invalid here: {first.path}: {first.message}" if first else "invalid",
            }
            if self._metrics is not None:
                self._metrics.reloads.labels("invalid").inc()
            return None
        for problem in problems:
            log.warning("%s: %s", where, problem)
        return topology

    def _running(self, published: Published) -> None:
        """``published`` runs here now; a refusal of an older version is history."""
        self.version, self.sha256 = published.version, published.sha256
        if self.rejected is not None and self.rejected["version"] < self.version:
            self.rejected = None

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
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("deployment %s: subscription lost: %r", self.deployment, exc)
                await pause(backoff.next(), self._stopping)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _listen(self, pubsub: Any) -> None:
        """Wake on every announcement until the subscription's connection goes quiet.

        A connection that stopped forwarding looks like a quiet channel. After a
        ``timeout`` without a word a PING goes out; no answer within another
        ``timeout`` drops the connection (the caller subscribes again on a new
        one; the poll covers the gap meanwhile).
        """
        loop = asyncio.get_running_loop()
        timeout = socket_timeout_of(self.client) or DEFAULT_TIMEOUT
        heard = pinged = loop.time()
        while not self._stopping.is_set():
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=min(self.poll_interval, timeout)
            )
            now = loop.time()
            if message is not None:
                heard = now
                if message.get("type") in ("message", b"message"):
                    self.wake()
            if pinged > heard and now - pinged > timeout:
                raise missed(pubsub.connection, timeout, "the deployment's subscription")
            if pinged <= heard and now - heard > timeout:
                await pubsub.ping()
                pinged = now

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
                await after_failure(self.client, exc)
                log.warning("deployment %s: cannot read the config: %r", self.deployment, exc)
                found = None
            if found is not None:
                published, topology = found
                self._running(published)
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
        from topology.runtime.runtime import ApplyError

        backoff = Backoff(0.1, MAX_RESUBSCRIBE_DELAY)
        while not self._stopping.is_set():
            await self._wait_wake()
            try:
                found = await self._next()
            except Exception as exc:
                await after_failure(self.client, exc)
                log.warning("deployment %s: cannot read the config: %r", self.deployment, exc)
                # Look again soon: the announcement that woke us is not sent twice.
                await pause(backoff.next(), self._stopping)
                self.wake()
                continue
            backoff.reset()
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
            self._running(published)
            log.info("deployment %s: running version %d", self.deployment, self.version)

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
