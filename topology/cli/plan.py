"""``ponos-topology plan OLD NEW [--format text|json]``: what a reload from OLD to NEW changes.

The lines are those the hot reload logs when it applies the same plan
(``topology.plan.diff``), so ``plan`` is a dry run of a reload: streams each
sink starts or stops reading, sinks added, removed or rescaled, fields that
restart a sink's actors, and changes a reload cannot apply. Exit 0 whatever
the plan (``no changes`` when there are none); 2 when either config is invalid.
With ``--exit-code`` (for CI gates): 0 when nothing changes, 3 when something does.
Handler modules are imported and compared by content: "handler code changed"
when the files differ (the configs in two folders, or a module edited since).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["EXIT_CHANGES", "add_parser", "run"]

#: ``plan --exit-code`` when reloading would change something (``git diff --exit-code`` style).
EXIT_CHANGES = 3


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
    parser.add_argument(
        "--exit-code",
        action="store_true",
        help=f"exit 0 when the plan is empty, {EXIT_CHANGES} when it changes something",
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
    return EXIT_CHANGES if args.exit_code and not plan.is_empty else EXIT_OK
