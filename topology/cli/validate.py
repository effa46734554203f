"""``ponos-topology validate CONFIG [--strict] [--format text|json]``: check a config without Redis.

Exit 0 with ``ok: N streams, N sinks, N actors`` on stdout (warnings on
stderr), or exit 2 with one ``FILE:LINE:COL: PATH: message`` line per problem on
stderr — the format editors and CI annotations jump to. ``--format json``
prints instead, on stdout, one JSON list of every problem (empty when there is
none): ``{"file", "line", "column", "path", "severity", "message"}``; the exit
code is the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "validate",
        help="check a config file (schema, names, handlers, cycles); no Redis needed",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("config", metavar="CONFIG", help="topology YAML file")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="treat warnings as errors; also warn about handlers from the standard library",
    )
    parser.add_argument(
        "--format",
        "-f",
        choices=("text", "json"),
        default="text",
        help="text: one FILE:LINE:COL line per problem on stderr; json: a list of "
        "{file, line, column, path, severity, message} on stdout (default: text)",
    )
    parser.set_defaults(func=run)
    return parser


def _as_json(problem: Any) -> dict[str, Any]:
    return {
        "file": problem.file,
        "line": problem.line,
        "column": problem.col,
        "path": problem.path,
        "severity": problem.severity,
        "message": problem.message,
    }


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def run(args: argparse.Namespace) -> int:
    from topology.callables import Origins
    from topology.cli import EXIT_OK, EXIT_USAGE
    from topology.config import check

    # --strict also flags what a deployment would refuse: handlers from the standard library.
    origins = Origins(warn_stdlib=True) if args.strict else None
    topology, problems = check(args.config, strict=args.strict, origins=origins)
    if args.format == "json":
        print(json.dumps([_as_json(p) for p in problems], indent=2, ensure_ascii=False))
        return EXIT_USAGE if topology is None else EXIT_OK
    for problem in problems:
        print(problem, file=sys.stderr)
    if topology is None:
        return EXIT_USAGE
    print(
        f"ok: {_plural(len(topology.streams), 'stream')}, {_plural(len(topology.sinks), 'sink')},"
        f" {_plural(topology.actor_count(), 'actor')}"
    )
    return EXIT_OK
