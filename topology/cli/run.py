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
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

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
        help="with --deployment: where the config's handler modules import from (default: .)",
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
        type=float,
        metavar="SECONDS",
        help="exit 0 once idle that long, all sources ended and nothing pending",
    )
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    parser.add_argument(
        "--ui-port", type=int, metavar="PORT", help="serve the live dashboard on this port"
    )
    parser.add_argument(
        "--ui-host", default="127.0.0.1", help="address of the dashboard (default 127.0.0.1)"
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--quiet", action="store_true", help="drop the periodic summary lines")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on stop, how long in-flight batches may take to finish (default 30)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_FAILURE, EXIT_USAGE
    from topology.config import check
    from topology.runtime.logs import setup_logging

    setup_logging(args.log_format, quiet=args.quiet)
    if args.stop_when_idle is not None and args.stop_when_idle < 0:
        print("ponos-topology run: --stop-when-idle must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    if (args.config is None) == (args.deployment is None):
        print("ponos-topology run: give either CONFIG or --deployment NAME", file=sys.stderr)
        return EXIT_USAGE
    if args.handlers_dir is not None and args.deployment is None:
        print("ponos-topology run: --handlers-dir goes with --deployment", file=sys.stderr)
        return EXIT_USAGE
    if args.deployment is not None:
        from topology.runtime.connect import resolve_url

        if resolve_url(args.redis_url, None) is None:
            print(
                "ponos-topology run: --deployment needs a Redis URL (--redis-url or $REDIS_URL): "
                "the embedded server belongs to a config file's folder",
                file=sys.stderr,
            )
            return EXIT_USAGE
    topology: Any = None
    if args.config is not None:
        topology, problems = check(args.config)
        for problem in problems:
            print(problem, file=sys.stderr)
        if topology is None:
            return EXIT_USAGE
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


async def _main(args: argparse.Namespace, topology: Any, state: _RunState) -> int:
    from topology.cli import EXIT_FAILURE, EXIT_OK
    from topology.runtime.connect import RedisUnavailableError, open_redis

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    signals = _Signals(loop, main)
    signals.install()
    try:
        if args.deployment is not None:
            return await _follow_deployment(args, signals, state)
        async with open_redis(
            topology, cli_url=args.redis_url, data_dir=args.data_dir, owner=True
        ) as connected:
            return await _serve(args, topology, connected, signals, state)
    except RedisUnavailableError as exc:
        print(f"ponos-topology run: {exc}", file=sys.stderr)
        return EXIT_FAILURE
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

    from topology.cli import EXIT_OK
    from topology.config.model import Topology
    from topology.runtime.connect import open_redis
    from topology.runtime.deployment import DeploymentFollower
    from topology.streams import Connection

    async with open_redis(
        Topology.empty(args.deployment), cli_url=args.redis_url, owner=True
    ) as connected:
        follower = DeploymentFollower(
            connected.client, args.deployment, handlers_dir=args.handlers_dir or Path.cwd()
        )
        try:
            topology = await follower.first(signals.stop)
            if topology is None:
                return EXIT_OK
            if topology.redis.prefix != connected.conn.keys.prefix:
                connected = replace(
                    connected, conn=Connection(connected.client, prefix=topology.redis.prefix)
                )
            return await _serve(args, topology, connected, signals, state, follower)
        finally:
            await follower.stop()


async def _serve(
    args: argparse.Namespace,
    topology: Any,
    connected: Any,
    signals: _Signals,
    state: _RunState,
    follower: Any = None,
) -> int:
    from topology import __version__
    from topology.cli import EXIT_FAILURE, EXIT_OK
    from topology.runtime.logs import SUMMARY_LOGGER
    from topology.runtime.supervisor import ApplyError, Runtime
    from topology.runtime.workers import GenerationLog, WorkerRegistry, new_worker_id

    worker_id = new_worker_id()
    where = "embedded server" if connected.server is not None else connected.url_redacted
    log.info("ponos-topology %s: %s on %s, worker %s", __version__, topology.name, where, worker_id)
    runtime = Runtime(
        connected.conn,
        deployment=topology.name,
        worker_id=worker_id,
        base_dir=topology.base_dir,
        drain_timeout=args.drain_timeout,
    )
    registry = WorkerRegistry(connected.client, topology.name, worker_id)
    generations = GenerationLog()
    registry.start(
        lambda: {
            "version": __version__,
            "generation": runtime.generation,
            "generations": generations(runtime.generation),
            "config": str(topology.path),
            "actors": len(runtime.actors()),
            **runtime.metrics.counters(),  # handled, failed, dead_lettered, conflicts
            **({"deployment_version": follower.version} if follower is not None else {}),
        }
    )
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(registry.wait_registered(), 5.0)
    if args.metrics_port is not None:
        runtime.metrics.serve(args.metrics_port)
        log.info("metrics on :%d/metrics", args.metrics_port)
    started = time.monotonic()
    watcher: Any = None
    ui: Any = None
    try:
        if args.ui_port is not None:
            ui = await _start_ui(args, runtime, connected)
            if ui is None:
                return EXIT_FAILURE
        try:
            await runtime.apply(topology)
        except ApplyError as exc:
            log.error("cannot start: %s", exc)
            return EXIT_FAILURE
        if follower is not None:  # reconcile to published versions instead of a file
            follower.start(runtime, hup=signals.reload)
        else:
            watcher = _start_reloader(args, runtime, signals)
        await _wait(args, runtime, signals, logging.getLogger(SUMMARY_LOGGER))
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
        if ui is not None:
            await ui.stop()
        await runtime.close()
        await registry.stop()
    handled = runtime.handled()
    elapsed = time.monotonic() - started
    parts = ", ".join(f"{name} {handled.get(name, 0)}" for name in runtime.topology.sinks)
    print(f"handled: {parts or 'nothing'} in {elapsed:.1f}s", flush=True)
    log.info("stopped")
    return EXIT_OK


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


def _start_reloader(args: argparse.Namespace, runtime: Any, signals: _Signals) -> Any:
    """The hot-reload hook (issue 5): SIGHUP always, file watching unless --no-watch."""
    try:
        from topology.runtime.reload import Reloader
    except ImportError:  # reload not built: SIGHUP only logs
        return None
    reloader = Reloader(Path(args.config), runtime, hup=signals.reload, watch=not args.no_watch)
    reloader.start()
    return reloader


async def _wait(args: argparse.Namespace, runtime: Any, signals: _Signals, summary: Any) -> None:
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
