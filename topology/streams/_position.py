"""Start positions: ``oldest``, ``newest``, ``after:<id>``, ``at:<RFC 3339 time>``."""

from __future__ import annotations

import re
from datetime import datetime

__all__ = ["NEWEST", "OLDEST", "parse_start", "validate_start"]

OLDEST = "oldest"
NEWEST = "newest"

_ID = re.compile(r"\d+(-\d+)?")
_MAX_SEQ = 18446744073709551615  # largest sequence number of a stream id


def parse_start(start: str) -> str:
    """The stream id to start *after*: ``0`` for oldest, ``$`` for newest.

    Usable both as the id of ``XGROUP CREATE`` and as an ``XREAD`` cursor (both
    deliver entries strictly greater than it). ``at:<time>`` becomes the last id
    before that millisecond, so an entry added at exactly that time is included.
    Raises ValueError with the accepted forms on anything else.
    """
    if not isinstance(start, str):
        raise ValueError(f"start position must be a string, not {type(start).__name__}")
    if start == OLDEST:
        return "0"
    if start == NEWEST:
        return "$"
    if start.startswith("after:"):
        entry_id = start[len("after:") :]
        if not _ID.fullmatch(entry_id):
            raise ValueError(
                f"invalid start position {start!r}: expected after:<ms>-<seq>,"
                " e.g. after:1700000000000-0"
            )
        if any(int(part) > _MAX_SEQ for part in entry_id.split("-")):
            raise ValueError(
                f"invalid start position {start!r}: an entry id's parts are at most {_MAX_SEQ}"
            )
        return entry_id
    if start.startswith("at:"):
        text = start[len("at:") :]
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            reason = str(exc)  # "month must be in 1..12" says more than the forms accepted
            if reason.startswith("Invalid isoformat"):
                reason = "expected at:<RFC 3339 time>, e.g. at:2024-05-01T12:00:00Z"
            raise ValueError(f"invalid start position {start!r}: {reason}") from None
        if when.tzinfo is None:
            raise ValueError(
                f"invalid start position {start!r}: the time needs an offset (Z or +hh:mm)"
            )
        try:
            ms = int(when.timestamp() * 1000)
        except (OverflowError, ValueError) as exc:  # a time no platform clock can hold
            raise ValueError(f"invalid start position {start!r}: {exc}") from None
        if ms <= 0:
            return "0"
        return f"{ms - 1}-{_MAX_SEQ}"
    raise ValueError(
        f"invalid start position {start!r}: expected 'oldest', 'newest', "
        "'after:<entry id>' or 'at:<RFC 3339 time>'"
    )


def validate_start(start: str) -> str:
    """Check ``start`` now (at sink creation) and return it unchanged."""
    parse_start(start)
    return start
