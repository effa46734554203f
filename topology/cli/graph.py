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


def _s(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _append(detail: str, extra: str) -> str:
    return f"{detail}, {extra}" if detail else extra


async def annotate_live(graph: Any, client: Any, conn: Any) -> None:
    """Add what Redis says now to ``graph`` (built by ``topology.graph.build``), in place.

    Stream nodes get ``live = {"length"}``; read edges ``live = {"pending",
    "lag", "group"}`` (``group`` False while the sink never ran on that stream);
    sink nodes ``live = {"pending", "lag"}`` summed over their streams (``lag``
    None when any stream's is unknown). ``live_text`` and ``detail`` carry the
    same numbers for the diagrams. Attributes only: the renderers stay unaware.
    """
    from redis.exceptions import ResponseError

    from topology.graph import nodes_of
    from topology.streams import read_group_lag

    lengths: dict[str, int] = {}
    for _node, data in nodes_of(graph, "stream"):
        length = int(await client.xlen(conn.stream_key(data["name"])))
        lengths[data["name"]] = length
        data["live"] = {"length": length}
        data["live_text"] = f"length {length}"
        data["detail"] = _append(data.get("detail", ""), data["live_text"])
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for stream in lengths:
        try:
            infos = await client.xinfo_groups(conn.stream_key(stream))
        except ResponseError:  # no such key yet
            infos = []
        decoded = [{_s(k): v for k, v in info.items()} for info in infos]
        groups[stream] = {str(_s(info.get("name"))): info for info in decoded}
    for node, data in nodes_of(graph, "sink"):
        pending, lag, known = 0, 0, True
        for _, _, edge in graph.in_edges(node, data=True):
            if edge.get("kind") != "read":
                continue
            info = groups.get(edge["stream"], {}).get(data["name"])
            if info is None:
                live: dict[str, Any] = {"pending": 0, "lag": None, "group": False}
            else:
                state = await read_group_lag(conn, conn.stream_key(edge["stream"]), data["name"])
                live = {
                    "pending": int(info.get("pending") or 0),
                    "lag": None if state is None else state.lag,
                    "group": True,
                }
                if state is not None and state.trimmed_unread:  # lost, not waiting
                    live["trimmed_unread"] = state.trimmed_unread
            edge["live"] = live
            edge["live_text"] = (
                f"pending {live['pending']}, lag {_lag(live['lag'])}"
                + (f", trimmed unread {live['trimmed_unread']}" if "trimmed_unread" in live else "")
                if live["group"]
                else "no group yet"
            )
            pending += live["pending"]
            if live["lag"] is None:
                known = False
            else:
                lag += live["lag"]
        data["live"] = {"pending": pending, "lag": lag if known else None}
        data["live_text"] = f"pending {pending}, lag {_lag(lag if known else None)}"
        data["detail"] = _append(data.get("detail", ""), data["live_text"])


def _lag(value: int | None) -> str:
    return "?" if value is None else str(value)


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
                await annotate_live(graph, ctd.client, ctd.conn)
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
