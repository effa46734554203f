"""Every Redis key the streams library spells.

The stream key is pulse's wire format (``<prefix>:stream:<name>``, prefix
``pulse`` by default), so a Go service using goa.design/pulse with the same
prefix reads and writes the same keys. The library's own bookkeeping keys (the
claim lease of a sink) live under the same prefix.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PREFIX", "StreamKeys"]

#: pulse's prefix for stream keys.
DEFAULT_PREFIX = "pulse"


class StreamKeys:
    """Key names under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix:
            raise ValueError("the key prefix must not be empty")
        self.prefix = prefix

    def stream(self, name: str) -> str:
        """The stream ``name``: ``<prefix>:stream:<name>`` exactly as pulse spells it."""
        return f"{self.prefix}:stream:{name}"

    def claim_lease(self, sink: str) -> str:
        """String holding the consumer that currently runs the claim pass of ``sink``.

        ``SET NX PX``: one instance of a sink name at a time re-claims idle pending
        events, as pulse does, so survivors do not steal the same events from each
        other in a loop.
        """
        return f"{self.prefix}:sink:{sink}:claim-lease"
