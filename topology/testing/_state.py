"""Reading a stateful sink's keyed state for ``state:`` expectations.

The one place the testing package touches keyed state, so that the test
runner and the pytest helper say the same thing about a sink without state,
and so that the state layout stays with its owner (the runtime's keys).
"""

from __future__ import annotations

from typing import Any

from topology.config.model import Topology
from topology.streams import Connection

__all__ = ["StateUnavailable", "read_state"]


class StateUnavailable(Exception):
    """The state of this sink cannot be read; the message says why, for a person."""


def has_state(topology: Topology, sink: str) -> bool:
    spec = topology.sinks.get(sink)
    return spec is not None and getattr(spec, "state", None) is not None


async def read_state(conn: Connection, topology: Topology, sink: str) -> dict[str, Any]:
    """Every key of ``sink``'s state and its JSON object.

    Raises :class:`StateUnavailable` for a sink that is not stateful. The engine
    of this version has no keyed state yet (no config declares ``state:``), so
    every sink is reported as such until the runtime's state reader lands here.
    """
    if not has_state(topology, sink):
        raise StateUnavailable(f"this topology has no stateful sink {sink!r}")
    raise StateUnavailable(  # pragma: no cover - no config can declare state yet
        f"sink {sink!r}: reading keyed state is not supported by this version of the engine"
    )
