"""``ponos-topology tail CONFIG STREAM``: print the events of a stream of a config.

Text lines are ``<id> <topic or -> <name> <payload>``: the payload as text when
it is printable UTF-8, JSON-quoted when it holds control characters (one event
stays one line), ``b'...'`` when it is not UTF-8. An event's extra entry fields
(those beside pulse's name, payload and topic: a dead letter's
``origin_stream``, ``origin_id``, ``sink``, ``attempts``, ``error_type`` and
``error``) follow as `` | key=value ...``, a value JSON-quoted when it is empty
or holds a space, a quote, ``|``, ``=`` or a control character. ``--format json``
prints one object per line: ``stream``, ``id``, ``name``, ``topic``, ``payload``
(text, or base64 with ``"encoding": "base64"``) and ``fields`` (the extra
fields, when there are any) — lines that ``emit --file`` takes back (it
ignores ``fields``).

``-n N`` alone shows the last N events (those of ``--topic`` when given), like
Unix ``tail``; with ``--follow`` it then waits for new ones. ``--from`` sets
where reading starts (``oldest`` by default, ``newest`` with ``--follow``; an
entry id starts *at* that entry); with ``--from`` other than ``newest``, ``-n N``
stops after N events from there. Without ``--follow`` it stops at the end of
the stream as it was when ``tail`` started.
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
#: Entries per XREVRANGE while looking back for the last N events.
_BACK_PAGE = 500


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
    parser.add_argument(
        "-n",
        type=int,
        metavar="N",
        default=None,
        help="the last N events (with --from other than newest: the first N from there)",
    )
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


def _text(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return repr(raw)
    return text if text.isprintable() else json.dumps(text, ensure_ascii=False)


def _field_value(raw: bytes) -> str:
    """A field value that cannot be mistaken for the next ``key=value``: quoted when needed."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return repr(raw)
    if text and text.isprintable() and not any(c in text for c in ' "|='):
        return text
    return json.dumps(text, ensure_ascii=False)


def format_text(event: Any) -> str:
    line = f"{event.id} {event.topic or '-'} {event.name} {_text(event.payload)}"
    if event.fields:
        extra = " ".join(f"{_text(k)}={_field_value(v)}" for k, v in event.fields.items())
        line += f" | {extra}"
    return line


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
    if event.fields:
        out["fields"] = {
            k.decode("utf-8", "backslashreplace"): v.decode("utf-8", "backslashreplace")
            for k, v in event.fields.items()
        }
    return json.dumps(out, ensure_ascii=False)


def _decoded(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def _last_id(client: Any, key: str) -> str | None:
    entries = await client.xrevrange(key, count=1)
    return _decoded(entries[0][0]) if entries else None


def _flat(fields: Any) -> list[Any]:
    if isinstance(fields, dict):
        return [x for pair in fields.items() for x in pair]
    return list(fields)


async def _start_of_last(
    client: Any, key: str, stream: str, end: str, n: int, topic: str | None
) -> str:
    """The start position whose reading yields the last ``n`` events up to ``end``."""
    from topology.streams import decode_entry

    upper, seen = end, 0
    while True:
        entries = await client.xrevrange(key, max=upper, min="-", count=_BACK_PAGE)
        for raw_id, fields in entries:
            entry_id = _decoded(raw_id)
            if topic is not None and decode_entry(_flat(fields), stream, entry_id)[2] != topic:
                continue
            seen += 1
            if seen == n:
                return start_position(entry_id)
        if len(entries) < _BACK_PAGE:
            return "oldest"  # fewer than n: all of them
        upper = f"({_decoded(entries[-1][0])}"


class _Printer:
    """Writes matching events; says when the run is over (limit or end reached)."""

    def __init__(self, args: argparse.Namespace, end: str | None, limit: int | None) -> None:
        self.fmt = format_json if args.format == "json" else format_text
        self.topic = args.topic
        self.end = end
        self.limit = limit
        self.printed = 0

    def batch(self, events: Any) -> bool:
        """Print ``events``; True once nothing more is to be printed."""
        try:
            for event in events:
                if self.end is not None and _id_key(event.id) > _id_key(self.end):
                    return True
                if self.topic is None or event.topic == self.topic:
                    sys.stdout.write(self.fmt(event) + "\n")
                    self.printed += 1
                    if self.limit is not None and self.printed >= self.limit:
                        return True
                if self.end is not None and event.id == self.end:
                    return True
            return False
        finally:
            sys.stdout.flush()


def _plan(args: argparse.Namespace) -> tuple[str, bool, int | None]:
    """(start, look back for the last N, stop after N) from the flags."""
    given = args.start
    last_n = args.n is not None and given in (None, "newest")
    default = "newest" if args.follow else "oldest"
    start = start_position(given or default)
    return start, last_n, (None if last_n else args.n)


async def _read(
    ctd: Any, args: argparse.Namespace, start: str, last_n: bool, limit: int | None
) -> None:
    import asyncio

    stream = ctd.conn.stream(args.stream)
    end = await _last_id(ctd.client, stream.key)
    if last_n and end is not None:
        start = await _start_of_last(ctd.client, stream.key, args.stream, end, args.n, args.topic)
    if not args.follow and (end is None or start == "newest"):
        return  # nothing between the start and the end
    printer = _Printer(args, None if args.follow else end, limit)
    block = _FOLLOW_BLOCK if args.follow else _DRAIN_BLOCK
    reader = await stream.new_reader(start=start, block=block, count=1000)
    async with reader:
        while True:
            if args.follow:
                batch = await reader.read_batch()
            else:
                try:  # nothing within a block: the end was trimmed away
                    batch = await asyncio.wait_for(reader.read_batch(), block * 5)
                except asyncio.TimeoutError:
                    return
            if printer.batch(batch):
                return


def run(args: argparse.Namespace) -> int:
    from topology.cli import EXIT_OK, EXIT_USAGE
    from topology.cli._connection import known_stream, load_config, run_command
    from topology.streams import parse_start

    prog = "ponos-topology tail"
    if args.n is not None and args.n < 1:
        print(f"{prog}: error: -n must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        start, last_n, limit = _plan(args)
        parse_start(start)
    except ValueError as exc:
        print(f"{prog}: error: --from: {exc}", file=sys.stderr)
        return EXIT_USAGE
    topology = load_config(args.config)
    if topology is None:
        return EXIT_USAGE
    if not known_stream(topology, args.stream, prog):
        return EXIT_USAGE

    async def main() -> int:
        from topology.runtime.connect import open_redis

        async with open_redis(topology, cli_url=args.redis_url, data_dir=args.data_dir) as ctd:
            await _read(ctd, args, start, last_n, limit)
        return EXIT_OK

    return run_command(main, prog)
