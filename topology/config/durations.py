"""Durations as people write them in YAML: ``250ms``, ``20s``, ``5m``, ``24h``, ``1m30s``.

Kept as strings in the file (a bare ``20`` is ambiguous: seconds? milliseconds?)
and turned into float seconds in the model, so nothing downstream parses units.
"""

from __future__ import annotations

import re

__all__ = ["parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ``ValueError`` for anything that is not a duration.

    Units may be combined, largest first or not (``1h30m``, ``1m30s``); spaces
    around the whole value are tolerated, inside it they are not.
    """
    if not isinstance(text, str):
        raise ValueError(f"a duration is a string like '20s', not {type(text).__name__}")
    stripped = text.strip()
    if not _WHOLE.fullmatch(stripped):
        raise ValueError(f"invalid duration {text!r} (use e.g. 250ms, 20s, 5m, 24h)")
    return sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(stripped))
