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


#: Entries per XREVRANGE while counting dead letters per sink, and the most read:
#: past it the counts are of the newest entries only (``status`` stays quick).
_DEAD_PAGE = 1000
DEAD_SCAN_LIMIT = 100_000


def _live_after_ms(ack_grace: float) -> int:
    """Idle time past which a consumer counts as dead: it has not even tried to read."""
    from topology.runtime.actor import READ_BLOCK

    return int(max(ack_grace, 2 * READ_BLOCK) * 1000)


async def _group_info(client: Any, conn: Any, key: str, group: str, live_ms: int) -> dict[str, Any]:
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
                "live": int(_get(c, "idle") or 0) <= live_ms,
            }
            for c in consumers
        ]
    return out


async def _dead_letters_by_sink(client: Any, key: str) -> tuple[dict[str, int], int]:
    """Entries of a dead-letter stream per the ``sink`` that wrote them ("" when none did),
    over its newest ``DEAD_SCAN_LIMIT`` entries; and the stream's length."""
    counts: dict[str, int] = {}
    upper, read = "+", 0
    while read < DEAD_SCAN_LIMIT:
        page = min(_DEAD_PAGE, DEAD_SCAN_LIMIT - read)
        entries = await client.xrevrange(key, max=upper, min="-", count=page)
        for _, fields in entries:
            sink = _s(fields.get(b"sink", fields.get("sink", b"")))
            counts[sink] = counts.get(sink, 0) + 1
        read += len(entries)
        if len(entries) < page:
            break
        upper = f"({_s(entries[-1][0])}"
    length = await client.xlen(key) if read >= DEAD_SCAN_LIMIT else read
    return counts, int(length)


async def collect(client: Any, conn: Any, topology: Any, url_redacted: str) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the JSON output)."""
    from topology.runtime.keys import EngineKeys
    from topology.runtime.state import count_states, state_layout
    from topology.runtime.workers import read_workers

    keys = EngineKeys(topology.name)
    sinks: dict[str, Any] = {}
    dead_counts: dict[str, tuple[dict[str, int], int]] = {}  # per dead-letter stream, read once
    for name, sink in sorted(topology.sinks.items()):
        live_ms = _live_after_ms(sink.ack_grace)
        streams = {
            s: await _group_info(client, conn, conn.stream_key(s), name, live_ms)
            for s in sink.stream_names
        }
        for s, info in streams.items():
            if info.get("trimmed_unread"):
                spec = topology.streams.get(s)
                info["trimmed_by"] = (spec.trimmed_by if spec else "") or "trimmed elsewhere"
        dead = None
        if sink.dead_letter:
            if sink.dead_letter not in dead_counts:
                dlq_key = conn.stream_key(sink.dead_letter)
                dead_counts[sink.dead_letter] = await _dead_letters_by_sink(client, dlq_key)
            per_sink, length = dead_counts[sink.dead_letter]
            dead = {
                "stream": sink.dead_letter,
                "count": per_sink.get(name, 0),
                "length": length,
                "counted": sum(per_sink.values()),  # < length: the newest ones only
            }
        sinks[name] = {
            "streams": streams,
            "pending": sum(s.get("pending", 0) for s in streams.values()),
            "dead_letter": dead,
        }
        if sink.state is not None:
            layout = state_layout(topology.name, sink, conn.stream_key)
            sinks[name]["state_keys"] = await count_states(client, layout)
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
