"""Reading a stateful sink's keyed state for ``state:`` expectations.

The one place the testing package touches keyed state, so that the test
runner and the pytest helper say the same thing about a sink without state.
The layout and the reading belong to the runtime's state module; this engine
version may not have it yet (then a stateful sink cannot be read and says so).
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from topology.config.model import Topology
from topology.streams import Connection

__all__ = ["StateUnavailable", "read_state"]

#: Where the runtime keeps keyed state (its layout and its readers).
STATE_MODULE = "topology.runtime.state"


class StateUnavailable(Exception):
    """The state of this sink cannot be read; the message says why, for a person."""


def _state_module() -> Any:
    try:
        return importlib.import_module(STATE_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != STATE_MODULE:
            raise
        return None


async def read_state(conn: Connection, topology: Topology, sink: str) -> dict[str, Any]:
    """Every key of ``sink``'s state and its JSON object (``{}`` for a sink with no key yet).

    Raises :class:`StateUnavailable` for a sink that is not stateful.
    """
    spec = topology.sinks.get(sink)
    if spec is None or getattr(spec, "state", None) is None:
        raise StateUnavailable(f"this topology has no stateful sink {sink!r}")
    module = _state_module()
    if module is None:  # pragma: no cover - a config cannot declare state without it
        raise StateUnavailable(f"sink {sink!r}: this engine version cannot read keyed state")
    layout = module.state_layout(topology.name, spec, conn.stream_key)
    out: dict[str, Any] = {}
    async for batch in module.scan_states(conn.redis, layout):
        for key, stored in batch:
            out[key] = json.loads(stored.text) if stored.text else {}
    return out
