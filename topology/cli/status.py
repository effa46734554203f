"""``ponos-topology status CONFIG``: what the deployment's Redis says about it now.

Per sink and stream: the consumer group's consumers, pending (delivered, not
acked) and lag (entries not yet delivered, ``?`` when the server cannot tell:
see ``topology.streams.group_lag``, which does not believe a lag Redis 7.0 can
misreport), entries trimmed away before the sink read them (lost to it, not
waiting), and the length of its dead-letter stream.
Per source: ended, failed, or which worker holds its lease. Per worker: id,
version, generation, the deployment version it runs (and the last one it
rejected, with why) and the age of its last heartbeat. The Redis URL is shown
with its password masked, and the whole output is redacted once more before it
is printed: nothing a worker published can leak a password either.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

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


def _s(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _get(info: dict[Any, Any], key: str) -> Any:
    return _s(info.get(key, info.get(key.encode())))


async def _group_info(client: Any, conn: Any, key: str, group: str) -> dict[str, Any]:
    from redis.exceptions import ResponseError

    from topology.streams import read_group_lag

    out: dict[str, Any] = {"exists": True, "length": await client.xlen(key), "group": False}
    if out["length"] == 0 and not await client.exists(key):
        return {"exists": False, "length": 0, "group": False}
    try:
        groups = await client.xinfo_groups(key)
        state = await read_group_lag(conn, key, group)
    except ResponseError:
        return out
    for info in groups:
        if _get(info, "name") != group:
            continue
        out.update(
            group=True,
            pending=int(_get(info, "pending") or 0),
            lag=None if state is None else state.lag,
            last_delivered_id=_get(info, "last-delivered-id"),
            trimmed_unread=None if state is None else state.trimmed_unread,
        )
        consumers = await client.xinfo_consumers(key, group)
        out["consumers"] = [
            {
                "name": _get(c, "name"),
                "pending": int(_get(c, "pending") or 0),
                "idle_ms": int(_get(c, "idle") or 0),
            }
            for c in consumers
        ]
    return out


async def collect(client: Any, conn: Any, topology: Any, url_redacted: str) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the JSON output)."""
    from topology.runtime.keys import EngineKeys
    from topology.runtime.workers import read_workers

    keys = EngineKeys(topology.name)
    sinks: dict[str, Any] = {}
    for name, sink in sorted(topology.sinks.items()):
        streams = {
            s: await _group_info(client, conn, conn.stream_key(s), name) for s in sink.stream_names
        }
        for s, info in streams.items():
            if info.get("trimmed_unread"):
                spec = topology.streams.get(s)
                info["trimmed_by"] = (spec.trimmed_by if spec else "") or "trimmed elsewhere"
        dead = None
        if sink.dead_letter:
            dead = {
                "stream": sink.dead_letter,
                "length": await client.xlen(conn.stream_key(sink.dead_letter)),
            }
        sinks[name] = {
            "streams": streams,
            "pending": sum(s.get("pending", 0) for s in streams.values()),
            "dead_letter": dead,
        }
    sources: dict[str, Any] = {}
    for name in sorted(topology.sources):
        state = {_s(k): _s(v) for k, v in (await client.hgetall(keys.source_state(name))).items()}
        holder = _s(await client.get(keys.source_lease(name)))
        if "failed" in state:
            summary = f"failed: {state['failed']}"
        elif "done" in state:
            summary = f"ended ({state.get('produced', '?')} events)"
        elif holder:
            summary = f"running on {holder}"
        else:
            summary = "not running"
        sources[name] = {"state": summary, "lease": holder, **state}
    workers = await read_workers(client, topology.name)
    return {
        "deployment": topology.name,
        "redis": url_redacted,
        "sinks": sinks,
        "sources": sources,
        "workers": {w: workers[w] for w in sorted(workers)},
    }


def _trimmed(info: dict[str, Any]) -> str:
    """Entries trimmed away before the sink read them: lost to it, not waiting."""
    n = info.get("trimmed_unread")
    if not n:
        return ""
    return f"  trimmed unread {n} ({info.get('trimmed_by', 'trimming')})"


def _lag(value: Any) -> str:
    return "?" if value is None else str(value)


def format_text(data: dict[str, Any]) -> str:
    lines = [f"deployment {data['deployment']} on {data['redis']}", "sinks:"]
    if not data["sinks"]:
        lines.append("  (none)")
    for name, sink in data["sinks"].items():
        dead = sink["dead_letter"]
        dead_text = f"  dead letters {dead['length']} ({dead['stream']})" if dead else ""
        lines.append(f"  {name}  pending {sink['pending']}{dead_text}")
        for stream, info in sink["streams"].items():
            if not info["exists"]:
                lines.append(f"    {stream}: no such stream yet")
            elif not info["group"]:
                lines.append(f"    {stream}: length {info['length']}, no consumer group yet")
            else:
                lines.append(
                    f"    {stream}: consumers {len(info['consumers'])}  pending {info['pending']}"
                    f"  lag {_lag(info['lag'])}  length {info['length']}"
                    f"  last delivered {info['last_delivered_id']}{_trimmed(info)}"
                )
    if data["sources"]:
        lines.append("sources:")
        lines.extend(f"  {name}  {src['state']}" for name, src in data["sources"].items())
    lines.append("workers:")
    if not data["workers"]:
        lines.append("  (none)")
    for wid, w in data["workers"].items():
        state = "live" if w.get("live") else "stale"
        applied = w.get("deployment_version")
        config = f"  config v{applied}" if applied is not None else ""
        refused = w.get("deployment_rejected")
        if isinstance(refused, dict):
            config += f"  (v{refused.get('version')} rejected: {refused.get('reason')})"
        lines.append(
            f"  {wid}  version {w.get('version', '?')}  generation {w.get('generation', '?')}"
            f"{config}  beat {w.get('age', 0):.1f}s ago  {state}"
        )
    return "\n".join(lines)


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
