"""``ponos-topology run CONFIG``: run every actor and source of a topology.

Start = applying the plan from the empty topology (``Runtime.apply``), the same
call a reload makes. SIGINT/SIGTERM drain (stop reading, let in-flight batches
finish and commit, up to ``--drain-timeout``) and exit 0; a second signal exits
at once, leaving un-acked events pending for redelivery. ``--stop-when-idle``
exits 0 once nothing was read or committed for that long, every source has
ended and nothing is pending: for batch runs, demos and tests.

``run --deployment NAME`` takes its config from Redis instead of a file: the
versions ``apply`` publishes, each applied with the same ``Runtime.apply``
(``topology.runtime.deployment``). It needs a Redis URL: the embedded server
lives beside a config file, and a deployment has none.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from topology.config.model import Topology
    from topology.runtime import Reloader, Runtime

__all__ = ["add_parser", "run"]

log = logging.getLogger("topology.run")

#: Seconds between two throughput/lag lines.
SUMMARY_EVERY = 10.0
#: How often the main loop looks at idleness.
TICK = 0.2
#: After a second signal, give the immediate stop this long before exiting hard.
HARD_EXIT_GRACE = 2.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "run",
        help="run the topology's actors and sources (hot-reloads the file)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "config", metavar="CONFIG", nargs="?", help="topology YAML file (or --deployment)"
    )
    parser.add_argument(
        "--deployment",
        metavar="NAME",
        help="follow the config `apply` published for NAME in Redis instead of a file",
    )
    parser.add_argument(
        "--handlers-dir",
        type=Path,
        metavar="DIR",
        help="with --deployment: where the config's handler modules import from (default: .);"
        " callables of a deployment resolve only to modules under it",
    )
    parser.add_argument(
        "--allow-module",
        action="append",
        default=[],
        metavar="PREFIX",
        help="with --deployment: also allow callables from modules under PREFIX (repeatable)",
    )
    parser.add_argument(
        "--deploy-key-file",
        type=Path,
        metavar="FILE",
        help="with --deployment: run only versions signed with this key"
        " (default: $PONOS_DEPLOY_KEY)",
    )
    parser.add_argument("--redis-url", help="Redis URL (else $REDIS_URL, redis.url, embedded)")
    parser.add_argument(
        "--data-dir", type=Path, help="embedded server data folder (default: beside CONFIG)"
    )
    parser.add_argument(
        "--no-watch", action="store_true", help="do not reload on file change (SIGHUP still does)"
    )
    parser.add_argument(
        "--stop-when-idle",
        type=_seconds,
        metavar="SECONDS",
        help="exit 0 once idle that long, all sources ended and nothing pending",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus /metrics on this port (1-65535)",
    )
    parser.add_argument(
        "--ui-port",
        type=_any_port,
        metavar="PORT",
        help="serve the live dashboard on this port (0: any free port, logged)",
    )
    parser.add_argument(
        "--ui-host",
        default="127.0.0.1",
        help="address of the dashboard (default 127.0.0.1; anything else is reachable by others)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines on stderr, and the final summary on stdout, as text or as one JSON "
        "object per line (default: text)",
    )
    parser.add_argument("--quiet", action="store_true", help="drop the periodic summary lines")
    parser.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="run N worker processes under one supervising parent (auto: one per usable CPU;"
        " default 1: this process alone)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="on stop, how long in-flight batches may take to finish (default 30)",
    )
    parser.set_defaults(func=run)
    return parser


def _port(text: str, lowest: int = 1) -> int:
    """A TCP port to listen on; anything else is a usage error (argparse: exit 2)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not lowest <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from {lowest} to 65535, not {port}")
    return port


def _any_port(text: str) -> int:
    """A TCP port, or 0 for any free one."""
    return _port(text, lowest=0)


def _workers(text: str) -> int:
    from topology.runtime.pool import parse_workers

    return parse_workers(text)


def _seconds(text: str) -> float:
    """A duration in seconds, zero or more (a negative timeout means nothing)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds >= 0 or seconds == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text}")
    return seconds


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_FAILURE, EXIT_USAGE
    from topology.runtime.logs import setup_logging

    setup_logging(args.log_format, quiet=args.quiet)
    if (args.config is None) == (args.deployment is None):
        print("ponos-topology run: give either CONFIG or --deployment NAME", file=sys.stderr)
        return EXIT_USAGE
    for flag, value in (
        ("--handlers-dir", args.handlers_dir),
        ("--allow-module", args.allow_module),
        ("--deploy-key-file", args.deploy_key_file),
    ):
        if value and args.deployment is None:
            print(f"ponos-topology run: {flag} goes with --deployment", file=sys.stderr)
            return EXIT_USAGE
    if args.deployment is not None:
        from topology.cli._connection import deploy_key, deployment_url_missing

        args.deploy_key = deploy_key(args.deploy_key_file, "ponos-topology run")
        if deployment_url_missing(args.redis_url, "ponos-topology run --deployment"):
            return EXIT_USAGE
    if args.workers > 1:  # validates in a child process: the parent stays small
        from topology.runtime.pool import run_pool

        return run_pool(args)
    topology: Topology | None = None
    if args.config is not None:
        from topology.config import check

        topology, problems = check(args.config)
        for problem in problems:
            print(problem, file=sys.stderr)
        if topology is None:
            return EXIT_USAGE
    from topology.runtime.pool import take_child_env

    take_child_env(args)  # in a pool's child: the parent's Redis
    state = _RunState()
    try:
        code = asyncio.run(_main(args, topology, state))
    except _HardStop:
        code, state.abandoned = EXIT_FAILURE, True
    if state.abandoned:
        # Handler threads still running (a second signal, or a drain that timed
        # out) would be joined at interpreter exit: leave without waiting for
        # them. Their events were not committed and stay pending for redelivery.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


class _RunState:
    """What ``run`` needs to know after the event loop is gone."""

    abandoned = False


class _HardStop(Exception):
    """A second signal: stop now, pending events stay for redelivery."""


class _Signals:
    """First SIGINT/SIGTERM: drain. Second: stop at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, main: asyncio.Task[Any]) -> None:
        self.loop = loop
        self.main = main
        self.stop = asyncio.Event()
        self.hard = False
        self.reload = asyncio.Event()
        self.count = 0

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self._on_stop, sig)
        if hasattr(signal, "SIGHUP"):
            self.loop.add_signal_handler(signal.SIGHUP, self.reload.set)

    def remove(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                with contextlib.suppress(Exception):
                    self.loop.remove_signal_handler(sig)

    def _on_stop(self, sig: signal.Signals) -> None:
        self.count += 1
        if self.count == 1:
            log.info("%s: draining (send it again to stop at once)", sig.name)
            self.stop.set()
            return
        log.warning("%s again: stopping now; un-acked events stay pending", sig.name)
        self.hard = True
        self.main.cancel()
        # If the immediate stop itself hangs (a handler thread stuck in C), go anyway.
        self.loop.call_later(HARD_EXIT_GRACE, os._exit, 1)


async def _main(args: argparse.Namespace, topology: Topology | None, state: _RunState) -> int:
    from topology.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
    from topology.runtime.connect import RedisUnavailableError, RedisUrlError, open_redis

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    signals = _Signals(loop, main)
    signals.install()
    try:
        if topology is None:  # run checked: CONFIG or --deployment
            return await _follow_deployment(args, signals, state)
        async with open_redis(
            topology, cli_url=args.redis_url, data_dir=args.data_dir, owner=True
        ) as connected:
            return await _serve(args, topology, connected, signals, state)
    except RedisUnavailableError as exc:
        print(f"ponos-topology run: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, RedisUrlError) else EXIT_FAILURE
    except asyncio.CancelledError:
        if signals.hard:
            raise _HardStop() from None
        raise
    finally:
        signals.remove()
    return EXIT_OK  # pragma: no cover


async def _follow_deployment(args: argparse.Namespace, signals: _Signals, state: _RunState) -> int:
    """``run --deployment``: wait for a published config, then serve it like a file's."""
    from dataclasses import replace

    from topology import __version__
    from topology.cli import EXIT_OK
    from topology.config.model import Topology
    from topology.runtime.connect import open_redis
    from topology.runtime.deployment import DeploymentFollower
    from topology.runtime.pool import child_info
    from topology.runtime.workers import WorkerRegistry, new_worker_id
    from topology.streams import Connection

    async with open_redis(
        Topology.empty(args.deployment), cli_url=args.redis_url, owner=True
    ) as connected:
        follower = DeploymentFollower(
            connected.client,
            args.deployment,
            handlers_dir=args.handlers_dir or Path.cwd(),
            allow_modules=tuple(args.allow_module),
            key=args.deploy_key,
        )
        if args.deploy_key is None:
            log.warning(
                "deployment %s: versions are unsigned and not verified (no $PONOS_DEPLOY_KEY"
                " or --deploy-key-file): whoever can write to this Redis chooses the config",
                args.deployment,
            )
        # Registered while waiting, so `status` shows a version it refused before any ran.
        registry = WorkerRegistry(connected.client, args.deployment, new_worker_id())
        registry.start(
            lambda: {
                "version": __version__,
                "generation": 0,
                "deployment_version": follower.version,
                "deployment_rejected": follower.rejected,
                **child_info(),
            }
        )
        try:
            topology = await follower.first(signals.stop)
            if topology is None:
                return EXIT_OK
            if topology.redis.prefix != connected.conn.keys.prefix:
                connected = replace(
                    connected, conn=Connection(connected.client, prefix=topology.redis.prefix)
                )
            return await _serve(args, topology, connected, signals, state, follower, registry)
        finally:
            await (
                registry.stop()
            )  # _serve stopped it if it ran: removing the entry twice is harmless
            await follower.stop()


async def _apply_first(runtime: Runtime, topology: Topology, stop: asyncio.Event) -> bool:
    """Start the topology (generation 1), waiting out Redis going away meanwhile.

    A server restarting or failing over while the actors start rolls the start
    back; that is no reason for a worker to exit (a supervisor would only start
    it again into the same outage): it tries again with a backoff. Anything
    else (a handler that cannot be imported, a refused command) ends the start.
    False: not started (the error is logged), or stopped while waiting.
    """
    from topology.runtime import ApplyError
    from topology.streams import Backoff, is_transient, pause

    backoff = Backoff(0.2, 5.0, jitter=True)
    while True:
        try:
            await runtime.apply(topology)
            return True
        except ApplyError as exc:
            if exc.__cause__ is None or not is_transient(exc.__cause__):
                log.error("cannot start: %s", exc)
                return False
            delay = backoff.next()
            log.warning("cannot start yet: %s; trying again in %.1fs", exc, delay)
        await pause(delay, stop)
        if stop.is_set():
            log.info("stopped before the topology could start")
            return False


async def _serve(
    args: argparse.Namespace,
    topology: Any,
    connected: Any,
    signals: _Signals,
    state: _RunState,
    follower: Any = None,
    registry: Any = None,
) -> int:
    from topology import __version__
    from topology.cli import EXIT_FAILURE, EXIT_OK
    from topology.runtime import Runtime
    from topology.runtime.logs import SUMMARY_LOGGER, bind_fields
    from topology.runtime.pool import child_info
    from topology.runtime.workers import GenerationLog, WorkerRegistry, new_worker_id

    # A deployment worker is registered while it waits for a valid version.
    registry = registry or WorkerRegistry(connected.client, topology.name, new_worker_id())
    worker_id = registry.worker_id
    bind_fields(worker=worker_id)  # every line of this process, actors' included
    where = _where(connected)
    log.info("ponos-topology %s: %s on %s, worker %s", __version__, topology.name, where, worker_id)
    runtime = Runtime(
        connected.conn,
        deployment=topology.name,
        worker_id=worker_id,
        base_dir=topology.base_dir,
        drain_timeout=args.drain_timeout,
    )
    generations = GenerationLog()
    registry.start(
        lambda: {
            "version": __version__,
            "generation": runtime.generation,
            "generations": generations(runtime.generation),
            "config": str(topology.path),
            "actors": len(runtime.actors()),
            **runtime.metrics.counters(),  # handled, failed, dead_lettered, conflicts
            **(
                {"deployment_version": follower.version, "deployment_rejected": follower.rejected}
                if follower is not None
                else {}
            ),
            **child_info(),
        }
    )
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(registry.wait_registered(), 5.0)
    started = time.monotonic()
    watcher: Any = None
    failed_sources: list[str] = []
    health: Any = None
    ui: Any = None
    try:
        if args.metrics_port is not None:
            try:
                health = _start_health(args.metrics_port, runtime, lambda: watcher or follower)
            except OSError as exc:  # in use, or not ours to bind
                port = args.metrics_port
                log.error("cannot serve metrics on port %d: %s", port, exc.strerror or exc)
                return EXIT_FAILURE
        if args.ui_port is not None:
            ui = await _start_ui(args, runtime, connected)
            if ui is None:
                return EXIT_FAILURE
        if not await _apply_first(runtime, topology, signals.stop):
            return EXIT_OK if signals.stop.is_set() else EXIT_FAILURE
        if follower is not None:  # reconcile to published versions instead of a file
            follower.start(runtime, hup=signals.reload)
        else:
            watcher = _start_reloader(args, runtime, signals)
        await _wait(args, runtime, signals, logging.getLogger(SUMMARY_LOGGER))
        failed_sources = _failed_sources(runtime)
        log.info("stopping: draining in-flight batches (up to %.0fs)", args.drain_timeout)
        if watcher is not None:
            await watcher.stop()
            watcher = None
        complete = await runtime.drain(args.drain_timeout)
        if not complete:
            state.abandoned = True
            log.warning("drain timed out: un-acked events stay pending for redelivery")
    finally:
        if watcher is not None:
            await watcher.stop()
        if health is not None:
            await health.stop()
        if ui is not None:
            await ui.stop()
        await runtime.close()
        await registry.stop()
    handled = runtime.handled()
    elapsed = time.monotonic() - started
    counts = {name: handled.get(name, 0) for name in runtime.topology.sinks}
    parts = ", ".join(f"{name} {count}" for name, count in counts.items())
    summary = f"handled: {parts or 'nothing'} in {elapsed:.1f}s"
    if args.log_format == "json":  # a log collector reads stdout too: one object per line
        summary = json.dumps(
            {"msg": summary, "handled": counts, "seconds": round(elapsed, 3)}, ensure_ascii=False
        )
    print(summary, flush=True)
    log.info("stopped")
    return _exit_code(args, failed_sources)


def _where(connected: Any) -> str:
    """The server named in the start line, and whether it is a Redis Cluster."""
    where = "embedded server" if connected.server is not None else connected.url_redacted
    if connected.conn.cluster:
        where += f" (Redis Cluster detected: {len(connected.client.get_primaries())} masters)"
    return str(where)


def _exit_code(args: argparse.Namespace, failed_sources: list[str]) -> int:
    """A run that ends by itself (``--stop-when-idle``) fails when a source failed."""
    from topology.cli import EXIT_FAILURE, EXIT_OK

    if failed_sources and args.stop_when_idle is not None:
        log.error("stopped with failed source(s): %s", ", ".join(failed_sources))
        return EXIT_FAILURE
    return EXIT_OK


def _failed_sources(runtime: Any) -> list[str]:
    """Sources that raised in this worker: a run that ends by itself reports them."""
    return sorted(n for n, s in runtime.sources.items() if getattr(s, "failed", None))


class _Health:
    """``--metrics-port``: the Redis sampler and the HTTP endpoints, stopped together."""

    def __init__(self, sampler: Any, server: Any) -> None:
        self.sampler = sampler
        self.server = server

    async def stop(self) -> None:
        await self.sampler.stop()
        self.server.close()


def _start_health(port: int, runtime: Runtime, reloads: Any) -> _Health:
    """Serve /metrics, /healthz, /readyz; ``reloads()`` is what reloads (its ``results``)."""
    from topology.runtime.health import HealthServer, Sampler, readiness_problems

    def last_reload() -> str | None:
        results = getattr(reloads(), "results", None)
        return results[-1] if results else None

    sampler = Sampler(runtime)
    server = HealthServer(
        runtime.metrics.registry,
        lambda: readiness_problems(runtime, sampler, last_reload),
        asyncio.get_running_loop(),
    )
    bound = server.serve(port)
    sampler.start()
    log.info("metrics on :%d/metrics, probes on /healthz and /readyz", bound)
    return _Health(sampler, server)


async def _start_ui(args: argparse.Namespace, runtime: Any, connected: Any) -> Any:
    """The dashboard of this worker's runtime, or None after logging why it cannot listen."""
    from topology.dashboard import from_runtime, serve, warn_if_exposed

    try:
        ui = await serve(
            connected.client,
            connected.url_redacted,
            from_runtime(runtime),
            host=args.ui_host,
            port=args.ui_port,
        )
    except OSError as exc:
        log.error("cannot serve the dashboard on %s:%s: %s", args.ui_host, args.ui_port, exc)
        return None
    warn_if_exposed(args.ui_host, "ponos-topology run")
    log.info("dashboard on %s", ui.url)
    return ui


def _start_reloader(args: argparse.Namespace, runtime: Runtime, signals: _Signals) -> Reloader:
    """The hot-reload hook: SIGHUP always, file watching unless --no-watch."""
    from topology.runtime import Reloader

    reloader = Reloader(Path(args.config), runtime, hup=signals.reload, watch=not args.no_watch)
    reloader.start()
    return reloader


async def _wait(
    args: argparse.Namespace, runtime: Runtime, signals: _Signals, summary: logging.Logger
) -> None:
    """Until a signal, or idle for ``--stop-when-idle`` with nothing pending."""
    next_summary = time.monotonic() + SUMMARY_EVERY
    last_counts = dict(runtime.handled())
    last_time = time.monotonic()
    idle_limit = args.stop_when_idle
    while not signals.stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(signals.stop.wait(), TICK)
        if signals.stop.is_set():
            return
        now = time.monotonic()
        if idle_limit is not None and runtime.idle_for() >= idle_limit:
            try:
                if (
                    await runtime.pending() == 0
                    and not any((await runtime.lag()).values())  # nothing undelivered either
                    and runtime.idle_for() >= idle_limit
                ):
                    log.info("idle for %.1fs with nothing pending: stopping", idle_limit)
                    return
            except Exception as exc:  # Redis away: not idle, keep going
                log.debug("idle check failed: %r", exc)
        if now >= next_summary:
            counts = dict(runtime.handled())
            span = now - last_time
            try:
                lag = await runtime.lag()
            except Exception:
                lag = {}
            parts = []
            for name in runtime.topology.sinks:
                rate = (counts.get(name, 0) - last_counts.get(name, 0)) / span
                parts.append(f"{name} {rate:.0f}/s lag {lag.get(name, '?')}")
            summary.info("throughput: %s", "; ".join(parts) or "no sinks")
            last_counts, last_time = counts, now
            next_summary = now + SUMMARY_EVERY
