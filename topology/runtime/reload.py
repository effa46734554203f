"""Hot reload triggers: the config file changing on disk, and SIGHUP.

Both end in :meth:`Reloader.reload`: validate the file exactly as ``validate``
does; an invalid file is logged (every located error) and changes nothing;
a valid one goes to ``Runtime.apply`` — the same call that started the run —
which applies only the diff, or rolls back and keeps the current generation.

What is watched: the config file and the handler modules it names (their
files, as imported), nothing else — a log written beside the config
(``run > run.log``) must not wake the watcher. The watch is installed on their
folders, not the files: editors that save by writing a temporary file and
renaming it over the original replace the inode, which a watch on the file
itself would lose; a filter then drops every change but those of the watched
paths (and of the folders on the way to them). Changes are debounced (~200 ms
of quiet) so a save that touches the file several times is one reload. A
symlinked config whose link is switched (``ln -sfn``, or Kubernetes' ``..data``
swap, where the event names a folder link on the way rather than the file) is
seen through that folder link, and the watch moves to the new target.

A handler module edited on disk (or SIGHUP after such an edit) reloads the
same way: validation re-imports the changed module, the new topology carries
the module's new fingerprint, and the plan restarts the sinks that use it.
watchfiles' own log lines ("1 change detected") are silenced: the reload logs
what it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from topology.runtime.checks import Checker
    from topology.streams import Backoff

__all__ = ["Reloader"]

log = logging.getLogger("topology.reload")
#: watchfiles logs every batch of changes at INFO; our own lines say what matters.
logging.getLogger("watchfiles").setLevel(logging.WARNING)

#: Milliseconds of quiet after a change before reloading.
QUIET_MS = 200


class Reloader:
    def __init__(
        self,
        path: Path,
        runtime: Any,
        *,
        hup: asyncio.Event | None = None,
        watch: bool = True,
        quiet_ms: int = QUIET_MS,
        checker: Checker | None = None,
    ) -> None:
        from topology.runtime.checks import InProcessCheck

        self.path = Path(path).absolute()
        self.runtime = runtime
        #: Validates the file and names the handler files to watch (``topology.runtime.checks``).
        self.checker: Checker = checker if checker is not None else InProcessCheck()
        self.hup = hup
        self.watch = watch
        self.quiet_ms = quiet_ms
        self.reloads = 0  # attempts (valid or not), for tests and status
        #: Outcome of each finished attempt, in order: "applied", "unchanged",
        #: "invalid", "rolled_back" or "error".
        self.results: list[str] = []
        self._finished = asyncio.Condition()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        #: Set once the file watch is installed (a write before that could be missed).
        self.armed = asyncio.Event()
        self._retry_backoff: Backoff | None = None  # reloads Redis's absence rolled back

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.hup is not None:
            self._tasks.append(loop.create_task(self._hup_loop(), name="reload:sighup"))
        if self.watch:
            self._tasks.append(loop.create_task(self._watch_loop(), name="reload:watch"))

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def wait_finished(self, count: int, timeout: float | None = None) -> str:
        """Wait until ``count`` reload attempts have finished; the last one's result.

        For tests and tools: awaiting this instead of sleeping is how a caller
        knows its write was taken into account.
        """

        async def wait() -> str:
            async with self._finished:
                await self._finished.wait_for(lambda: len(self.results) >= count)
                return self.results[count - 1]

        return await asyncio.wait_for(wait(), timeout)

    async def reload(self, reason: str) -> bool:
        """Validate the file and apply it; True when a new generation runs (or nothing changed)."""
        result = "error"
        try:
            result = await self._reload(reason)
        finally:
            async with self._finished:
                self.results.append(result)
                self._finished.notify_all()
        return result in ("applied", "unchanged")

    async def _reload(self, reason: str) -> str:
        async with self._lock:
            self.reloads += 1
            log.info("reload (%s): %s", reason, self.path)
            # check() reads and imports: off the loop, so running actors keep going.
            topology, problems = await asyncio.to_thread(self.checker.check, self.path)
            if topology is None:
                for problem in problems:
                    log.error("reload: %s", problem)
                log.error(
                    "reload rejected: the file is invalid; generation %d keeps running",
                    self.runtime.generation,
                )
                self.runtime.metrics.reloads.labels("invalid").inc()
                return "invalid"
            for problem in problems:
                log.warning("reload: %s", problem)
            try:
                plan = await self.runtime.apply(topology)
            except Exception as exc:
                # Imported only here: a pool's parent reloads without the engine.
                from topology.runtime.runtime import ApplyError

                if not isinstance(exc, ApplyError):
                    raise
                log.error("reload rolled back: %s", exc)
                self._retry_if_transient(exc)
                return "rolled_back"
            self._retry_backoff = None
            if plan.is_empty:
                log.info("reload: no change (generation %d)", self.runtime.generation)
                return "unchanged"
            return "applied"

    def _retry_if_transient(self, exc: Exception) -> None:
        """A reload rolled back because Redis went away (a restart, a failover) is tried
        again with a backoff: the file has not changed, so nothing else would."""
        from topology.streams import Backoff, is_transient

        if exc.__cause__ is None or not is_transient(exc.__cause__):
            return
        self._tasks = [t for t in self._tasks if not t.done()]  # earlier retries, ended
        me = asyncio.current_task()  # a retry that failed again schedules the next one
        if any(t.get_name() == "reload:retry" and t is not me for t in self._tasks):
            return
        self._retry_backoff = self._retry_backoff or Backoff(0.5, 10.0, jitter=True)
        delay = self._retry_backoff.next()
        log.warning("reload: trying again in %.1fs (Redis was unreachable)", delay)
        task = asyncio.get_running_loop().create_task(self._retry(delay), name="reload:retry")
        self._tasks.append(task)

    async def _retry(self, delay: float) -> None:
        from topology.streams import pause

        await pause(delay, self._stop)
        if not self._stop.is_set():
            await self.reload("retry: Redis was unreachable")

    async def _hup_loop(self) -> None:
        assert self.hup is not None
        while not self._stop.is_set():
            await self.hup.wait()
            self.hup.clear()
            await self._safe_reload("SIGHUP")

    async def _safe_reload(self, reason: str) -> None:
        try:
            await self.reload(reason)
        except Exception:
            log.exception("reload failed unexpectedly; the current generation keeps running")

    def _targets(self) -> set[Path]:
        """The config path, every link on the way to the file, the file itself, and
        the files of the handler modules the running topology names."""
        return self._config_chain() | self.checker.code_files(self.runtime.topology)

    def _config_chain(self) -> set[Path]:
        """The config path, every link on the way to the file, and the file itself."""
        targets = {self.path}
        path = self.path
        with contextlib.suppress(OSError, RuntimeError):
            for _ in range(40):  # a chain of links (a loop ends in OSError/RuntimeError)
                if not path.is_symlink():
                    break
                path = (path.parent / path.readlink()).absolute()
                targets.add(path)
            targets.add(self.path.resolve())
        return targets

    async def _watch_loop(self) -> None:
        from watchfiles import awatch

        while not self._stop.is_set():
            targets = self._targets()
            config_chain = self._config_chain()
            folders = sorted({str(t.parent) for t in targets})
            try:
                # yield_on_timeout: an empty set every rust_timeout proves the watch is
                # installed, which is what ``armed`` tells the caller.
                async for changes in awatch(
                    *folders,
                    watch_filter=_only(targets),
                    step=self.quiet_ms,
                    debounce=10 * self.quiet_ms,
                    stop_event=self._stop,
                    recursive=False,
                    rust_timeout=500,
                    yield_on_timeout=True,
                ):
                    if not self.armed.is_set():
                        self.armed.set()
                        log.info("watching %s for changes (SIGHUP reloads too)", self.path)
                    if changes:
                        await self._safe_reload(_reason(changes, targets - config_chain))
                    if self._targets() != targets:  # a symlink now points elsewhere
                        break
            except Exception as exc:
                log.warning("watching %s failed (%s); SIGHUP still reloads", self.path, exc)
                return


def _only(targets: set[Path]) -> Any:
    """A watchfiles filter: changes of ``targets`` and of folders on the way to them."""
    parents = {parent for t in targets for parent in t.parents}

    def keep(_change: Any, raw: str) -> bool:
        path = Path(raw).absolute()
        return path in targets or path in parents

    return keep


def _reason(changes: set[tuple[Any, str]], modules: set[Path]) -> str:
    changed = {Path(p).absolute() for _, p in changes}
    if changed <= modules:
        return "handler code changed: " + ", ".join(sorted(p.name for p in changed))
    return "file changed"
