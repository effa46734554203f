"""What a handler or a source returns: an event to add to a stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Emit"]


@dataclass(frozen=True, slots=True)
class Emit:
    """An event to forward.

    ``payload`` is bytes, str (UTF-8) or anything JSON-serialisable (dict, list,
    number...). ``stream`` may be left out when the sink (or source) has exactly
    one output stream; ``topic`` is the event's topic on that stream, if any.
    """

    name: str
    payload: Any = b""
    stream: str | None = None
    topic: str | None = None
