"""Redis Streams with the semantics and wire format of goa.design/pulse.

Usable on its own; imports nothing of the engine.
"""

from topology.streams._event import Event

__all__ = ["Event"]
