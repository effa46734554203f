"""The flow graph as text: mermaid (the default), Graphviz DOT, and JSON.

All three read the graph of ``topology.graph.build`` and nothing else, so a
diagram shows exactly what the runtime will run.

**mermaid** (``mermaid(graph)``): a ``flowchart LR`` in the spirit of pulse's
diagrams. Sources (stadiums) write into streams; a stream that has topics is a
subgraph with its topics inside, a stream without is a cylinder; a sink is a
subgraph titled with its handler (and ``state by <key>`` for a stateful
sink), holding its consumers (``<sink>#<i>``; more than ``MAX_MERMAID_ACTORS``
fold into one node). Each read edge is labelled
with the sink's filter (``topic eu.orders``, ``/regex/`` for a pattern,
``matcher module:function``) and its start when not the default; outputs are
plain arrows, dead-letter edges are dashed. Names never reach the syntax
unescaped: node ids are ``<kind>_<ascii slug>`` made unique (so ``end``,
``graph``, dots, spaces, quotes and unicode are all safe) and labels go inside
quotes with every character mermaid could read as syntax written as an entity
code (``#quot;``, ``#35;``...). ``tools/check_mermaid.py`` renders the output
with mermaid 11.

**DOT** (``dot(graph)``): a ``digraph`` whose node ids are the graph's node
ids, every id and label quoted; each stream and its topics sit in a
``cluster``. A stateful sink has a double border (``peripheries=2``) and
``stateful=true``.

**JSON** (``as_json(graph)``), plain JSON-ready data::

    {
      "format": "ponos-topology.graph/1",
      "name": str, "version": int, "allow_cycles": bool,
      "redis": {"url": str | null (password masked), "prefix": str},
      "nodes": [
        {"id": "stream:orders", "kind": "stream", "name": "orders",
         "label": "orders", "detail": "max_len 100000",
         "spec": {"name": "orders", "max_len": 100000, "ttl": null,
                  "topics": ["eu.orders"]}},
        {"id": "topic:orders/eu.orders", "kind": "topic", "name": "eu.orders",
         "stream": "orders", ...},
        {"id": "actor:enrich#0", "kind": "actor", "name": "enrich#0",
         "sink": "enrich", "index": 0, ...},
        ...
      ],
      "edges": [
        {"source": "stream:orders", "target": "sink:enrich", "kind": "read",
         "stream": "orders", "filter": "pattern", "value": "eu\\\\..*", "start": "oldest"},
        {"source": "sink:enrich", "target": "stream:orders-dlq", "kind": "dlq"},
        ...
      ]
    }

``spec`` is the node's dataclass as a dict (tuples as lists, durations in
seconds, ``retry`` nested); topic and actor nodes have none. Edge attributes
are those of the graph (see ``topology.graph``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import networkx as nx

from topology.config.model import DEFAULT_START, SinkSpec
from topology.graph import nodes_of, state_detail, topic_id
from topology.redact import redact

__all__ = [
    "FORMATS",
    "MAX_MERMAID_ACTORS",
    "as_json",
    "dot",
    "dot_quote",
    "mermaid",
    "mermaid_ids",
    "mermaid_text",
    "redact_url",
    "render",
]

FORMATS = ("mermaid", "dot", "json")

#: Past this many consumers a sink's actors fold into one node: a diagram of a
#: sink with 64 consumers is about the sink, not 64 identical boxes.
MAX_MERMAID_ACTORS = 6


def redact_url(url: str | None) -> str | None:
    """``url`` with its password masked (``topology.runtime.connect.redact``, the one rule).

    Diagrams get pasted into tickets: a JSON graph never carries a password.
    """
    return None if url is None else redact(url)


# --------------------------------------------------------------------------- mermaid

_CLASS_DEFS = {
    "source": "fill:#e8f4e8,stroke:#3a7d3a,color:#1b3d1b",
    "stream": "fill:#e6eefa,stroke:#3a5f9e,color:#17294a",
    "topic": "fill:#f4f7fc,stroke:#6f8fc4,color:#17294a",
    "sink": "fill:#fdf1e3,stroke:#b86e1a,color:#4a2a05",
    "actor": "fill:#fffaf2,stroke:#d9a55f,color:#4a2a05",
}

# Characters mermaid reads as syntax even inside a quoted label: the quote,
# entity starts (# &), HTML (< >), markdown strings (`), edge-label bars, the
# ':' and '%' its preprocessing regexes look for (style/classDef lines,
# comments), '\' and ';'. Written as entity codes, mermaid turns them back
# into the characters.
_MERMAID_ENTITIES = {
    '"': "#quot;",
    "#": "#35;",
    "&": "#amp;",
    "<": "#lt;",
    ">": "#gt;",
    "`": "#96;",
    "|": "#124;",
    ":": "#58;",
    "%": "#37;",
    ";": "#59;",
    "\\": "#92;",
    "{": "#123;",
    "}": "#125;",
    "[": "#91;",
    "]": "#93;",
    "(": "#40;",
    ")": "#41;",
}
# Mermaid's own entity placeholders (encodeEntities uses these code points).
_MERMAID_PLACEHOLDERS = {"\ufb02", "\u00b0", "\u00b6"}


def mermaid_text(text: str) -> str:
    """``text`` safe inside a quoted mermaid label (the quotes are not added)."""
    out = []
    for char in text:
        if char in _MERMAID_ENTITIES:
            out.append(_MERMAID_ENTITIES[char])
        elif char in _MERMAID_PLACEHOLDERS or ord(char) < 32 or 0x7F <= ord(char) < 0xA0:
            out.append(f"#{ord(char)};")
        else:
            out.append(char)
    return "".join(out)


def _slug(text: str) -> str:
    """``text`` reduced to ASCII letters and digits joined by ``_`` (max 40 chars)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
    return slug[:40].rstrip("_")


def mermaid_ids(graph: nx.DiGraph) -> dict[str, str]:
    """A mermaid-safe, unique id for every node: ``<kind>_<ascii slug>[_<n>]``.

    The kind prefix keeps ids clear of mermaid's keywords (``end``, ``graph``,
    ``subgraph``, ``style``...) and of the ``o``/``x`` edge-end letters.
    """
    ids: dict[str, str] = {}
    used: set[str] = set()
    for node, data in graph.nodes(data=True):
        name = data["name"] if data["kind"] != "topic" else f"{data['stream']}_{data['name']}"
        # A name with no ASCII letter or digit (``🚀``, ``-->``) still gets a
        # recognisable id: the code point of its first character.
        slug = _slug(name) or (f"u{ord(name[0]):x}" if name else "blank")
        base = f"{data['kind']}_{slug}"
        candidate, n = base, 1
        while candidate in used:
            n += 1
            candidate = f"{base}_{n}"
        used.add(candidate)
        ids[node] = candidate
    return ids


def _label(data: dict[str, Any]) -> str:
    """A node's quoted label: its name, and its detail on a smaller second line."""
    text = mermaid_text(data["label"])
    if data.get("detail"):
        text += f"<br/><small>{mermaid_text(data['detail'])}</small>"
    return f'"{text}"'


def _title(name: str, detail: str) -> str:
    """A subgraph's quoted title, on one line: mermaid clips a second line of a title."""
    return f'"{mermaid_text(f"{name} · {detail}" if detail else name)}"'


def _read_label(edge: dict[str, Any]) -> str:
    kind, value = edge["filter"], edge["value"]
    if kind == "topic":
        parts = [f"topic {value}"]
    elif kind == "pattern":
        parts = [f"/{value}/"]
    elif kind == "matcher":
        parts = [f"matcher {value}"]
    else:
        parts = []
    if edge["start"] != DEFAULT_START:
        parts.append(f"from {edge['start']}")
    if edge.get("live_text"):  # graph --live
        parts.append(edge["live_text"])
    return ", ".join(parts)


def _arrow(style: str, label: str) -> str:
    return f'{style}|"{mermaid_text(label)}"|' if label else style


def mermaid(graph: nx.DiGraph) -> str:
    """The graph as a mermaid ``flowchart LR`` (see the module docstring)."""
    return _Mermaid(graph).draw()


class _Mermaid:
    """One mermaid drawing: its lines, and the nodes of each style class."""

    def __init__(self, graph: nx.DiGraph) -> None:
        self.graph = graph
        self.ids = mermaid_ids(graph)
        self.lines = ["flowchart LR"]
        self.classes: dict[str, list[str]] = {kind: [] for kind in _CLASS_DEFS}

    def draw(self) -> str:
        graph, ids, lines = self.graph, self.ids, self.lines
        name = graph.graph.get("name") or ""
        if name:
            lines.append(f"  %% topology {mermaid_text(name)}")
        for node, data in nodes_of(graph, "source"):
            self._node("source", node, f"([{_label(data)}])")
        for node, data in nodes_of(graph, "stream"):
            self._stream(node, data)
        for node, data in nodes_of(graph, "sink"):
            self._sink(node, data)
        for u, v, edge in graph.edges(data=True):
            arrow = self._edge(u, v, edge)
            if arrow is not None:
                lines.append(f"  {ids[u]} {arrow}")
        for kind, style in _CLASS_DEFS.items():
            lines.append(f"  classDef {kind} {style}")
        for kind, members in self.classes.items():
            if members:
                lines.append(f"  class {','.join(members)} {kind}")
        return "\n".join(lines) + "\n"

    def _node(self, kind: str, node: str, shape: str, indent: str = "  ") -> None:
        self.lines.append(f"{indent}{self.ids[node]}{shape}")
        self.classes[kind].append(self.ids[node])

    def _subgraph(self, kind: str, node: str, title: str) -> None:
        self.lines.append(f"  subgraph {self.ids[node]} [{title}]")
        self.classes[kind].append(self.ids[node])

    def _stream(self, node: str, data: dict[str, Any]) -> None:
        """A cylinder, or a subgraph holding the stream's topics."""
        graph = self.graph
        topics = [t for t in graph.successors(node) if graph.nodes[t]["kind"] == "topic"]
        if not topics:
            self._node("stream", node, f"[({_label(data)})]")
            return
        self._subgraph("stream", node, _title(data["label"], data["detail"]))
        for topic in topics:
            self._node("topic", topic, f"[{_label(graph.nodes[topic])}]", "    ")
        self.lines.append("  end")

    def _sink(self, node: str, data: dict[str, Any]) -> None:
        """A subgraph holding the sink's consumers (folded into one node past
        MAX_MERMAID_ACTORS); edges to and from the sink attach to the subgraph."""
        graph = self.graph
        spec: SinkSpec = data["spec"]
        actors = [a for a in graph.successors(node) if graph.nodes[a]["kind"] == "actor"]
        if not actors:  # no consumers: an empty subgraph would draw as nothing
            self._node("sink", node, f"[{_label(data)}]")
            return
        parts = (spec.handler, state_detail(spec), data.get("live_text"))  # + --live
        title = ", ".join(filter(None, parts))
        self._subgraph("sink", node, _title(spec.name, title))
        if len(actors) > MAX_MERMAID_ACTORS:
            first, last = graph.nodes[actors[0]]["label"], graph.nodes[actors[-1]]["label"]
            # mermaid_text only on the names: the <br/> and <small> are ours.
            count = f"<br/><small>{len(actors)} consumers</small>"
            text = f"{mermaid_text(first)} … {mermaid_text(last)}{count}"
            self._node("actor", actors[0], f'("{text}")', "    ")
        else:
            for actor in actors:
                self._node("actor", actor, f"({_label(graph.nodes[actor])})", "    ")
        self.lines.append("  end")

    def _edge(self, u: str, v: str, edge: dict[str, Any]) -> str | None:
        """The arrow and target of an edge; None for edges drawn by nesting (topics,
        consumers)."""
        graph, ids = self.graph, self.ids
        kind = edge["kind"]
        if kind == "write" and graph.nodes[u]["kind"] == "source":
            topic = edge.get("topic")
            target = ids[topic_id(graph.nodes[v]["name"], topic)] if topic is not None else ids[v]
            return f"--> {target}"
        if kind == "read":
            return f"{_arrow('-->', _read_label(edge))} {ids[v]}"
        if kind == "write":
            arrow = _arrow("-.->", "output, dead letter") if edge.get("dlq") else "-->"
            return f"{arrow} {ids[v]}"
        if kind == "dlq":
            return f"{_arrow('-.->', 'dead letter')} {ids[v]}"
        return None


# --------------------------------------------------------------------------- DOT

_DOT_SHAPES = {
    "source": "cds",
    "stream": "cylinder",
    "topic": "note",
    "sink": "box",
    "actor": "ellipse",
}


def dot_quote(text: str) -> str:
    """``text`` as a DOT quoted string (backslashes doubled, quotes and newlines escaped)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n")
    return f'"{escaped}"'


def _dot_label(data: dict[str, Any]) -> str:
    text = data["label"] + (f"\n{data['detail']}" if data.get("detail") else "")
    return dot_quote(text)


def dot(graph: nx.DiGraph) -> str:
    """The graph as a Graphviz ``digraph`` (see the module docstring)."""
    lines = [f"digraph {dot_quote(graph.graph.get('name') or 'topology')} {{"]
    lines.append("  rankdir=LR;")
    lines.append('  node [fontname="Helvetica", fontsize=11];')
    lines.append('  edge [fontname="Helvetica", fontsize=9];')

    def node_line(node: str, data: dict[str, Any], indent: str = "  ") -> str:
        # A stateful sink: a double border, and an attribute tools can select on.
        state = ", peripheries=2, stateful=true" if data.get("stateful") else ""
        return (
            f"{indent}{dot_quote(node)} [label={_dot_label(data)}, "
            f"shape={_DOT_SHAPES[data['kind']]}, kind={dot_quote(data['kind'])}{state}];"
        )

    for i, (node, data) in enumerate(nodes_of(graph, "stream")):
        topics = [t for t in graph.successors(node) if graph.nodes[t]["kind"] == "topic"]
        if not topics:
            lines.append(node_line(node, data))
            continue
        lines.append(f"  subgraph {dot_quote(f'cluster_{i}')} {{")
        lines.append(f"    label={dot_quote(data['name'])};")
        lines.append("    style=rounded;")
        lines.append(node_line(node, data, "    "))
        lines.extend(node_line(t, graph.nodes[t], "    ") for t in topics)
        lines.append("  }")
    for kind in ("source", "sink", "actor"):
        lines.extend(node_line(node, data) for node, data in nodes_of(graph, kind))

    for u, v, edge in graph.edges(data=True):
        attrs = {"kind": edge["kind"]}
        if edge["kind"] == "read":
            attrs["label"] = _read_label(edge)
        elif edge["kind"] == "write" and edge.get("topic"):
            attrs["label"] = f"topic {edge['topic']}"
        elif edge["kind"] == "dlq" or edge.get("dlq"):
            attrs["style"] = "dashed"
            attrs["label"] = "dead letter"
        elif edge["kind"] == "topic":
            attrs["style"] = "dotted"
            attrs["arrowhead"] = "none"
        rendered = ", ".join(f"{k}={dot_quote(str(val))}" for k, val in attrs.items() if val)
        lines.append(f"  {dot_quote(u)} -> {dot_quote(v)} [{rendered}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- JSON


def _plain(value: Any) -> Any:
    """``value`` with dataclasses as dicts and tuples as lists: json.dumps-ready."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def as_json(graph: nx.DiGraph) -> dict[str, Any]:
    """The graph as JSON-ready data (shape in the module docstring)."""
    redis = graph.graph.get("redis")
    nodes = []
    for node, data in graph.nodes(data=True):
        entry: dict[str, Any] = {"id": node}
        for key, value in data.items():
            entry[key] = _plain(value)
        nodes.append(entry)
    edges = [
        {"source": u, "target": v, **{k: _plain(val) for k, val in data.items()}}
        for u, v, data in graph.edges(data=True)
    ]
    return {
        "format": "ponos-topology.graph/1",
        "name": graph.graph.get("name"),
        "version": graph.graph.get("version"),
        "allow_cycles": graph.graph.get("allow_cycles"),
        "redis": {
            "url": redact_url(redis.url) if redis is not None else None,
            "prefix": redis.prefix if redis is not None else None,
        },
        "nodes": nodes,
        "edges": edges,
    }


def render(graph: nx.DiGraph, fmt: str = "mermaid") -> str:
    """The graph in format ``fmt`` (one of ``FORMATS``) as text."""
    if fmt == "mermaid":
        return mermaid(graph)
    if fmt == "dot":
        return dot(graph)
    if fmt == "json":
        import json

        return json.dumps(as_json(graph), indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
