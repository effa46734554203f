"""``ponos-topology emit CONFIG STREAM NAME [PAYLOAD]``: add events to a stream of a config.

One event from the command line (PAYLOAD is UTF-8 text), or many with
``--file EVENTS.jsonl`` (``-`` for stdin): one JSON object per line,
``{"name": ..., "payload": ..., "topic": ...}``. A string payload is stored as
its UTF-8 bytes, anything else as compact JSON; ``"encoding": "base64"`` marks
a base64 payload (what ``tail --format json`` prints for binary payloads, so its
output can be emitted again; its ``id`` and ``stream`` keys are ignored). Blank
lines are skipped.

The whole file is checked before anything is added: one bad line means exit 2
with every bad line reported by number, and nothing written — never a file
half-added and half-silently skipped.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Iterable
from typing import IO, Any

__all__ = ["FILE_BATCH", "add_parser", "parse_events", "run"]

#: Events per pipelined round trip when adding a file.
FILE_BATCH = 1000
#: Bad lines listed before "... and N more".
_MAX_REPORTED = 20
_KEYS = {"name", "payload", "topic", "encoding"}
_IGNORED = {"id", "stream", "fields"}  # keys of `tail --format json` lines


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from topology.cli._connection import add_connection_args

    parser = subparsers.add_parser(
        "emit",
        help="add events to a stream of a config",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("config", metavar="CONFIG", help="topology YAML file")
    parser.add_argument("stream", metavar="STREAM", help="a stream of the config")
    parser.add_argument("name", metavar="NAME", nargs="?", help="event name")
    parser.add_argument("payload", metavar="PAYLOAD", nargs="?", help="payload text (UTF-8)")
    parser.add_argument("--topic", "-t", metavar="T", help="topic of the event(s)")
    parser.add_argument(
        "--file",
        "-f",
        metavar="EVENTS.jsonl",
        help='one {"name", "payload", "topic"} JSON object per line, "encoding": "base64" for '
        "a binary payload (as tail --format json prints it); - for stdin",
    )
    add_connection_args(parser)
    parser.set_defaults(func=run)
    return parser


def _payload_of(obj: dict[str, Any]) -> bytes:
    from topology.streams import encode_payload

    if "payload" not in obj:
        return b""
    payload = obj["payload"]
    if obj.get("encoding") == "base64":
        return base64.b64decode(payload, validate=True)
    return encode_payload(payload)


def parse_events(
    lines: Iterable[str], source: str, default_topic: str | None
) -> tuple[list[tuple[str, bytes, str | None]], list[str]]:
    """Every event of a JSON-lines file, and every problem as ``SOURCE:LINE: message``."""
    events: list[tuple[str, bytes, str | None]] = []
    problems: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            problems.append(f"{where}: invalid JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{where}: expected a JSON object, got {type(obj).__name__}")
            continue
        unknown = sorted(set(obj) - _KEYS - _IGNORED)
        if unknown:
            problems.append(
                f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                "expected name, payload, topic, encoding"
            )
            continue
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: 'name' must be a non-empty string")
            continue
        topic = obj.get("topic", default_topic)
        if topic is not None and not isinstance(topic, str):
            problems.append(f"{where}: 'topic' must be a string or null")
            continue
        encoding = obj.get("encoding", "utf-8")
        if encoding not in ("utf-8", "base64"):
            problems.append(f"{where}: 'encoding' must be 'utf-8' or 'base64'")
            continue
        if encoding == "base64" and not isinstance(obj.get("payload"), str):
            problems.append(f"{where}: a base64 'payload' must be a string")
            continue
        try:
            payload = _payload_of(obj)
        except (binascii.Error, ValueError) as exc:
            problems.append(f"{where}: invalid base64 payload: {exc}")
            continue
        events.append((name, payload, topic or None))
    return events, problems


def _read_lines(path: str) -> tuple[list[str], str]:
    if path == "-":
        return sys.stdin.read().splitlines(), "<stdin>"
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines(), path


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_OK, EXIT_USAGE
    from topology.cli._connection import known_stream, load_config, run_command

    prog = "ponos-topology emit"
    if args.file is not None and (args.name is not None or args.payload is not None):
        print(f"{prog}: error: give NAME [PAYLOAD] or --file, not both", file=sys.stderr)
        return EXIT_USAGE
    if args.file is None and args.name is None:
        print(f"{prog}: error: NAME is required (or --file EVENTS.jsonl)", file=sys.stderr)
        return EXIT_USAGE
    topology = load_config(args.config)
    if topology is None:
        return EXIT_USAGE
    if not known_stream(topology, args.stream, prog):
        return EXIT_USAGE

    if args.file is not None:
        try:
            lines, source = _read_lines(args.file)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"{prog}: error: cannot read {args.file}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        events, problems = parse_events(lines, source, args.topic)
        if problems:
            for problem in problems[:_MAX_REPORTED]:
                print(problem, file=sys.stderr)
            if len(problems) > _MAX_REPORTED:
                print(f"... and {len(problems) - _MAX_REPORTED} more", file=sys.stderr)
            print(f"{prog}: nothing added: {len(problems)} bad line(s)", file=sys.stderr)
            return EXIT_USAGE
    else:
        events = [(args.name, (args.payload or "").encode("utf-8"), args.topic or None)]

    async def main() -> int:
        from topology.runtime.connect import open_redis

        spec = topology.streams[args.stream]
        async with open_redis(topology, cli_url=args.redis_url, data_dir=args.data_dir) as ctd:
            stream = ctd.conn.stream(spec.name, max_len=spec.max_len, ttl=spec.ttl)
            if args.file is None:
                name, payload, topic = events[0]
                print(await stream.add(name, payload, topic=topic))
                return EXIT_OK
            last = await _add_all(stream, events, sys.stderr)
            suffix = f" (last id {last})" if last else ""
            print(f"added {len(events)} events to {args.stream}{suffix}")
            return EXIT_OK

    return run_command(main, prog)


async def _add_all(stream: Any, events: list[tuple[str, bytes, str | None]], err: IO[str]) -> str:
    """Add in pipelined batches; a progress line on a terminal. Returns the last id."""
    show = err.isatty() and len(events) > FILE_BATCH
    last = ""
    for start in range(0, len(events), FILE_BATCH):
        ids = await stream.add_many(events[start : start + FILE_BATCH])
        if ids:
            last = ids[-1]
        if show:
            done = min(start + FILE_BATCH, len(events))
            err.write(f"\remit: {done}/{len(events)} events ({100 * done // len(events)}%)")
            err.flush()
    if show:
        err.write("\n")
    return last
