"""pulse's entry layout, and how commands reach the wire.

An event is the fields ``n`` (name), ``p`` (payload) and, when it has one,
``t`` (topic); a raw XREAD/XREADGROUP reply is a list (RESP2) or a map (RESP3)
of ``(key, [(id, [field, value, ...]), ...])``. This is the only module that
spells the field names (the commit script aside: Lua cannot import them).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from topology.streams._event import Event

__all__ = [
    "decode_entry",
    "decode_event",
    "entries_of",
    "entry_fields",
    "is_plain",
    "pack_command",
    "packed_or_none",
]

log = logging.getLogger("topology.streams")

#: hiredis's C packer of one command into RESP, or None without hiredis (a
#: dependency of the engine, optional for the streams library). redis.asyncio's
#: own packer runs Python code per argument.
pack_command: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency of the engine
    pack_command = None


def packed_or_none(command: tuple[Any, ...]) -> bytes | None:
    """``command`` in RESP by hiredis; None without hiredis or for an argument it cannot
    pack (the caller then lets redis-py encode it)."""
    if pack_command is None:
        return None
    try:
        return pack_command(command)
    except TypeError:
        return None


# -- writing -----------------------------------------------------------------------


def entry_fields(name: str, payload: bytes, topic: str | None = None) -> list[Any]:
    """The flat ``XADD`` fields of an event (``payload`` already encoded)."""
    if topic:
        return ["n", name, "p", payload, "t", topic]
    return ["n", name, "p", payload]


def is_plain(fields: Sequence[Any]) -> bool:
    """``fields`` are a name and a payload only (what :func:`entry_fields` writes
    without a topic): the commit sends such entries in a compact form."""
    return len(fields) == 4 and fields[0] == "n" and fields[2] == "p"


# -- reading -----------------------------------------------------------------------


def entries_of(reply: Any) -> Any:
    """``(key, entries)`` pairs of an XREAD/XREADGROUP reply, RESP2 (list) or RESP3 (map)."""
    if reply is None:
        return ()
    if isinstance(reply, dict):
        return reply.items()
    return reply


def decode_event(
    raw_id: bytes,
    flat: Any,
    stream_name: str,
    *,
    sink_name: str | None = None,
    acker: Callable[[Event], Awaitable[None]] | None = None,
) -> Event:
    """The :class:`Event` of one raw entry of ``stream_name``."""
    entry_id = raw_id.decode()
    name, payload, topic, extra = decode_entry(flat, stream_name, entry_id)
    return Event(
        entry_id,
        name,
        payload,
        stream_name=stream_name,
        topic=topic,
        sink_name=sink_name,
        fields=extra,
        acker=acker,
    )


def decode_entry(
    flat: list[bytes], stream_name: str, entry_id: str
) -> tuple[str, bytes, str | None, dict[bytes, bytes] | None]:
    """``(name, payload, topic, extra fields)`` of a raw entry ``[f1, v1, f2, v2, ...]``.

    For code that reads raw entries itself and must decode them exactly as
    sinks and readers do.

    The two shapes pulse and this library write (``n p`` and ``n p t``) take the
    fast path; anything else (other field order, extra engine fields, missing
    or undecodable fields) goes through :func:`_decode_slow`, which never raises.
    """
    try:
        size = len(flat)
        if size == 4 and flat[0] == b"n" and flat[2] == b"p":
            return flat[1].decode(), flat[3], None, None
        if size == 6 and flat[0] == b"n" and flat[2] == b"p" and flat[4] == b"t":
            return flat[1].decode(), flat[3], flat[5].decode(), None
    except (UnicodeDecodeError, AttributeError):
        pass
    return _decode_slow(flat, stream_name, entry_id)


def _decode_slow(
    flat: Any, stream_name: str, entry_id: str
) -> tuple[str, bytes, str | None, dict[bytes, bytes] | None]:
    problems: list[str] = []
    fields: dict[bytes, bytes] = {}
    try:
        items = list(flat)
        for i in range(0, len(items) - 1, 2):
            key, value = items[i], items[i + 1]
            fields[_as_bytes(key)] = _as_bytes(value)
        if len(items) % 2:
            problems.append("odd number of field items")
    except TypeError:
        problems.append(f"unreadable fields {flat!r:.80}")
    raw_name = fields.pop(b"n", None)
    raw_payload = fields.pop(b"p", None)
    raw_topic = fields.pop(b"t", None)
    if raw_name is None:
        problems.append("no event name (field n)")
        name = ""
    else:
        name = _decode_text(raw_name, "name", problems)
    if raw_payload is None:
        problems.append("no payload (field p)")
        payload = b""
    else:
        payload = raw_payload
    topic = None if raw_topic is None else _decode_text(raw_topic, "topic", problems)
    if problems:
        log.warning(
            "malformed entry %s on stream %r: %s; delivered with what could be decoded",
            entry_id,
            stream_name,
            "; ".join(problems),
        )
    return name, payload, topic, fields or None


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return str(value).encode()


def _decode_text(raw: bytes, what: str, problems: list[str]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{what} is not UTF-8")
        return raw.decode("utf-8", "replace")
