"""pulse's entry layout, and how commands reach the wire.

An event is the fields ``n`` (name), ``p`` (payload) and, when it has one,
``t`` (topic). This is the only module that spells those field names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["entry_fields", "pack_command", "packed_or_none"]

#: hiredis's C packer of one command into RESP, or None without hiredis (a
#: dependency of the engine, optional for the streams library). redis.asyncio's
#: own packer runs Python code per argument.
pack_command: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command
except ImportError:  # pragma: no cover - hiredis is a dependency of the engine
    pack_command = None


def entry_fields(name: str, payload: bytes, topic: str | None = None) -> list[Any]:
    """The flat ``XADD`` fields of an event (``payload`` already encoded)."""
    if topic:
        return ["n", name, "p", payload, "t", topic]
    return ["n", name, "p", payload]


def packed_or_none(command: tuple[Any, ...]) -> bytes | None:
    """``command`` in RESP by hiredis; None without hiredis or for an argument it cannot
    pack (the caller then lets redis-py encode it)."""
    if pack_command is None:
        return None
    try:
        return pack_command(command)
    except TypeError:
        return None
