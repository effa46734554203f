"""The validated configuration: immutable plain data, passed down whole.

Everything downstream (graph, plan, runtime) reads these classes, never the
YAML dicts. Durations are seconds (float), defaults are already applied, and
every name referenced is known to exist: the loader guarantees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "DEFAULT_ACK_GRACE",
    "DEFAULT_BATCH",
    "DEFAULT_CONSUMERS",
    "DEFAULT_RETRY",
    "DEFAULT_START",
    "RedisSpec",
    "RetryPolicy",
    "SinkSpec",
    "SourceSpec",
    "StateSpec",
    "StreamRef",
    "StreamSpec",
    "Topology",
]

DEFAULT_ACK_GRACE = 20.0
DEFAULT_BATCH = 256
DEFAULT_CONSUMERS = 1
DEFAULT_START = "newest"
DEFAULT_MAX_DELIVERIES = 10
DEFAULT_MAX_BATCH_BYTES = 16_000_000


def _frozen(mapping: Mapping[str, object] | None = None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for a handler that raises: ``backoff * 2**(attempt-1)``, capped."""

    max_attempts: int = 5
    backoff: float = 0.1
    max_backoff: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        return min(self.backoff * (2 ** max(attempt - 1, 0)), self.max_backoff)


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class RedisSpec:
    """Where the deployment's Redis is. ``url=None`` means the embedded server."""

    url: str | None = None
    prefix: str = "pulse"  # stream key prefix: pulse:stream:<name>, as goa.design/pulse
    #: Seconds a Redis command may take before its connection is dropped and the
    #: call retried on a new one (a blocking read: its BLOCK plus this).
    timeout: float = 10.0


def format_duration(seconds: float) -> str:
    """``seconds`` the way a config writes it (``90`` -> ``90s``, ``0.1`` -> ``100ms``)."""
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds < 1 and (seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    max_len: int | None = None
    ttl: float | None = None
    topics: tuple[str, ...] = ()  # declared topics (documentation and rendering)
    #: Trimming may drop events before a sink reads them, and that is accepted.
    lossy: bool = False

    @property
    def trimmed_by(self) -> str:
        """The options that trim the stream (``max_len 1000, ttl 24h``; "" for none)."""
        parts = []
        if self.max_len is not None:
            parts.append(f"max_len {self.max_len}")
        if self.ttl is not None:
            parts.append(f"ttl {format_duration(self.ttl)}")
        return ", ".join(parts)


@dataclass(frozen=True)
class StreamRef:
    """A stream a sink reads, with an optional start position overriding the sink's."""

    name: str
    start: str | None = None


@dataclass(frozen=True)
class SourceSpec:
    name: str
    handler: str  # "module:attribute" of a (async) generator function
    stream: str
    topic: str | None = None  # default topic of what it yields
    #: A fresh start of the deployment runs it again even after it ended.
    rerun: bool = False


@dataclass(frozen=True)
class StateSpec:
    """A sink's keyed state: one Redis key per state key, dropped ``ttl`` seconds after
    its last change (None: kept until the handler empties it)."""

    ttl: float | None = None


@dataclass(frozen=True)
class SinkSpec:
    name: str
    streams: tuple[StreamRef, ...]
    handler: str  # "module:attribute"
    topic: str | None = None
    topic_pattern: str | None = None
    matcher: str | None = None  # "module:attribute" of a callable Event -> bool
    consumers: int = DEFAULT_CONSUMERS
    outputs: tuple[str, ...] = ()
    start: str = DEFAULT_START
    ack_grace: float = DEFAULT_ACK_GRACE
    batch: int = DEFAULT_BATCH
    retry: RetryPolicy = DEFAULT_RETRY
    dead_letter: str | None = None
    #: Seconds a handler call may take before it fails (HandlerTimeout); None: no limit.
    timeout: float | None = None
    #: Deliveries of one event (Redis's count) past which it is dead-lettered unhandled.
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    #: Bytes of events an actor holds at most (its reads shrink for large events).
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    #: The state key: a payload field or dotted path, or "module:attribute" (Event -> str).
    key: str | None = None
    state: StateSpec | None = None  # set: the handler is called as handler(event, state)

    @property
    def stream_names(self) -> tuple[str, ...]:
        return tuple(ref.name for ref in self.streams)

    def start_of(self, stream: str) -> str:
        """Start position of the sink's group on ``stream``."""
        for ref in self.streams:
            if ref.name == stream and ref.start is not None:
                return ref.start
        return self.start


@dataclass(frozen=True)
class Topology:
    """A whole validated config file.

    ``path`` is the file it came from: its folder is importable for handlers and
    the embedded server keeps its data beside it. ``Topology.empty()`` is where
    every start begins: the runtime applies the plan from empty to the config.
    """

    name: str
    version: int = 1
    allow_cycles: bool = False
    redis: RedisSpec = RedisSpec()
    streams: Mapping[str, StreamSpec] = field(default_factory=_frozen)
    sources: Mapping[str, SourceSpec] = field(default_factory=_frozen)
    sinks: Mapping[str, SinkSpec] = field(default_factory=_frozen)
    path: Path | None = None
    #: sha256 of each handler/matcher module's file when the config was validated
    #: (module name -> hex digest): how a reload tells that handler code changed
    #: while the config did not. Empty when handlers were not imported.
    code: Mapping[str, str] = field(default_factory=_frozen)

    def __post_init__(self) -> None:
        for name in ("streams", "sources", "sinks", "code"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, _frozen(value))

    @classmethod
    def empty(cls, name: str = "", path: Path | None = None) -> Topology:
        return cls(name=name, path=path)

    @property
    def base_dir(self) -> Path | None:
        return self.path.parent if self.path is not None else None

    def handler_refs(self) -> tuple[str, ...]:
        """Every ``module:attribute`` the config names: sinks' handlers and matchers, sources'."""
        refs = [ref for s in self.sinks.values() for ref in (s.handler, s.matcher) if ref]
        return (*refs, *(s.handler for s in self.sources.values()))

    def actor_count(self) -> int:
        return sum(sink.consumers for sink in self.sinks.values())
