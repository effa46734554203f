"""``ponos-topology history NAME``: the versions ``apply`` published for a deployment.

One line per version kept (the last 50), oldest first: number, when it was
published (Redis server time, UTC), the sha256 of its text, the file it was
applied from, whether it is signed, and what it was (``rollback to 3``). The
current version is marked ``*``. Needs a Redis URL (``--redis-url`` or
``$REDIS_URL``): a deployment has no config file beside which an embedded
server would live.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from typing import Any

__all__ = ["add_parser", "run"]


def add_deployment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the deployment (the config's name)")
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        default=None,
        help="redis://, rediss:// or unix:// URL of the deployment (default: $REDIS_URL)",
    )


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "history",
        help="list a deployment's published versions (number, time, sha256, file)",
        description=__doc__.splitlines()[0],
    )
    add_deployment_args(parser)
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default: text)"
    )
    parser.set_defaults(func=run)
    return parser


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def format_text(versions: list[Any], current: int) -> str:
    lines = []
    for v in versions:
        mark = "*" if v.version == current else " "
        signed = "signed" if v.signature else "unsigned"
        note = f"  {v.note}" if v.note else ""
        lines.append(
            f"{mark} {v.version:>5}  {_when(v.applied_at)}  {v.sha256[:12]}  {v.source}"
            f"  {signed}{note}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_OK, EXIT_USAGE
    from topology.cli._connection import deployment_url_missing, run_command

    prog = "ponos-topology history"
    if deployment_url_missing(args.redis_url, prog):
        return EXIT_USAGE

    async def main() -> int:
        from topology.config.model import Topology
        from topology.runtime.connect import open_redis
        from topology.runtime.deployment import history

        async with open_redis(Topology.empty(args.name), cli_url=args.redis_url) as ctd:
            versions = await history(ctd.client, args.name)
        if not versions:
            print(f"{prog}: deployment {args.name!r} has no published version", file=sys.stderr)
            return EXIT_USAGE
        current = versions[-1].version
        if args.format == "json":
            rows = [
                {
                    "version": v.version,
                    "applied_at": v.applied_at,
                    "sha256": v.sha256,
                    "source": v.source,
                    "signed": bool(v.signature),
                    "note": v.note,
                    "current": v.version == current,
                }
                for v in versions
            ]
            print(json.dumps(rows, indent=2))
        else:
            print(format_text(versions, current))
        return EXIT_OK

    return run_command(main, prog)
