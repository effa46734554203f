"""What a reload from one topology to another changes: the plan the runtime applies.

``diff(old, new)`` compares the two flow graphs (``topology.graph.build``):
node sets give what was added and removed, node specs and read edges what
changed. Starting is not a special case: the runtime applies
``diff(Topology.empty(), topology)``, in which every stream, sink and source
is added, so the first start exercises the same code as every reload.

Handler code is part of what is compared: a topology carries a fingerprint of
each handler module's file (``Topology.code``), so a sink or source whose
module changed on disk while the config did not is restarted (re-importing the
module) — ``SinkChange.code_changed`` names the modules, and ``describe`` says
"handler code changed". A module without a fingerprint on either side (a
hand-built model) never counts as changed.

Start positions apply to *new* consumer groups only. A changed ``start`` on a
stream a sink already reads does not move the existing group (that would skip
or replay events behind the operator's back); the plan records it in
``SinkChange.starts_changed`` so ``plan`` can say so, and it needs no restart.

``Plan.describe()`` lists changes in the order the runtime applies them:
streams first (a sink must find its streams), removals before additions of
sinks, sources last (nothing produces before its readers exist), stream
removals at the very end; the lines the engine cannot apply live come first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import networkx as nx

from topology.config.model import (
    RetryPolicy,
    SinkSpec,
    SourceSpec,
    StateSpec,
    StreamRef,
    StreamSpec,
    Topology,
)
from topology.graph import build, format_duration, nodes_of, read_edges

__all__ = ["Plan", "SinkChange", "diff"]

#: SinkSpec fields a rescale or a stream add/remove handles live; every other
#: field (handler, matcher, topic, topic_pattern, outputs, retry, dead_letter,
#: batch, ack_grace, and any field added later) needs the sink's actors restarted.
_LIVE_SINK_FIELDS = frozenset({"name", "streams", "consumers", "start"})


@dataclass(frozen=True)
class SinkChange:
    """How one sink present in both topologies changes."""

    name: str
    streams_added: tuple[StreamRef, ...] = ()  # start is the effective start of the new group
    streams_removed: tuple[str, ...] = ()
    consumers: tuple[int, int] | None = None  # (old, new) when rescaled
    restart: tuple[str, ...] = ()  # changed fields that need the actors drained and restarted
    #: (stream, old start, new start) for kept streams: recorded, not applied
    #: (start positions apply to new groups only).
    starts_changed: tuple[tuple[str, str, str], ...] = ()
    #: Handler/matcher modules whose file changed: the actors restart on the new code.
    code_changed: tuple[str, ...] = ()

    @property
    def needs_restart(self) -> bool:
        return bool(self.restart or self.code_changed)


@dataclass(frozen=True)
class Plan:
    """The changes from ``old`` to ``new``; names are tuples in config order."""

    old: Topology
    new: Topology
    streams_added: tuple[str, ...] = ()
    streams_removed: tuple[str, ...] = ()
    streams_changed: tuple[str, ...] = ()  # max_len / ttl / topics changed
    sinks_added: tuple[str, ...] = ()
    sinks_removed: tuple[str, ...] = ()
    sinks_changed: tuple[SinkChange, ...] = ()
    sources_added: tuple[str, ...] = ()
    sources_removed: tuple[str, ...] = ()
    sources_changed: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()  # what a reload cannot apply, one reason per line

    @property
    def is_empty(self) -> bool:
        return not (self.has_live_changes or self.unsupported)

    @property
    def has_live_changes(self) -> bool:
        """Anything a reload applies (what it cannot apply is in ``unsupported``)."""
        skip = ("old", "new", "unsupported")
        return any(getattr(self, f.name) for f in fields(self) if f.name not in skip)

    def sink_change(self, name: str) -> SinkChange | None:
        """The change of sink ``name``, or None when it is unchanged (or added/removed)."""
        return next((c for c in self.sinks_changed if c.name == name), None)

    def describe(self) -> list[str]:
        """One human line per change, in the order the runtime applies them."""
        lines = [f"unsupported: {reason}" for reason in self.unsupported]
        lines += [f"stream {name}: added" for name in self.streams_added]
        for name in self.streams_changed:
            # .get: a hand-built model may read a stream it never declared.
            old = self.old.streams.get(name, StreamSpec(name))
            new = self.new.streams.get(name, StreamSpec(name))
            lines.append(f"stream {name}: {_stream_delta(old, new)}")
        lines += [f"source {name}: removed" for name in self.sources_removed]
        lines += [f"sink {name}: removed" for name in self.sinks_removed]
        for change in self.sinks_changed:
            lines += _describe_sink_change(
                change, self.old.sinks[change.name], self.new.sinks[change.name]
            )
        for name in self.sinks_added:
            lines.append(f"sink {name}: added ({_consumers(self.new.sinks[name].consumers)})")
        for name in self.sources_changed:
            old_src, new_src = self.old.sources[name], self.new.sources[name]
            delta = _source_delta(old_src, new_src) or "handler code changed"
            lines.append(f"source {name}: {delta} (restart)")
        lines += [f"source {name}: added" for name in self.sources_added]
        lines += [f"stream {name}: removed (its data is kept)" for name in self.streams_removed]
        return lines

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data (``plan --format json``); no dataclass inside."""
        return {
            "old": self.old.name,
            "new": self.new.name,
            "empty": self.is_empty,
            "streams_added": list(self.streams_added),
            "streams_removed": list(self.streams_removed),
            "streams_changed": list(self.streams_changed),
            "sinks_added": list(self.sinks_added),
            "sinks_removed": list(self.sinks_removed),
            "sinks_changed": [
                {
                    "name": c.name,
                    "streams_added": [{"name": r.name, "start": r.start} for r in c.streams_added],
                    "streams_removed": list(c.streams_removed),
                    "consumers": list(c.consumers) if c.consumers is not None else None,
                    "restart": list(c.restart),
                    "needs_restart": c.needs_restart,
                    "starts_changed": [
                        {"stream": s, "old": o, "new": n} for s, o, n in c.starts_changed
                    ],
                    "code_changed": list(c.code_changed),
                }
                for c in self.sinks_changed
            ],
            "sources_added": list(self.sources_added),
            "sources_removed": list(self.sources_removed),
            "sources_changed": list(self.sources_changed),
            "unsupported": list(self.unsupported),
            "lines": self.describe(),
        }


def _consumers(count: int) -> str:
    return f"{count} consumer" + ("" if count == 1 else "s")


def _show(value: object) -> str:
    """A field value the way a config would write it."""
    if value is None:
        return "none"
    if isinstance(value, RetryPolicy):
        return (
            f"{{max_attempts: {value.max_attempts}, backoff: {format_duration(value.backoff)}, "
            f"max_backoff: {format_duration(value.max_backoff)}}}"
        )
    if isinstance(value, StateSpec):
        return "{}" if value.ttl is None else f"{{ttl: {format_duration(value.ttl)}}}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float):
        return format_duration(value)
    return str(value)


def _field_deltas(
    old: object, new: object, skip: frozenset[str] = frozenset({"name"})
) -> list[str]:
    return [
        f"{f.name} {_show(getattr(old, f.name))} -> {_show(getattr(new, f.name))}"
        for f in fields(old)  # type: ignore[arg-type]
        if f.name not in skip and getattr(old, f.name) != getattr(new, f.name)
    ]


def _stream_delta(old: StreamSpec, new: StreamSpec) -> str:
    return ", ".join(_field_deltas(old, new))


def _source_delta(old: SourceSpec, new: SourceSpec) -> str:
    return ", ".join(_field_deltas(old, new))


def _describe_sink_change(change: SinkChange, old: SinkSpec, new: SinkSpec) -> list[str]:
    prefix = f"sink {change.name}:"
    lines = [f"{prefix} + stream {ref.name} (start {ref.start})" for ref in change.streams_added]
    lines += [f"{prefix} - stream {name} (group kept)" for name in change.streams_removed]
    for stream, before, after in change.starts_changed:
        lines.append(
            f"{prefix} start of {stream} {before} -> {after} "
            "(applies to new groups only; the existing group keeps its position)"
        )
    if change.consumers is not None:
        lines.append(f"{prefix} consumers {change.consumers[0]} -> {change.consumers[1]}")
    for name in change.restart:
        lines.append(
            f"{prefix} {name} {_show(getattr(old, name))} -> {_show(getattr(new, name))} (restart)"
        )
    if change.code_changed:
        lines.append(f"{prefix} handler code changed ({', '.join(change.code_changed)}) (restart)")
    return lines


def _modules(spec: SinkSpec | SourceSpec) -> tuple[str, ...]:
    refs = (spec.handler, getattr(spec, "matcher", None))
    return tuple(dict.fromkeys(ref.split(":", 1)[0] for ref in refs if ref))


def _code_changed(old: Topology, new: Topology, name: str, kind: str) -> tuple[str, ...]:
    """Modules of ``kind`` ``name`` (in both) whose file fingerprint differs."""
    if kind not in ("sink", "source"):
        return ()
    specs: Mapping[str, SinkSpec | SourceSpec] = new.sinks if kind == "sink" else new.sources
    modules = _modules(specs[name])
    return tuple(
        m
        for m in modules
        if old.code.get(m) is not None
        and new.code.get(m) is not None
        and old.code[m] != new.code[m]
    )


def _specs(graph: nx.DiGraph, kind: str) -> dict[str, Any]:
    return {data["name"]: data["spec"] for _, data in nodes_of(graph, kind)}


def _starts(graph: nx.DiGraph, sink: str) -> dict[str, str]:
    return {edge["stream"]: edge["start"] for edge in read_edges(graph, sink)}


def _is_blank(topology: Topology) -> bool:
    """The empty topology a start begins from (or a full stop ends at)."""
    return not (topology.name or topology.streams or topology.sources or topology.sinks)


def _unsupported(old: Topology, new: Topology) -> tuple[str, ...]:
    if _is_blank(old) or _is_blank(new):
        return ()
    reasons = []
    if old.name != new.name:
        reasons.append(
            f"name {old.name} -> {new.name}: the deployment name namespaces every engine key; "
            "stop the workers and start them with the new file"
        )
    # Never the URLs themselves: they may carry a password.
    if old.redis.url != new.redis.url:
        reasons.append("redis.url changed: restart the workers to move to another server")
    if old.redis.prefix != new.redis.prefix:
        reasons.append(
            f"redis.prefix {old.redis.prefix} -> {new.redis.prefix}: "
            "streams would move to other keys; restart the workers"
        )
    return tuple(reasons)


def _sink_change(
    name: str, old_graph: nx.DiGraph, new_graph: nx.DiGraph, code_changed: tuple[str, ...]
) -> SinkChange | None:
    old: SinkSpec = old_graph.nodes[f"sink:{name}"]["spec"]
    new: SinkSpec = new_graph.nodes[f"sink:{name}"]["spec"]
    old_starts, new_starts = _starts(old_graph, name), _starts(new_graph, name)
    change = SinkChange(
        name=name,
        streams_added=tuple(
            StreamRef(stream, start)
            for stream, start in new_starts.items()
            if stream not in old_starts
        ),
        streams_removed=tuple(stream for stream in old_starts if stream not in new_starts),
        consumers=(old.consumers, new.consumers) if old.consumers != new.consumers else None,
        restart=tuple(
            f.name
            for f in fields(SinkSpec)
            if f.name not in _LIVE_SINK_FIELDS and getattr(old, f.name) != getattr(new, f.name)
        ),
        starts_changed=tuple(
            (stream, old_starts[stream], start)
            for stream, start in new_starts.items()
            if stream in old_starts and old_starts[stream] != start
        ),
        code_changed=code_changed,
    )
    unchanged = SinkChange(name=name)
    return None if change == unchanged else change


def diff(old: Topology, new: Topology) -> Plan:
    """The plan that takes a runtime running ``old`` to ``new``."""
    old_graph, new_graph = build(old), build(new)
    sections: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}
    for kind in ("stream", "source", "sink"):
        before, after = _specs(old_graph, kind), _specs(new_graph, kind)
        sections[kind] = (
            tuple(name for name in after if name not in before),
            tuple(name for name in before if name not in after),
            tuple(
                name
                for name in after
                if name in before
                and (before[name] != after[name] or _code_changed(old, new, name, kind))
            ),
        )
    sink_changes = tuple(
        change
        for name in sections["sink"][2]
        if (
            change := _sink_change(
                name, old_graph, new_graph, _code_changed(old, new, name, "sink")
            )
        )
        is not None
    )
    return Plan(
        old=old,
        new=new,
        streams_added=sections["stream"][0],
        streams_removed=sections["stream"][1],
        streams_changed=sections["stream"][2],
        sinks_added=sections["sink"][0],
        sinks_removed=sections["sink"][1],
        sinks_changed=sink_changes,
        sources_added=sections["source"][0],
        sources_removed=sections["source"][1],
        sources_changed=sections["source"][2],
        unsupported=_unsupported(old, new),
    )
