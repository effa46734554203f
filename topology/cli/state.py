"""``ponos-topology state CONFIG SINK [KEY]``: the keyed state of a stateful sink.

With KEY: that key's state (``{}`` for a key with none: what the handler would
get). Without: every key, found by ``SCAN`` and printed as it is found, so a
sink with a million keys starts printing at once and never sits in memory.
Text lines are ``<key> <state as JSON>``; ``--format json`` prints one JSON
object ``{key: state, ...}``. A scan is not a snapshot: a key changed while it
runs may show its state from before or after the change.
"""

from __future__ import annotations

import argparse
import json
import sys
from difflib import get_close_matches
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from topology.config.model import SinkSpec, Topology

__all__ = ["add_parser", "run"]

PROG = "ponos-topology state"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from topology.cli._connection import add_connection_args

    parser = subparsers.add_parser(
        "state", help="the keyed state of a stateful sink", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", metavar="CONFIG", help="topology YAML file")
    parser.add_argument("sink", metavar="SINK", help="a sink of the config with state")
    parser.add_argument("key", metavar="KEY", nargs="?", help="one state key (default: all)")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: one '<key> <state>' line per key (default); json: one object {key: state}",
    )
    add_connection_args(parser)
    parser.set_defaults(func=run)
    return parser


def _stateful_sink(topology: Topology, name: str) -> SinkSpec | None:
    """The sink ``name`` when it has state; else say why on stderr."""
    sink = topology.sinks.get(name)
    stateful = sorted(n for n, s in topology.sinks.items() if s.state is not None)
    if sink is not None and sink.state is not None:
        return sink
    if sink is not None:
        reason = f"sink {name!r} has no state"
    else:
        close = get_close_matches(name, list(topology.sinks), n=1)
        reason = f"unknown sink {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    print(
        f"{PROG}: error: {reason}; sinks with state: {', '.join(stateful) or 'none'}",
        file=sys.stderr,
    )
    return None


def _state(text: str | None) -> Any:
    return json.loads(text) if text else {}


def _line(key: str, text: str | None, fmt: str, first: bool) -> str:
    if fmt == "json":
        return ("{" if first else ",") + f"{json.dumps(key, ensure_ascii=False)}:{text or '{}'}"
    return f"{key} {json.dumps(_state(text), ensure_ascii=False)}"


async def _print_all(redis: Any, layout: Any, fmt: str) -> None:
    from topology.runtime.state import scan_states

    first = True
    async for batch in scan_states(redis, layout):
        for key, ks in batch:
            sys.stdout.write(_line(key, ks.text, fmt, first) + ("" if fmt == "json" else "\n"))
            first = False
        sys.stdout.flush()
    if fmt == "json":
        sys.stdout.write("{}\n" if first else "}\n")


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_OK, EXIT_USAGE
    from topology.cli._connection import load_config, run_command

    topology = load_config(args.config)
    if topology is None:
        return EXIT_USAGE
    sink = _stateful_sink(topology, args.sink)
    if sink is None:
        return EXIT_USAGE

    async def main() -> int:
        from topology.runtime.connect import open_redis
        from topology.runtime.state import read_states, state_layout

        async with open_redis(topology, cli_url=args.redis_url, data_dir=args.data_dir) as ctd:
            layout = state_layout(topology.name, sink, ctd.conn.stream_key)
            if args.key is None:
                await _print_all(ctd.client, layout, args.format)
                return EXIT_OK
            name = layout.name(args.key)
            text = (await read_states(ctd.client, [name]))[name].text
        if args.format == "json":
            sys.stdout.write(_line(args.key, text, "json", True) + "}\n")
        else:
            sys.stdout.write(json.dumps(_state(text), ensure_ascii=False) + "\n")
        return EXIT_OK

    return run_command(main, PROG)
