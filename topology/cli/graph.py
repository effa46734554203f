"""``ponos-topology graph CONFIG [--format mermaid|dot|json] [-o FILE]``: draw a topology.

No Redis needed: the diagram comes from the config alone, through the same
graph the runtime plans from (``topology.graph``). An invalid config exits 2
with the loader's located problems, one per line on stderr.

``--live`` reads the deployment's Redis once and annotates the graph
(:func:`annotate_live`): each stream with its length, each read edge with its
consumer group's pending (delivered, not acked) and lag (not yet delivered,
``XINFO GROUPS``; None when the server cannot tell), each sink with the sums.
Every format carries them: as text in labels, and in JSON as the ``live``
attribute of nodes and read edges.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "annotate_live", "run"]

_FORMATS = ("mermaid", "dot", "json")  # topology.render.FORMATS, without importing it here


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "graph",
        help="render the topology as a mermaid, DOT or JSON graph; no Redis needed",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("config", metavar="CONFIG", help="topology YAML file")
    parser.add_argument(
        "--format",
        "-f",
        choices=_FORMATS,
        default="mermaid",
        help="output format (default: mermaid)",
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE instead of standard output"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="annotate with stream lengths and per-sink pending/lag read from Redis",
    )
    from topology.cli._connection import add_connection_args

    add_connection_args(parser)
    parser.set_defaults(func=run)
    return parser


async def annotate_live(graph: Any, client: Any, conn: Any, topology: Any, url: str = "") -> None:
    """Add what Redis says now to ``graph`` (built by ``topology.graph.build``), in place.

    The numbers are those of ``status`` (:func:`topology.observe.collect`),
    copied onto the graph by :func:`topology.observe.annotate`.
    """
    from topology.observe import annotate, collect

    annotate(graph, await collect(client, conn, topology, url))


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
    from topology.config import ConfigError, load
    from topology.graph import build
    from topology.render import render

    try:
        topology = load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    graph = build(topology)
    if args.live:
        from topology.cli._connection import run_command

        async def main() -> int:
            from topology.runtime.connect import open_redis

            async with open_redis(topology, cli_url=args.redis_url, data_dir=args.data_dir) as ctd:
                await annotate_live(graph, ctd.client, ctd.conn, topology, ctd.url_redacted)
            return EXIT_OK

        code = run_command(main, "ponos-topology graph")
        if code != EXIT_OK:
            return code
    text = render(graph, args.format)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(
            f"ponos-topology graph: cannot write {args.output}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    return EXIT_OK
