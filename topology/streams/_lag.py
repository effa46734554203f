"""How far a consumer group is behind its stream, and what trimming took from it unread.

Redis 7 reports a group's ``lag`` (``XINFO GROUPS``), but it cannot always be
trusted: Redis 7.0 can report a large lag for a group whose last-delivered id
is the stream's last entry (after a restart that rewrote its counters). So
"caught up" is decided from ids (last delivered against the stream's last id),
and a group behind the stream's first entry waits for exactly the entries left;
the ones it lost to trimming are told apart (the stream's ``entries-added``
against the group's ``entries-read``).

One helper for every caller (``run --stop-when-idle``, ``status``, the live
graph): :func:`group_lag` on replies already read, :func:`read_group_lag` to
read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

__all__ = ["GroupLag", "group_lag", "read_group_lag"]


@dataclass(frozen=True)
class GroupLag:
    """One group on one stream.

    ``lag``: entries in the stream not yet delivered to the group (None: not
    known). ``trimmed_unread``: entries removed from the stream before the group
    read them (None: not known). Known only while the group's position is still
    before the stream's first entry: its next read skips past the gap, and the
    server keeps no trace of it. A group created at an explicit id has no read
    count: then ``trimmed_bound`` says what ``trimmed_unread`` is, ``at least``
    (an entry past the group's position was deleted) or ``up to`` (entries were
    removed, and the server cannot tell how many of them the group had read).
    """

    caught_up: bool
    lag: int | None
    trimmed_unread: int | None
    last_delivered_id: str | None = None
    trimmed_bound: str = ""

    @property
    def trimmed_surely(self) -> int:
        """Entries certainly trimmed unread (what a counter may add)."""
        return 0 if self.trimmed_bound == "up to" else self.trimmed_unread or 0

    @property
    def trimmed_text(self) -> str:
        """The trimmed count as a user reads it: ``15``, ``at least 1``, ``up to 17``."""
        return f"{self.trimmed_bound} {self.trimmed_unread or 0}".strip()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _get(info: Mapping[Any, Any], key: str) -> Any:
    return info.get(key, info.get(key.encode()))


def _id(value: Any) -> tuple[int, int]:
    """An entry id as a comparable pair; ``0-0`` for none."""
    if value is None:
        return (0, 0)
    ms, _, seq = _text(value).partition("-")
    return (int(ms), int(seq or 0))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def group_lag(stream: Mapping[Any, Any], group: Mapping[Any, Any]) -> GroupLag:
    """From ``XINFO STREAM`` (its plain form) and one ``XINFO GROUPS`` entry."""
    length = int(_get(stream, "length") or 0)
    last = _id(_get(stream, "last-generated-id"))
    first_entry = _get(stream, "first-entry")
    first = _id(first_entry[0]) if first_entry else None
    added = _int(_get(stream, "entries-added"))
    delivered_raw = _get(group, "last-delivered-id")
    delivered = _id(delivered_raw)
    reported = _int(_get(group, "lag"))
    trimmed: int | None = 0
    bound = ""
    if delivered >= last:
        lag: int | None = 0
    elif first is None or delivered < first:
        # Everything left is unread; what the stream lost beyond what the group
        # had read was trimmed before it could read it.
        lag = length
        read = 0 if delivered == (0, 0) else _int(_get(group, "entries-read"))
        trimmed = None if added is None or read is None else max(0, added - length - read)
        if trimmed is None and added is not None:
            trimmed, bound = _bounds(stream, delivered, added - length)
    else:
        lag = None if reported is None else min(reported, length)
    return GroupLag(
        caught_up=lag == 0,
        lag=lag,
        trimmed_unread=trimmed,
        last_delivered_id=None if delivered_raw is None else _text(delivered_raw),
        trimmed_bound=bound,
    )


def _bounds(stream: Mapping[Any, Any], delivered: tuple[int, int], removed: int) -> tuple[int, str]:
    """What can be said of a gap whose size the server does not know."""
    if _id(_get(stream, "max-deleted-entry-id")) > delivered:
        return 1, "at least"  # an entry past the group's position was deleted unread
    return removed, "up to" if removed else ""


async def read_group_lag(conn: Any, key: str, group: str) -> GroupLag | None:
    """:func:`group_lag` of ``group`` on stream ``key``; None when either does not exist."""
    try:
        stream = await conn.execute_raw(key, b"XINFO", "STREAM", key)
        groups = await conn.execute_raw(key, b"XINFO", "GROUPS", key)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    stream_info = _pairs(stream)
    for raw in groups or ():
        info = _pairs(raw)
        if _text(_get(info, "name")) == group:
            return group_lag(stream_info, info)
    return None


def _pairs(reply: Any) -> dict[str, Any]:
    """A raw ``XINFO`` reply (a flat list in RESP2, a map in RESP3) as a dict."""
    if isinstance(reply, Mapping):
        return {_text(k): v for k, v in reply.items()}
    items = list(reply)
    return {_text(items[i]): items[i + 1] for i in range(0, len(items), 2)}
