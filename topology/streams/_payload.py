"""Turn what a producer hands us into the bytes stored in field ``p``."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["encode_payload"]

#: ``json.dumps`` with options builds an encoder per call: one, built once, is much cheaper.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_payload(obj: Any) -> bytes:
    """``bytes`` as they are, ``str`` as UTF-8, anything else as compact JSON.

    The engine reuses this for ``Emit`` payloads, so a handler returning a dict
    and a producer calling ``stream.add`` with the same dict write the same bytes.
    """
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    return _ENCODER.encode(obj).encode("utf-8")
