"""``ponos-topology replay CONFIG DLQ_STREAM``: dead letters back to their streams, each once.

Every dead letter of DLQ_STREAM (those of ``--filter-error TYPE`` only, when
given) is added again — its name, payload and topic, without the dead-letter
fields — to the stream it came from (``origin_stream``), or to ``--to
STREAM``, and removed from DLQ_STREAM in the same server-side step (a Lua
script): killed and run again, a replay never adds an event twice. Every sink
that reads the target stream receives the event again, under a new entry id.
``--dry-run`` counts what would move and changes nothing. Dead letters without
an origin (and no ``--to``), or whose origin is not a stream of the config,
stay where they are and are counted. On Redis Cluster, a target stream in
another hash slot than DLQ_STREAM is refused (exit 1, nothing of it moved).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "format_result", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from topology.cli._connection import add_connection_args

    parser = subparsers.add_parser(
        "replay",
        help="move dead letters back to their origin stream, exactly once",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("config", metavar="CONFIG", help="topology YAML file")
    parser.add_argument("dead_letter", metavar="DLQ_STREAM", help="a dead-letter stream")
    parser.add_argument("--to", metavar="STREAM", help="add them to STREAM instead of their origin")
    parser.add_argument(
        "--filter-error",
        metavar="TYPE",
        help="only dead letters whose error_type is TYPE (e.g. ValueError)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what would be replayed; change nothing"
    )
    add_connection_args(parser)
    parser.set_defaults(func=run)
    return parser


def format_result(result: Any, dead_letter: str, dry_run: bool) -> list[str]:
    verb = "would replay" if dry_run else "replayed"
    per = ", ".join(f"{stream} {count}" for stream, count in sorted(result.moved.items()))
    noun = "dead letter" if result.total == 1 else "dead letters"
    lines = [f"{verb} {result.total} {noun} from {dead_letter}" + (f": {per}" if per else "")]
    lines += [f"left {count}: {reason}" for reason, count in sorted(result.skipped.items())]
    lines += [f"refused {stream}: {why}" for stream, why in sorted(result.refused.items())]
    return lines


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
    from topology.cli._connection import known_stream, load_config, run_command

    prog = "ponos-topology replay"
    topology = load_config(args.config)
    if topology is None:
        return EXIT_USAGE
    for name in (args.dead_letter, args.to):
        if name is not None and not known_stream(topology, name, prog):
            return EXIT_USAGE
    if args.to == args.dead_letter:
        print(
            f"{prog}: error: --to must be another stream than {args.dead_letter}", file=sys.stderr
        )
        return EXIT_USAGE

    async def main() -> int:
        from topology.runtime.connect import open_redis
        from topology.runtime.replay import replay

        async with open_redis(topology, cli_url=args.redis_url, data_dir=args.data_dir) as ctd:
            result = await replay(
                ctd.conn,
                args.dead_letter,
                topology.streams,
                to=args.to,
                error_type=args.filter_error,
                dry_run=args.dry_run,
            )
        for line in format_result(result, args.dead_letter, args.dry_run):
            print(line)
        return EXIT_FAILURE if result.refused else EXIT_OK

    return run_command(main, prog)
