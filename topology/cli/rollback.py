"""``ponos-topology rollback NAME [--to VERSION]``: publish an earlier version as the next one.

The text of VERSION (default: the version before the current one) is
published again with a new number, so workers reconcile to it like to any
``apply`` and ``history`` shows what happened (``rollback to 3``). Nothing is
rewritten: rolling back a rollback is another rollback.

A signed deployment stays signed: with a deploy key (``$PONOS_DEPLOY_KEY`` or
``--deploy-key-file``) the old version must verify under it before it is
signed again under its new number (a text written into the history by someone
without the key is not laundered into a signed version); without a key, a
signed deployment is not rolled back at all.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from topology.cli.apply import add_deploy_key_arg
    from topology.cli.history import add_deployment_args

    parser = subparsers.add_parser(
        "rollback",
        help="re-publish an earlier version of a deployment as its next version",
        description=__doc__.splitlines()[0],
    )
    add_deployment_args(parser)
    parser.add_argument(
        "--to",
        type=int,
        metavar="VERSION",
        help="the version to go back to (default: the one before the current)",
    )
    add_deploy_key_arg(parser)
    parser.set_defaults(func=run)
    return parser


def _refusal(target: Any, current: Any, key: Any) -> str | None:
    """Why ``target`` may not be published again with ``key`` (None: it may)."""
    if key is None:
        if target.signature or current.signature:
            return (
                f"{target.deployment} is signed: a rollback is a new version and needs the"
                " deploy key ($PONOS_DEPLOY_KEY or --deploy-key-file)"
            )
        return None
    if not target.verified_by(key):
        return (
            f"version {target.version} does not verify with this deploy key (unsigned, altered,"
            " or another key's): not signing it again; apply its file instead"
        )
    return None


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_OK, EXIT_USAGE
    from topology.cli._connection import deploy_key, deployment_url_missing, run_command

    prog = "ponos-topology rollback"
    if args.to is not None and args.to < 1:
        print(f"{prog}: --to must be a version number >= 1", file=sys.stderr)
        return EXIT_USAGE
    key = deploy_key(args.deploy_key_file, prog)
    if deployment_url_missing(args.redis_url, prog):
        return EXIT_USAGE

    async def main() -> int:
        from topology.config.model import Topology
        from topology.runtime.connect import open_redis
        from topology.runtime.deployment import publish, read_published, read_version

        async with open_redis(Topology.empty(args.name), cli_url=args.redis_url) as ctd:
            current = await read_published(ctd.client, args.name)
            if current is None:
                print(f"{prog}: deployment {args.name!r} has no published version", file=sys.stderr)
                return EXIT_USAGE
            wanted = args.to if args.to is not None else current.version - 1
            target = await read_version(ctd.client, args.name, wanted) if wanted >= 1 else None
            if target is None or wanted >= current.version:
                print(
                    f"{prog}: {args.name} has no earlier version {wanted} to go back to"
                    f" (current: {current.version}; see ponos-topology history {args.name})",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            refusal = _refusal(target, current, key)
            if refusal is not None:
                print(f"{prog}: {refusal}", file=sys.stderr)
                return EXIT_USAGE
            version, changed = await publish(
                ctd.client,
                args.name,
                target.text,
                source=target.source,
                key=key,
                note=f"rollback to {target.version}",
            )
        if changed:
            print(
                f"rolled back {args.name} to version {target.version}: published as version"
                f" {version} (sha256 {target.sha256[:12]}…)"
            )
        else:
            print(f"unchanged: {args.name} version {version} already has version {wanted}'s text")
        return EXIT_OK

    return run_command(main, prog)
