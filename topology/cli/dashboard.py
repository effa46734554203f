"""``ponos-topology dashboard CONFIG | --deployment NAME``: a live web page of the topology.

The graph of ``graph``, drawn in the browser, with each stream's length and
rate, each read edge's pending and lag, each sink's handled/s, failures/s and
dead letters, the workers' heartbeats, the deployment version and the last
reloads, updated every ``--interval`` seconds without reloading the page. The
numbers are ``status``'s, read once per interval for every open page.
``/api/snapshot`` serves them as JSON. Read-only; bound to loopback unless
``--host`` says otherwise (the page has no login: a warning says so).

With CONFIG the picture follows the file (edit it, ``run`` reloads it, the
page redraws); with ``--deployment`` it follows the version ``apply`` published.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

__all__ = ["add_parser", "run"]

PROG = "ponos-topology dashboard"
#: Seconds: a page updated less often than hourly is not live.
MAX_INTERVAL = 3600.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from topology.cli._connection import add_connection_args

    parser = subparsers.add_parser(
        "dashboard",
        help="a live web page of the topology: graph, rates, lag, dead letters, workers",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "config", metavar="CONFIG", nargs="?", help="topology YAML file (or --deployment)"
    )
    parser.add_argument(
        "--deployment", metavar="NAME", help="show the config `apply` published for NAME"
    )
    parser.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0: any)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; anything else is reachable by others)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds between two Redis polls while a page is open (default 1)",
    )
    add_connection_args(parser)
    parser.set_defaults(func=run)
    return parser


def _topology(args: argparse.Namespace) -> Any:
    """The topology to connect with, or None after saying why (exit 2)."""
    from topology.cli._connection import load_config
    from topology.config.model import Topology
    from topology.runtime.connect import resolve_url

    if (args.config is None) == (args.deployment is None):
        print(f"{PROG}: give either CONFIG or --deployment NAME", file=sys.stderr)
        return None
    if not 0 < args.interval <= MAX_INTERVAL:  # nan too
        print(f"{PROG}: --interval must be > 0 and <= {MAX_INTERVAL:.0f}", file=sys.stderr)
        return None
    if not 0 <= args.port <= 65535:
        print(f"{PROG}: --port must be from 0 (any free port) to 65535", file=sys.stderr)
        return None
    if args.config is not None:
        return load_config(args.config)
    if resolve_url(args.redis_url, None) is None and args.data_dir is None:
        print(
            f"{PROG}: --deployment needs a Redis URL (--redis-url or $REDIS_URL) or the "
            "--data-dir of an embedded server",
            file=sys.stderr,
        )
        return None
    return Topology.empty(args.deployment)


def _embedded_running(args: argparse.Namespace, topology: Any) -> bool:
    """With the embedded server: True when ``run`` has started it; else say so.

    The dashboard must not start the server itself: a server started by a
    command that does not own it stops with that command, and ``run`` refuses
    to share it.
    """
    from topology.runtime.connect import resolve_url
    from topology.runtime.embedded import EmbeddedServer, default_data_dir

    if resolve_url(args.redis_url, topology) is not None:
        return True
    folder = args.data_dir if args.data_dir is not None else default_data_dir(topology.path)
    if EmbeddedServer.running_info(folder) is not None:
        return True
    print(
        f"{PROG}: error: no embedded Redis server runs in {folder}: start `ponos-topology run` "
        "there first (or serve the page from it with --ui-port), or pass --redis-url",
        file=sys.stderr,
    )
    return False


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
    from topology.cli._connection import run_command

    topology = _topology(args)
    if topology is None:
        return EXIT_USAGE
    if not _embedded_running(args, topology):
        return EXIT_FAILURE  # like any command that cannot reach its Redis

    async def main() -> int:
        from pathlib import Path

        from topology.dashboard import from_file, from_published, serve, warn_if_exposed
        from topology.runtime.connect import open_redis

        async with open_redis(topology, cli_url=args.redis_url, data_dir=args.data_dir) as ctd:
            if args.deployment is not None:
                source = from_published(args.deployment)
            else:
                source = from_file(Path(args.config), topology)
            try:
                server = await serve(
                    ctd.client,
                    ctd.url_redacted,
                    source,
                    host=args.host,
                    port=args.port,
                    interval=args.interval,
                )
            except OSError as exc:
                print(
                    f"{PROG}: error: cannot listen on {args.host}:{args.port}: "
                    f"{exc.strerror or exc}",
                    file=sys.stderr,
                )
                return EXIT_FAILURE
            warn_if_exposed(args.host, PROG)
            print(f"dashboard of {topology.name} on {server.url} (Ctrl-C stops)", flush=True)
            try:
                await asyncio.Event().wait()  # until Ctrl-C or SIGTERM
            finally:
                await server.stop()
        return EXIT_OK

    return run_command(main, PROG)
