"""``ponos-topology plan OLD NEW [--format text|json]``: what a reload from OLD to NEW changes.

The lines are those the hot reload logs when it applies the same plan
(``topology.plan.diff``), so ``plan`` is a dry run of a reload: streams each
sink starts or stops reading, sinks added, removed or rescaled, fields that
restart a sink's actors, and changes a reload cannot apply. Exit 0 whatever
the plan (``no changes`` when there are none); 2 when either config is invalid.
Handler modules are imported and compared by content: "handler code changed"
when the files differ (the configs in two folders, or a module edited since).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plan",
        help="show what reloading from OLD to NEW would change; no Redis needed",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("old", metavar="OLD", help="the config running now")
    parser.add_argument("new", metavar="NEW", help="the config to reload to")
    parser.add_argument(
        "--format",
        "-f",
        choices=("text", "json"),
        default="text",
        help="output format (default: text)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_OK, EXIT_USAGE
    from topology.config import ConfigError, load
    from topology.plan import diff

    topologies = []
    failed = False
    for path in (args.old, args.new):  # report both files' problems, not just the first
        try:
            topologies.append(load(path))
        except ConfigError as exc:
            failed = True
            for problem in exc.problems:
                print(problem, file=sys.stderr)
    if failed:
        return EXIT_USAGE
    plan = diff(*topologies)
    if args.format == "json":
        print(json.dumps(plan.to_json(), indent=2, ensure_ascii=False))
    elif plan.is_empty:
        print("no changes")
    else:
        print("\n".join(plan.describe()))
    return EXIT_OK
