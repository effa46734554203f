"""The topology as a ``networkx.DiGraph``: the one structure rendering, validation and plans read.

The validated model (``topology.config.model``) says what each sink *is*; the
graph says how events *flow*. Rendering (``topology.render``), the cycle check
and the hot-reload plan (``topology.plan``) all derive from it, so the graph
carries everything the runtime needs: every node keeps its spec dataclass and
every read edge keeps the filter and the start position.

Nodes (ids are typed by a prefix so a stream and a sink may share a name):

==========================  ========  ==========================================
id                          ``kind``  other attributes
==========================  ========  ==========================================
``source:<name>``           source    ``name``, ``spec`` (SourceSpec)
``stream:<name>``           stream    ``name``, ``spec`` (StreamSpec)
``topic:<stream>/<topic>``  topic     ``name`` (the topic), ``stream``
``sink:<name>``             sink      ``name``, ``spec`` (SinkSpec), ``stateful``
``actor:<sink>#<i>``        actor     ``name`` (``<sink>#<i>``), ``sink``, ``index``
==========================  ========  ==========================================

``stateful`` is True for a sink with keyed state (``key`` and ``state``); its
detail then says ``state by <key>`` and the state's ttl.

Every node also has ``label`` (what a diagram prints first) and ``detail``
(a short second line: handler, retention, ...). In a topic id, ``%`` and ``/``
of the stream name are percent-escaped so ``topic:`` ids never collide.

Edges (attribute ``kind``):

- ``write``: source -> stream, sink -> stream (its outputs). A source edge has
  ``topic`` (its default topic, or None).
- ``topic``: stream -> topic, for declared topics, a source's default topic and
  topics named by sink ``topic:`` filters.
- ``read``: stream or topic -> sink, with ``stream`` (the stream read),
  ``filter`` (``topic`` | ``pattern`` | ``matcher`` | ``all``), ``value`` (the
  topic, the regex, the ``module:attribute`` of the matcher, or None) and
  ``start`` (the effective start of the sink's group on that stream). A
  ``topic`` filter reads from the topic node, the others from the stream node.
- ``consumer``: sink -> actor, one per consumer, with ``index``.
- ``dlq``: sink -> its dead-letter stream. When the dead-letter stream is also
  an output, the single sink -> stream edge is ``write`` with ``dlq=True`` (a
  DiGraph holds one edge per pair).

Graph attributes: ``name``, ``version``, ``allow_cycles``, ``redis``
(RedisSpec), ``path`` and ``topology`` (the model itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import networkx as nx

from topology.config.model import SinkSpec, SourceSpec, StreamSpec, Topology, format_duration

__all__ = [
    "actor_id",
    "build",
    "cycles",
    "format_duration",
    "nodes_of",
    "read_edges",
    "sink_filter",
    "sink_id",
    "source_id",
    "state_detail",
    "stream_id",
    "topic_id",
]


def source_id(name: str) -> str:
    return f"source:{name}"


def stream_id(name: str) -> str:
    return f"stream:{name}"


def topic_id(stream: str, topic: str) -> str:
    # Escape the separator in the stream part only: stream "a/b" + topic "c" and
    # stream "a" + topic "b/c" must not share a node.
    escaped = stream.replace("%", "%25").replace("/", "%2F")
    return f"topic:{escaped}/{topic}"


def sink_id(name: str) -> str:
    return f"sink:{name}"


def actor_id(sink: str, index: int) -> str:
    return f"actor:{sink}#{index}"


def sink_filter(sink: SinkSpec) -> tuple[str, str | None]:
    """``(filter kind, value)`` of a sink: ``topic``, ``pattern``, ``matcher`` or ``all``.

    The schema makes the three keys exclusive; should a hand-built model set
    several, the most selective wins (topic, then pattern, then matcher), the
    same order the runtime applies.
    """
    if sink.topic is not None:
        return "topic", sink.topic
    if sink.topic_pattern is not None:
        return "pattern", sink.topic_pattern
    if sink.matcher is not None:
        return "matcher", sink.matcher
    return "all", None


def _stream_detail(spec: StreamSpec) -> str:
    return spec.trimmed_by


def state_detail(spec: SinkSpec) -> str:
    """``state by <key>[, ttl <d>]`` for a stateful sink, else ``""``."""
    if spec.state is None:
        return ""
    ttl = "" if spec.state.ttl is None else f", ttl {format_duration(spec.state.ttl)}"
    return f"state by {spec.key}{ttl}"


def _sink_detail(spec: SinkSpec) -> str:
    consumers = f"{spec.consumers} consumer" + ("" if spec.consumers == 1 else "s")
    return ", ".join(filter(None, (spec.handler, consumers, state_detail(spec))))


def _source_detail(spec: SourceSpec) -> str:
    return spec.handler


def _ensure_topic(graph: nx.DiGraph, stream: str, topic: str) -> str:
    node = topic_id(stream, topic)
    if node not in graph:
        graph.add_node(node, kind="topic", name=topic, stream=stream, label=topic, detail="")
        graph.add_edge(stream_id(stream), node, kind="topic")
    return node


def _ensure_stream(graph: nx.DiGraph, name: str) -> str:
    # The loader guarantees every referenced stream is declared; a hand-built
    # model may not, and a graph with an implicit stream beats a KeyError.
    node = stream_id(name)
    if node not in graph:
        spec = StreamSpec(name=name)
        graph.add_node(node, kind="stream", name=name, spec=spec, label=name, detail="")
    return node


def build(topology: Topology) -> nx.DiGraph:
    """The flow graph of ``topology`` (see the module docstring for its shape).

    Nodes are added in config order (streams, sources, sinks) so every
    renderer's output is stable for a given file.
    """
    graph = nx.DiGraph(
        name=topology.name,
        version=topology.version,
        allow_cycles=topology.allow_cycles,
        redis=topology.redis,
        path=topology.path,
        topology=topology,
    )
    for stream in topology.streams.values():
        graph.add_node(
            stream_id(stream.name),
            kind="stream",
            name=stream.name,
            spec=stream,
            label=stream.name,
            detail=_stream_detail(stream),
        )
        for topic in stream.topics:
            _ensure_topic(graph, stream.name, topic)

    for source in topology.sources.values():
        target = _ensure_stream(graph, source.stream)
        graph.add_node(
            source_id(source.name),
            kind="source",
            name=source.name,
            spec=source,
            label=source.name,
            detail=_source_detail(source),
        )
        if source.topic is not None:
            _ensure_topic(graph, source.stream, source.topic)
        graph.add_edge(source_id(source.name), target, kind="write", topic=source.topic)

    for sink in topology.sinks.values():
        node = sink_id(sink.name)
        graph.add_node(
            node,
            kind="sink",
            name=sink.name,
            spec=sink,
            label=sink.name,
            detail=_sink_detail(sink),
            stateful=sink.state is not None,
        )
        kind, value = sink_filter(sink)
        for ref in sink.streams:
            origin = _ensure_stream(graph, ref.name)
            if kind == "topic":
                assert value is not None
                origin = _ensure_topic(graph, ref.name, value)
            graph.add_edge(
                origin,
                node,
                kind="read",
                stream=ref.name,
                filter=kind,
                value=value,
                start=sink.start_of(ref.name),
            )
        for index in range(sink.consumers):
            actor = actor_id(sink.name, index)
            graph.add_node(
                actor,
                kind="actor",
                name=f"{sink.name}#{index}",
                sink=sink.name,
                index=index,
                label=f"{sink.name}#{index}",
                detail="",
            )
            graph.add_edge(node, actor, kind="consumer", index=index)
        for output in sink.outputs:
            graph.add_edge(node, _ensure_stream(graph, output), kind="write", dlq=False)
        if sink.dead_letter is not None:
            target = _ensure_stream(graph, sink.dead_letter)
            if graph.has_edge(node, target):
                graph.edges[node, target]["dlq"] = True
            else:
                graph.add_edge(node, target, kind="dlq")
    return graph


def nodes_of(graph: nx.DiGraph, kind: str) -> Iterator[tuple[str, dict]]:
    """``(id, attributes)`` of every node of ``kind``, in insertion order."""
    for node, data in graph.nodes(data=True):
        if data.get("kind") == kind:
            yield node, data


def read_edges(graph: nx.DiGraph, sink: str) -> list[dict]:
    """The read edges of sink ``sink`` (a sink *name*), in config order of its streams.

    Each is the edge's attribute dict (``stream``, ``filter``, ``value``,
    ``start``): what the runtime needs to create and read the sink's groups.
    """
    spec: SinkSpec = graph.nodes[sink_id(sink)]["spec"]
    order = {name: i for i, name in enumerate(spec.stream_names)}
    edges = [
        data
        for _, _, data in graph.in_edges(sink_id(sink), data=True)
        if data.get("kind") == "read"
    ]
    return sorted(edges, key=lambda data: order.get(data["stream"], len(order)))


def _flow_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """Streams and sinks only, with an edge wherever events can pass.

    A topic node folds into its stream; dead-letter edges count, since events
    a sink dead-letters can come back round if a sink re-reads them.
    """
    flow = nx.DiGraph()
    for node, data in graph.nodes(data=True):
        if data["kind"] in ("stream", "sink"):
            flow.add_node(node)
    for u, v, data in graph.edges(data=True):
        if data["kind"] == "read":
            flow.add_edge(stream_id(data["stream"]), v)
        elif data["kind"] in ("write", "dlq") and graph.nodes[u]["kind"] == "sink":
            flow.add_edge(u, v)
    return flow


def cycles(graph: nx.DiGraph, limit: int | None = None) -> list[list[str]]:
    """Every elementary cycle between sinks and streams, as lists of node ids.

    Each cycle starts at its smallest node id and the list is sorted, so the
    loader's error message is the same on every run. ``limit`` stops the search
    after that many: a dense graph has exponentially many cycles.
    """
    found = []
    for cycle in islice(nx.simple_cycles(_flow_graph(graph)), limit):
        pivot = cycle.index(min(cycle))
        found.append(cycle[pivot:] + cycle[:pivot])
    return sorted(found, key=lambda c: (len(c), c))
