"""Turn what a producer hands us into the bytes stored in field ``p``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["compact_json", "encode_payload"]


def compact_json(*, allow_nan: bool = True) -> Callable[[Any], str]:
    """``json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan)``
    as a function, and a faster one: ``dumps`` with options builds a ``JSONEncoder`` per
    call, and ``JSONEncoder.encode`` its C encoder per call; this makes only the C
    encoder's per-call part (its circular-reference markers stay per call)."""
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the plain way
        return encoder.encode
    default, strings = encoder.default, json.encoder.encode_basestring
    join = "".join

    def encode(obj: Any) -> str:
        return join(make({}, default, strings, None, ":", ",", False, False, allow_nan)(obj, 0))

    return encode


_encode = compact_json()


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
    return _encode(obj).encode("utf-8")
