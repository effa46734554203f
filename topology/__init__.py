"""ponos-topology: event-processing topologies declared in YAML, run on Redis Streams.

The public surface is small: ``Emit`` and ``Event`` for handlers, and the
``topology.streams`` library. Everything else is reached through the CLI.
"""

from topology._emit import Emit
from topology.streams import Event

__all__ = ["Emit", "Event", "__version__"]
__version__ = "0.1.0"
