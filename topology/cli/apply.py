"""``ponos-topology apply CONFIG``: publish a config as its deployment, for every worker.

The file is validated exactly as ``validate`` does (exit 2 with one located
line per problem, and nothing published); a valid file is stored in Redis as
the deployment its ``name`` names, with a new version number, and announced.
Every ``run --deployment NAME`` worker, on any machine, reconciles to it.
Handlers are not shipped: each worker imports the ``module:attribute`` the
config names from its own ``--handlers-dir``. Publishing the text already
published is a no-op (same version, no announcement).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from topology.cli._connection import add_connection_args

    parser = subparsers.add_parser(
        "apply",
        help="publish the config as its deployment; run --deployment workers reconcile to it",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("config", metavar="CONFIG", help="topology YAML file")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    add_connection_args(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_OK, EXIT_USAGE
    from topology.cli._connection import run_command
    from topology.config import check_text, read

    path = Path(args.config)
    text, problem = read(path)  # the config's size limit, before anything is parsed
    if text is None:
        print(problem, file=sys.stderr)
        return EXIT_USAGE
    # The text validated is the text published: no second read that could see another save.
    topology, problems = check_text(text, path=args.config, strict=args.strict)
    for problem in problems:
        print(problem, file=sys.stderr)
    if topology is None:
        return EXIT_USAGE

    async def main() -> int:
        from topology.runtime.connect import open_redis
        from topology.runtime.deployment import publish, sha256_of

        async with open_redis(topology, cli_url=args.redis_url, data_dir=args.data_dir) as ctd:
            version, changed = await publish(ctd.client, topology.name, text, source=path.name)
        digest = sha256_of(text)[:12]
        if changed:
            print(f"applied {topology.name} version {version} (sha256 {digest}…)")
        else:
            print(f"unchanged: {topology.name} is at version {version} (sha256 {digest}…)")
        return EXIT_OK

    return run_command(main, "ponos-topology apply")
