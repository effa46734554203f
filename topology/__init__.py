"""ponos-topology: event-processing topologies declared in YAML, run on Redis Streams.

The public surface is small: ``Emit`` and ``Event`` for handlers, and the
``topology.streams`` library. Everything else is reached through the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from topology._emit import Emit

if TYPE_CHECKING:
    from topology.streams import Event

__all__ = ["Emit", "Event", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # ``Event`` is imported on first use: every ``topology.cli`` command runs this
    # file, and ``topology.streams`` brings redis-py, which a pool's parent never uses.
    if name == "Event":
        from topology.streams import Event

        globals()["Event"] = Event
        return Event
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
