"""``run --workers N``: one parent process supervising N workers of one topology.

One Python process runs every actor on one core (one GIL). ``--workers`` starts
N copies of ``run`` as child processes instead, as gunicorn, Celery or dramatiq
do; each child is an ordinary worker (it registers in the worker registry,
shares consumer groups with the others, and competes for source leases, so a
source still runs in exactly one of them).

The parent owns what must exist once:

- the embedded server (children get its URL in their environment, never on
  their command line, where ``ps`` would show its password);
- the config file watch and SIGHUP: the parent follows the file with the
  same :class:`~topology.runtime.reload.Reloader` a single process uses, and
  only when it is valid sends SIGHUP to every child. Children run with
  ``--no-watch``: N watchers would each reload on their own schedule, and an
  editor's half-written file could reach some children and not others.
  The parent validates (at start and on each reload) in a short-lived child
  process (``topology.runtime.checks``): it never imports the validator, the
  engine, redis-py nor the handler modules, and stays small while it lives;
- ``--metrics-port``: one ``/metrics`` aggregating the children through
  prometheus-client's multiprocess mode (each child writes its samples to
  memory-mapped files in a folder the parent owns). Counters of a child that
  died stay in the sum, so the pool's totals never go down when a child is
  replaced: a scrape of N per-child endpoints summed would reset with every
  restart. ``/readyz`` is ready when every child's own ``/readyz`` is (each
  child serves its probes on a loopback port the parent picks);
- signals: SIGINT/SIGTERM are passed on once (each child drains), a second
  one is passed on again (each child stops at once). Children run in their own
  process group, so a Ctrl-C in a terminal reaches only the parent, and they
  are SIGKILLed by the kernel when the parent dies, even by ``kill -9``
  (``PR_SET_PDEATHSIG``, as for the embedded server).

A child that exits while no stop was asked for is started again after a
backoff that doubles with each quick death and resets once a child has run
for a while. With ``--stop-when-idle`` a child that exits 0 is done, and the
parent exits once every child is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from topology.runtime.checks import Checked

__all__ = ["POOL_ENV", "URL_ENV", "child_info", "parse_workers", "run_pool", "take_child_env"]

log = logging.getLogger("topology.pool")

#: The embedded server's URL, for a child (an environment variable: not shown by ``ps``).
URL_ENV = "PONOS_POOL_REDIS_URL"
#: JSON describing a child's place in its pool (parent pid and host, slot, size).
POOL_ENV = "PONOS_POOL"
#: Options (each taking a value) only the child of slot 0 keeps: one dashboard per pool
#: (its figures come from Redis, the whole deployment's), not N on one port.
ONE_CHILD_FLAGS = ("--ui-port", "--ui-host")
#: Seconds the parent sleeps between two looks at its children.
TICK = 0.2
#: First restart delay, and its ceiling; a child that ran this long resets it.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 30.0
#: Beyond the children's own drain timeout, how long to wait before SIGKILL.
DRAIN_GRACE = 5.0
#: After a second signal, how long the children get to stop at once before SIGKILL
#: (two signals sent close together may reach a child as one: it would drain).
HARD_STOP_GRACE = 3.0
#: Seconds a probe of a child's /readyz may take.
PROBE_TIMEOUT = 1.0


def parse_workers(text: str) -> int:
    """``--workers``: a count of 1 or more, or ``auto`` for the CPUs this process may use."""
    if text == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of workers: {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"--workers is 1 or more (or auto), not {count}")
    return count


def take_child_env(args: argparse.Namespace) -> None:
    """In a pool's child: use the parent's Redis URL, and keep it from handler code."""
    url = os.environ.pop(URL_ENV, None)
    if url is not None:
        args.redis_url = url


def child_info() -> dict[str, Any]:
    """What a child adds to its heartbeat so ``status`` can show the pool: ``{}`` alone."""
    raw = os.environ.get(POOL_ENV)
    if not raw:
        return {}
    with contextlib.suppress(ValueError):
        pool = json.loads(raw)
        if isinstance(pool, dict):
            return {"pool": pool}
    return {}


@dataclass
class _Slot:
    """One child's place in the pool: what runs there now and how it has gone."""

    index: int
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    done: bool = False  # exited 0 under --stop-when-idle: not started again
    exit_codes: list[int] = field(default_factory=list)


class _PoolRuntime:
    """What :class:`~topology.runtime.reload.Reloader` calls, for a parent with no actors.

    Validation is the reloader's (in a child process); "apply" is telling every
    child to reload.
    """

    def __init__(self, pool: _Pool, topology: Checked) -> None:
        self.pool = pool
        self.topology = topology
        self.generation = 1
        self.metrics = _Uncounted()  # each child counts its own reloads

    async def apply(self, topology: Checked) -> Any:
        self.topology = topology
        self.generation += 1
        self.pool.signal_children(signal.SIGHUP)
        log.info("reload: valid; every worker told to reload (pool generation %d)", self.generation)
        return _Sent()


class _Sent:
    """The reloader's plan result: something was sent (the children log their own diff)."""

    is_empty = False


class _Uncounted:
    """The reloader's counters, for a parent that serves none of its own."""

    @property
    def reloads(self) -> _Uncounted:
        return self

    def labels(self, *_values: str) -> _Uncounted:
        return self

    def inc(self) -> None:
        return None


class _Pool:
    def __init__(self, args: argparse.Namespace, topology: Checked | None, argv: list[str]) -> None:
        self.args = args
        self.topology = topology  # None with --deployment
        self.argv = argv
        self.slots = [_Slot(i) for i in range(args.workers)]
        self.stop = asyncio.Event()
        self.hup = asyncio.Event()
        self.signals = 0
        self.hard_deadline = float("inf")
        self.env: dict[str, str] = dict(os.environ)
        self.metrics_dir: str | None = None

    # -- signals -------------------------------------------------------------------

    def install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.hup.set)

    def _on_stop(self, sig: signal.Signals) -> None:
        self.signals += 1
        if self.signals == 1:
            log.info("%s: draining every worker (send it again to stop at once)", sig.name)
            self.stop.set()
        else:
            log.warning("%s again: every worker stops now", sig.name)
            self.hard_deadline = time.monotonic() + HARD_STOP_GRACE
        self.signal_children(signal.SIGTERM)

    def signal_children(self, sig: signal.Signals) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(sig)

    # -- children ------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        """Start (or start again) the child of ``slot``, on the loop's thread.

        The kernel's parent-death signal is tied to the thread that forked: this
        must not run in a helper thread.
        """
        from topology.server import _die_with_parent, free_port

        argv = self.argv if slot.index == 0 else _without(self.argv, ONE_CHILD_FLAGS)
        argv = [*argv, "--workers", "1", "--no-watch"]
        if self.args.metrics_port is not None:
            slot.port = free_port()
            argv += ["--metrics-port", str(slot.port)]
        env = dict(self.env)
        env[POOL_ENV] = json.dumps(
            {
                "parent_pid": os.getpid(),
                "host": socket.gethostname(),
                "slot": slot.index,
                "size": len(self.slots),
            }
        )
        slot.proc = subprocess.Popen(
            [sys.executable, "-m", "topology.cli", *argv],
            env=env,
            preexec_fn=_die_with_parent,  # forked on the loop thread: see above
        )
        slot.started = time.monotonic()
        slot.restart_at = None
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    def _reap(self, slot: _Slot, now: float) -> None:
        """Look at one slot: note a child that exited, start one whose backoff is over."""
        if slot.proc is not None:
            code = slot.proc.poll()
            if code is None:
                return
            pid = slot.proc.pid
            slot.proc = None
            slot.exit_codes.append(code)
            self._forget_metrics(pid)
            if self.stop.is_set():
                return
            if code == 0 and self.args.stop_when_idle is not None:
                slot.done = True
                log.info("worker %d (pid %d) is done", slot.index, pid)
                return
            if now - slot.started >= STABLE_AFTER:
                slot.failures = 0
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2**slot.failures)
            slot.failures += 1
            slot.restart_at = now + delay
            log.warning(
                "worker %d (pid %d) %s; starting it again in %.1fs",
                slot.index,
                pid,
                _exit_text(code),
                delay,
            )
        if not slot.done and not self.stop.is_set() and now >= (slot.restart_at or 0.0):
            self._spawn(slot)

    def _forget_metrics(self, pid: int) -> None:
        """Drop a dead child's live gauges; its counters stay in the pool's sums."""
        if self.metrics_dir is None:
            return
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, self.metrics_dir)

    async def _supervise(self) -> None:
        for slot in self.slots:
            self._spawn(slot)
        while not self.stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), TICK)
            now = time.monotonic()
            for slot in self.slots:
                self._reap(slot, now)
            if all(slot.done for slot in self.slots):
                log.info("every worker is done")
                return

    async def _drain(self) -> bool:
        """Wait for every child to exit; True when all exited 0 without being killed."""
        deadline = time.monotonic() + self.args.drain_timeout + DRAIN_GRACE
        clean = True
        for slot in self.slots:
            proc = slot.proc
            if proc is None:
                continue
            while proc.poll() is None and time.monotonic() < min(deadline, self.hard_deadline):
                await asyncio.sleep(TICK)  # another process: no event of ours to await
            if proc.poll() is None:
                log.warning("worker %d (pid %d) did not stop: killing it", slot.index, proc.pid)
                proc.kill()
                proc.wait()
            clean = clean and proc.returncode == 0
            self._forget_metrics(proc.pid)
            slot.proc = None
        return clean

    # -- the whole run -------------------------------------------------------------

    async def main(self) -> int:
        from topology.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
        from topology.runtime.connect import RedisUnavailableError, RedisUrlError

        loop = asyncio.get_running_loop()
        self.install_signals(loop)
        try:
            async with contextlib.AsyncExitStack() as stack:
                await self._shared_server(stack)
                if not self._start_metrics(stack):
                    return EXIT_FAILURE
                await self._start_reloads(stack)
                log.info("pool of %d workers (parent pid %d)", len(self.slots), os.getpid())
                try:
                    await self._supervise()
                finally:
                    if not self.stop.is_set():  # a signal already reached the children
                        self.stop.set()
                        self.signal_children(signal.SIGTERM)
                    clean = await self._drain()
                return EXIT_OK if clean else EXIT_FAILURE
        except RedisUnavailableError as exc:
            print(f"ponos-topology run: {exc}", file=sys.stderr)
            return EXIT_USAGE if isinstance(exc, RedisUrlError) else EXIT_FAILURE
        finally:
            if self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return EXIT_OK  # pragma: no cover

    async def _shared_server(self, stack: contextlib.AsyncExitStack) -> None:
        """Start the embedded server once, here, when the config has no Redis URL.

        Started on the loop's thread (its parent-death signal follows the forking
        thread); it answers PING before this returns. The parent needs no client
        of its own: each child connects to it.
        """
        from topology.runtime.connect import embedded_url

        if self.topology is None or self.topology.embedded_dir is None:
            return  # every child connects to the URL it is given
        url, server = embedded_url(self.topology.embedded_dir, owner=True)
        if server is not None:  # else a live one, of another run: the children find it too
            stack.callback(server.stop)
            self.env[URL_ENV] = url
            log.info("embedded server started, shared by the workers")

    def _start_metrics(self, stack: contextlib.AsyncExitStack) -> bool:
        if self.args.metrics_port is None:
            return True
        from prometheus_client import CollectorRegistry, multiprocess

        from topology.runtime.health import HealthServer

        self.metrics_dir = tempfile.mkdtemp(prefix="ponos-metrics-")
        self.env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.metrics_dir)
        # Readiness asks the children over HTTP: from the HTTP thread (loop=None),
        # never on the loop that supervises them.
        server = HealthServer(registry, self.readiness_problems, None)
        try:
            bound = server.serve(self.args.metrics_port)
        except OSError as exc:
            log.error(
                "cannot serve metrics on port %d: %s", self.args.metrics_port, exc.strerror or exc
            )
            return False
        stack.callback(server.close)
        log.info("metrics of every worker on :%d/metrics, probes on /healthz and /readyz", bound)
        return True

    async def _start_reloads(self, stack: contextlib.AsyncExitStack) -> None:
        if self.args.deployment is not None:  # children follow the published versions
            stack.enter_context(_forward_hup(self))
            return
        from topology.runtime.checks import ChildCheck
        from topology.runtime.reload import Reloader

        assert self.topology is not None  # a config file: run_pool checked it
        reloader = Reloader(
            Path(self.args.config),
            _PoolRuntime(self, self.topology),
            hup=self.hup,
            watch=not self.args.no_watch,
            checker=ChildCheck(self.args.redis_url, self.args.data_dir),
        )
        reloader.start()
        stack.push_async_callback(reloader.stop)

    def readiness_problems(self) -> list[str]:
        """Why the pool is not ready: a child not running, or not ready itself."""
        if self.stop.is_set():
            return ["stopping"]
        problems = []
        for slot in list(self.slots):
            proc, port = slot.proc, slot.port
            if slot.done:
                continue
            if proc is None or proc.poll() is not None:
                problems.append(f"worker {slot.index}: not running (starting again)")
                continue
            problems.extend(
                f"worker {slot.index} (pid {proc.pid}): {line}" for line in _probe(port)
            )
        return problems


@contextlib.contextmanager
def _forward_hup(pool: _Pool) -> Any:
    """``--deployment``: SIGHUP goes to every child as it is (each re-reads the version)."""
    loop = asyncio.get_running_loop()
    loop.remove_signal_handler(signal.SIGHUP)
    loop.add_signal_handler(signal.SIGHUP, pool.signal_children, signal.SIGHUP)
    yield


def _probe(port: int | None) -> list[str]:
    """A child's own /readyz: [] when ready, else its reasons."""
    import urllib.error
    import urllib.request

    if port is None:
        return []
    url = f"http://127.0.0.1:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as resp:
            resp.read()
            return []
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace").strip()
        return body.splitlines() or [f"HTTP {exc.code}"]
    except OSError:
        return ["not serving its probes yet"]


def _without(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` without ``flags`` and their values (``--flag VALUE`` or ``--flag=VALUE``)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in flags)):
            out.append(arg)
    return out


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


def run_pool(args: argparse.Namespace) -> int:
    """Run ``args.workers`` children of this same ``run`` command; the exit code.

    The config is validated first, in a child process; its problems are printed
    as ``run`` prints them, and an invalid file starts nothing (exit 2).
    """
    from topology.cli import EXIT_USAGE

    argv = sys.argv[1:]
    if "run" not in argv:  # called in-process with another argv: no command line to repeat
        print("ponos-topology run: --workers needs the command line of `run`", file=sys.stderr)
        return EXIT_USAGE
    checked = None
    if args.config is not None:
        from topology.runtime.checks import ChildCheck

        checked, problems = ChildCheck(args.redis_url, args.data_dir).check(Path(args.config))
        for problem in problems:
            print(problem, file=sys.stderr)
        if checked is None:
            return EXIT_USAGE
    return asyncio.run(_Pool(args, checked, argv).main())
