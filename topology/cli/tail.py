"""``ponos-topology tail CONFIG STREAM``: print the events of a stream of a config.

Text lines are ``<id> <topic or -> <name> <payload>``: the payload as text when
it is printable UTF-8, JSON-quoted when it holds control characters (one event
stays one line), ``b'...'`` when it is not UTF-8. ``--format json`` prints one
object per line: ``stream``, ``id``, ``name``, ``topic``, ``payload`` (text, or
base64 with ``"encoding": "base64"``) — lines that ``emit --file`` takes back.

``--from`` defaults to ``oldest`` (``newest`` with ``--follow``); an entry id
starts *at* that entry. Without ``--follow`` it stops at the end of the stream
as it was when ``tail`` started; ``-n N`` stops after N events.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from typing import Any

__all__ = ["add_parser", "format_json", "format_text", "run", "start_position"]

_ID = re.compile(r"(\d+)(?:-(\d+))?")
_MAX_SEQ = 18446744073709551615
#: Seconds a read may wait: short when printing what is there, long when following.
_DRAIN_BLOCK = 0.2
_FOLLOW_BLOCK = 5.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from topology.cli._connection import add_connection_args

    parser = subparsers.add_parser(
        "tail", help="print the events of a stream", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", metavar="CONFIG", help="topology YAML file")
    parser.add_argument("stream", metavar="STREAM", help="a stream of the config")
    parser.add_argument(
        "--from",
        dest="start",
        metavar="oldest|newest|ID",
        default=None,
        help="where to start: oldest, newest, an entry id (included), after:ID or at:TIME "
        "(default: oldest, or newest with --follow)",
    )
    parser.add_argument("-n", type=int, metavar="N", default=None, help="stop after N events")
    parser.add_argument("--follow", "-F", action="store_true", help="wait for new events")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per event that emit --file takes back (default: text)",
    )
    parser.add_argument("--topic", "-t", metavar="T", help="only events of topic T")
    add_connection_args(parser)
    parser.set_defaults(func=run)
    return parser


def start_position(value: str) -> str:
    """A library start position; a bare entry id means *from* it, so the one before."""
    match = _ID.fullmatch(value)
    if match is None:
        return value  # oldest, newest, after:..., at:... (checked by the library)
    ms, seq = int(match[1]), int(match[2] or 0)
    if ms > _MAX_SEQ or seq > _MAX_SEQ:
        raise ValueError(f"invalid entry id {value!r}: its parts are at most {_MAX_SEQ}")
    if seq > 0:
        return f"after:{ms}-{seq - 1}"
    if ms > 0:
        return f"after:{ms - 1}-{_MAX_SEQ}"
    return "oldest"


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _payload_text(payload: bytes) -> str:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return repr(payload)
    return text if text.isprintable() else json.dumps(text, ensure_ascii=False)


def format_text(event: Any) -> str:
    return f"{event.id} {event.topic or '-'} {event.name} {_payload_text(event.payload)}"


def format_json(event: Any) -> str:
    out: dict[str, Any] = {
        "stream": event.stream_name,
        "id": event.id,
        "name": event.name,
        "topic": event.topic,
    }
    try:
        out["payload"] = event.payload.decode("utf-8")
    except UnicodeDecodeError:
        out["payload"] = base64.b64encode(event.payload).decode("ascii")
        out["encoding"] = "base64"
    return json.dumps(out, ensure_ascii=False)


async def _last_id(client: Any, key: str) -> str | None:
    entries = await client.xrevrange(key, count=1)
    if not entries:
        return None
    raw = entries[0][0]
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from topology.cli import EXIT_OK, EXIT_USAGE
    from topology.cli._connection import known_stream, load_config, run_command
    from topology.streams import parse_start

    prog = "ponos-topology tail"
    if args.n is not None and args.n < 1:
        print(f"{prog}: error: -n must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        start = start_position(args.start or ("newest" if args.follow else "oldest"))
        parse_start(start)
    except ValueError as exc:
        print(f"{prog}: error: --from: {exc}", file=sys.stderr)
        return EXIT_USAGE
    topology = load_config(args.config)
    if topology is None:
        return EXIT_USAGE
    if not known_stream(topology, args.stream, prog):
        return EXIT_USAGE
    fmt = format_json if args.format == "json" else format_text

    async def main() -> int:
        from topology.runtime.connect import open_redis

        async with open_redis(topology, cli_url=args.redis_url, data_dir=args.data_dir) as ctd:
            stream = ctd.conn.stream(args.stream)
            end = None if args.follow else await _last_id(ctd.client, stream.key)
            if not args.follow and (end is None or start == "newest"):
                return EXIT_OK  # nothing between the start and the end
            block = _FOLLOW_BLOCK if args.follow else _DRAIN_BLOCK
            reader = await stream.new_reader(start=start, block=block, count=1000)
            printed = 0
            async with reader:
                while True:
                    if args.follow:
                        batch = await reader.read_batch()
                    else:
                        try:  # nothing within a block: the end was trimmed away
                            batch = await asyncio.wait_for(reader.read_batch(), block * 5)
                        except asyncio.TimeoutError:
                            return EXIT_OK
                    for event in batch:
                        if end is not None and _id_key(event.id) > _id_key(end):
                            return EXIT_OK
                        if args.topic is None or event.topic == args.topic:
                            sys.stdout.write(fmt(event) + "\n")
                            printed += 1
                            if args.n is not None and printed >= args.n:
                                sys.stdout.flush()
                                return EXIT_OK
                        if end is not None and event.id == end:
                            return EXIT_OK
                    sys.stdout.flush()
            return EXIT_OK

    return run_command(main, prog)
