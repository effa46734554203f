"""``ponos-topology apply CONFIG``: publish a config as its deployment, for every worker.

The file is validated exactly as ``validate`` does (exit 2 with one located
line per problem, and nothing published); a valid file is stored in Redis as
the deployment its ``name`` names, with a new version number, and announced.
Every ``run --deployment NAME`` worker, on any machine, reconciles to it.
Handlers are not shipped: each worker imports the ``module:attribute`` the
config names from its own ``--handlers-dir``. Publishing the text already
published is a no-op (same version, no announcement). With a deploy key
(``$PONOS_DEPLOY_KEY`` or ``--deploy-key-file``) the version is signed.
``--dry-run`` publishes nothing: it prints the plan from the current version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_deploy_key_arg", "add_parser", "run"]

EPILOG = """examples:
  PONOS_DEPLOY_KEY=... ponos-topology apply orders.yaml --redis-url redis://redis:6379/0
  ponos-topology apply orders.yaml --dry-run --redis-url redis://redis:6379/0
"""


def add_deploy_key_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deploy-key-file",
        type=Path,
        metavar="FILE",
        help="sign the version with the key in FILE (default: $PONOS_DEPLOY_KEY; none: unsigned)",
    )


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from topology.cli._connection import add_connection_args

    parser = subparsers.add_parser(
        "apply",
        help="publish the config as its deployment; run --deployment workers reconcile to it",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", metavar="CONFIG", help="topology YAML file")
    parser.add_argument("--strict", action="store_true", help="treat warnings as errors")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="publish nothing; print the plan from the current version to this file",
    )
    add_deploy_key_arg(parser)
    add_connection_args(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from topology.callables import Origins
    from topology.cli import EXIT_OK, EXIT_USAGE
    from topology.cli._connection import deploy_key, run_command
    from topology.config import check_text, read

    path = Path(args.config)
    text, problem = read(path)  # the config's size limit, before anything is parsed
    if text is None:
        print(problem, file=sys.stderr)
        return EXIT_USAGE
    key = deploy_key(args.deploy_key_file, "ponos-topology apply")
    # The text validated is the text published: no second read that could see another save.
    # Workers refuse standard-library callables unless allowed: say so before publishing.
    topology, problems = check_text(
        text, path=args.config, strict=args.strict, origins=Origins(warn_stdlib=True)
    )
    for problem in problems:
        print(problem, file=sys.stderr)
    if topology is None:
        return EXIT_USAGE

    async def main() -> int:
        from topology.runtime.connect import open_redis
        from topology.runtime.deployment import publish, read_published, sha256_of

        async with open_redis(topology, cli_url=args.redis_url, data_dir=args.data_dir) as ctd:
            if args.dry_run:
                return await _dry_run(ctd.client, topology, text)
            before = await read_published(ctd.client, topology.name)
            version, changed = await publish(
                ctd.client, topology.name, text, source=path.name, key=key
            )
        if changed and key is None and before is not None and before.signature:
            print(
                f"ponos-topology apply: warning: version {before.version} was signed and version"
                f" {version} is not: workers with a deploy key will refuse it",
                file=sys.stderr,
            )
        digest = sha256_of(text)[:12]
        signed = ", signed" if key is not None else ""
        if changed:
            print(f"applied {topology.name} version {version} (sha256 {digest}…{signed})")
        else:
            print(f"unchanged: {topology.name} is at version {version} (sha256 {digest}…)")
        return EXIT_OK

    return run_command(main, "ponos-topology apply")


async def _dry_run(client: Any, topology: Any, text: str) -> int:
    """Print what the workers would do if this text were published; publish nothing."""
    from topology.cli import EXIT_FAILURE, EXIT_OK
    from topology.config import check_text
    from topology.config.model import Topology
    from topology.plan import diff
    from topology.runtime.deployment import read_published, sha256_of

    current = await read_published(client, topology.name)
    if current is None:
        print(f"dry run: {topology.name} has no version yet; version 1 would start:")
        old = Topology.empty(topology.name)
    elif current.sha256 == sha256_of(text):
        print(f"dry run: {topology.name} version {current.version} already has this text")
        return EXIT_OK
    else:
        # Handlers are not imported: the plan compares declarations, as `plan` does.
        running, problems = check_text(current.text, path=current.source, import_callables=False)
        if running is None:
            print(
                f"ponos-topology apply: version {current.version} of {topology.name} does not"
                " validate here, so there is no plan against it:",
                file=sys.stderr,
            )
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return EXIT_FAILURE
        print(
            f"dry run: {topology.name} version {current.version} ({current.source}) ->"
            f" version {current.version + 1}:"
        )
        old = running
    plan = diff(old, topology)
    print(
        "\n".join(f"  {line}" for line in plan.describe()) if not plan.is_empty else "  no changes"
    )
    return EXIT_OK
