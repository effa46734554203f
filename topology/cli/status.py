"""``ponos-topology status CONFIG``: what the deployment's Redis says about it now.

Per sink and stream: the consumer group's consumers — live (read within the
sink's ack grace, or two blocking reads) apart from dead ones (a crashed
worker's, whose pending events wait to be claimed) — pending (delivered, not
acked) and lag (entries not yet delivered, ``?`` when the server cannot tell:
see ``topology.streams.group_lag``, which does not believe a lag Redis 7.0 can
misreport), entries trimmed away before the sink read them (lost to it, not
waiting), and the dead letters *this* sink wrote
(their ``sink`` field; several sinks may share one dead-letter stream, which is
read once, in pages, newest first, at most ``DEAD_SCAN_LIMIT`` entries: past
that a sink's count is of the newest ones, shown as ``N+``). A stateful sink
also shows its number of state keys (a ``SCAN``).
Per source: ended, failed, or which worker holds its lease. Per worker: id,
version, generation, the deployment version it runs (and the last one it
rejected, with why) and the age of its last heartbeat; the children of a
``run --workers`` pool are listed under their parent (host and pid). The Redis URL is shown
with its password masked, and the whole output is redacted once more before it
is printed: nothing a worker published can leak a password either.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from topology.observe import collect

__all__ = ["add_parser", "collect", "format_text", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from topology.cli._connection import add_connection_args

    parser = subparsers.add_parser(
        "status",
        help="pending, lag and dead letters per sink; heartbeats per worker",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("config", metavar="CONFIG", help="topology YAML file")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default: text)"
    )
    add_connection_args(parser)
    parser.set_defaults(func=run)
    return parser


def _lag(value: Any) -> str:
    return "?" if value is None else str(value)


def _trimmed(info: dict[str, Any]) -> str:
    """Entries trimmed away before the sink read them: lost to it, not waiting."""
    n = info.get("trimmed_unread")
    if not n:
        return ""
    n = info.get("trimmed_text") or n
    return f"  trimmed unread {n} ({info.get('trimmed_by', 'trimming')})"


def _group_lines(stream: str, info: dict[str, Any]) -> list[str]:
    live = sum(1 for c in info["consumers"] if c["live"])
    lines = [
        f"    {stream}: consumers {live} live, {len(info['consumers']) - live} dead"
        f"  pending {info['pending']}  lag {_lag(info['lag'])}  length {info['length']}"
        f"  last delivered {info['last_delivered_id']}{_trimmed(info)}"
    ]
    lines.extend(
        f"      dead consumer {c['name']}: pending {c['pending']}, idle {c['idle_ms'] / 1000:.0f}s"
        for c in info["consumers"]
        if not c["live"]
    )
    return lines


def format_text(data: dict[str, Any]) -> str:
    lines = [f"deployment {data['deployment']} on {data['redis']}", "sinks:"]
    if not data["sinks"]:
        lines.append("  (none)")
    for name, sink in data["sinks"].items():
        dead = sink["dead_letter"]
        dead_text = (
            f"  dead letters {dead['count']}"
            + ("+" if dead["counted"] < dead["length"] else "")
            + f" (of {dead['length']} in {dead['stream']})"
            if dead
            else ""
        )
        state = f"  state keys {sink['state_keys']}" if "state_keys" in sink else ""
        lines.append(f"  {name}  pending {sink['pending']}{dead_text}{state}")
        for stream, info in sink["streams"].items():
            if not info["exists"]:
                lines.append(f"    {stream}: no such stream yet")
            elif not info["group"]:
                lines.append(f"    {stream}: length {info['length']}, no consumer group yet")
            else:
                lines.extend(_group_lines(stream, info))
    if data["sources"]:
        lines.append("sources:")
        lines.extend(f"  {name}  {src['state']}" for name, src in data["sources"].items())
    lines.append("workers:")
    if not data["workers"]:
        lines.append("  (none)")
    pools: dict[tuple[str, Any], list[str]] = {}
    for wid, w in data["workers"].items():
        pool = w.get("pool")
        if isinstance(pool, dict):  # a child of `run --workers`: shown under its parent
            where = (str(pool.get("host", "?")), pool.get("parent_pid", "?"))
            pools.setdefault(where, []).append(
                f"    {_worker_line(wid, w)}  slot {pool.get('slot')}"
            )
        else:
            lines.append(f"  {_worker_line(wid, w)}")
    for (host, pid), children in pools.items():
        lines.append(f"  pool on {host}, parent pid {pid}: {len(children)} workers")
        lines.extend(children)
    return "\n".join(lines)


def _worker_line(wid: str, w: dict[str, Any]) -> str:
    state = "live" if w.get("live") else "stale"
    applied = w.get("deployment_version")
    config = f"  config v{applied}" if applied is not None else ""
    refused = w.get("deployment_rejected")
    if isinstance(refused, dict):
        config += f"  (v{refused.get('version')} rejected: {refused.get('reason')})"
    return (
        f"{wid}  version {w.get('version', '?')}  generation {w.get('generation', '?')}"
        f"{config}  beat {w.get('age', 0):.1f}s ago  {state}"
    )


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_OK, EXIT_USAGE
    from topology.cli._connection import load_config, run_command
    from topology.redact import redact_text

    topology = load_config(args.config)
    if topology is None:
        return EXIT_USAGE

    async def main() -> int:
        from topology.runtime.connect import open_redis

        async with open_redis(topology, cli_url=args.redis_url, data_dir=args.data_dir) as ctd:
            data = await collect(ctd.client, ctd.conn, topology, ctd.url_redacted)
        text = json.dumps(data, default=str) if args.format == "json" else format_text(data)
        sys.stdout.write(redact_text(text) + "\n")
        return EXIT_OK

    return run_command(main, "ponos-topology status")
