"""``ponos-topology graph CONFIG [--format mermaid|dot|json] [-o FILE]``: draw a topology.

No Redis needed: the diagram comes from the config alone, through the same
graph the runtime plans from (``topology.graph``). An invalid config exits 2
with the loader's located problems, one per line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

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
    parser.set_defaults(func=run)
    return parser


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
    text = render(build(topology), args.format)
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
