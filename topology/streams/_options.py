"""The options of readers and sinks, and their defaults: declared here only.

The constructors (``Reader``, ``Sink``) and their shortcuts on ``Stream`` take
them as keyword arguments whose defaults are these class attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from topology.streams._event import Event
from topology.streams._position import validate_start

__all__ = ["ReaderOptions", "SinkOptions"]


@dataclass(frozen=True)
class ReaderOptions:
    """How a consumer reads: where a new stream starts, how long a read blocks
    (seconds), events per read, events buffered, and which topics it keeps."""

    start: str = "newest"
    block: float = 5.0
    count: int = 1000
    buffer: int = 1000
    topic: str | None = None
    topic_pattern: str | None = None

    def __post_init__(self) -> None:
        validate_start(self.start)
        if self.block <= 0:  # BLOCK 0 would mean "forever" to Redis
            raise ValueError(f"block must be > 0 seconds, got {self.block}")
        if self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")
        if self.buffer < 1:
            raise ValueError(f"buffer must be >= 1, got {self.buffer}")


@dataclass(frozen=True)
class SinkOptions(ReaderOptions):
    """A reader's options, and: the idle time (seconds) after which an un-acked event
    is claimed by another instance, a predicate events must satisfy, and no acks."""

    ack_grace: float = 20.0
    matcher: Callable[[Event], bool] | None = None
    no_ack: bool = False

    def __post_init__(self) -> None:
        if self.ack_grace <= 0:
            raise ValueError(f"ack_grace must be > 0 seconds, got {self.ack_grace}")
        super().__post_init__()
