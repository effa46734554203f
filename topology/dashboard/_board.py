"""The dashboard's snapshot: ``topology.observe.collect`` plus the graph, rates and history.

Where the topology comes from depends on who serves the page: the config file
(``dashboard CONFIG``: read again whenever it changes, as ``run`` reloads it),
the version ``apply`` published (``dashboard --deployment NAME``), or the
running runtime itself (``run --ui-port``). Each is a :data:`TopologyFn`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from topology.config.model import Topology
from topology.dashboard._flow import Flow
from topology.redact import redact_text

__all__ = ["FORMAT", "Board", "TopologyFn", "from_file", "from_published", "from_runtime"]

FORMAT = "ponos-topology.dashboard/1"

#: ``fn(client) -> (topology, problem)``: the topology to show now, and why it is
#: not the newest one (an invalid edit, an unusable published version) or None.
TopologyFn = Callable[[Any], Awaitable[tuple[Topology, "str | None"]]]


def from_file(path: Path, first: Topology) -> TopologyFn:
    """The config file, validated again (handlers not imported) whenever it changes."""
    state: dict[str, Any] = {"stamp": _stamp(path), "topology": first, "problem": None}

    async def current(_client: Any) -> tuple[Topology, str | None]:
        stamp = _stamp(path)
        if stamp != state["stamp"]:
            from topology.config import check

            state["stamp"] = stamp
            topology, problems = check(path, import_callables=False)
            if topology is None:
                state["problem"] = "; ".join(str(p) for p in problems if p.is_error)
            else:
                state["topology"], state["problem"] = topology, None
        return state["topology"], state["problem"]

    return current


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


def from_published(deployment: str) -> TopologyFn:
    """The version ``apply`` published for ``deployment`` (validated, handlers not imported)."""
    state: dict[str, Any] = {
        "version": None,
        "topology": Topology.empty(deployment),
        "problem": f"nothing published for {deployment!r} yet (ponos-topology apply CONFIG)",
    }

    async def current(client: Any) -> tuple[Topology, str | None]:
        from topology.config import check_text
        from topology.runtime.deployment import read_published

        published = await read_published(client, deployment)
        if published is None or published.version == state["version"]:
            return state["topology"], state["problem"]
        state["version"] = published.version
        topology, problems = check_text(
            published.text, path=published.source, import_callables=False
        )
        if topology is None:
            errors = "; ".join(str(p) for p in problems if p.is_error)
            state["problem"] = f"version {published.version} is invalid: {errors}"
        elif topology.name != deployment:
            state["problem"] = f"version {published.version} is named {topology.name!r}"
        else:
            state["topology"], state["problem"] = topology, None
        return state["topology"], state["problem"]

    return current


def from_runtime(runtime: Any) -> TopologyFn:
    """What a running ``Runtime`` applied last (``run --ui-port``)."""

    async def current(_client: Any) -> tuple[Topology, str | None]:
        return runtime.topology, None

    return current


class Board:
    """Builds each snapshot the hub hands out (shape: the README's "Dashboard" section)."""

    def __init__(
        self, client: Any, url_redacted: str, topology_fn: TopologyFn, *, interval: float
    ) -> None:
        self.client = client
        self.url = url_redacted
        self.topology_fn = topology_fn
        self.interval = interval
        self.flow = Flow(interval)
        self._last: dict[str, Any] | None = None

    async def poll(self) -> dict[str, Any]:
        from redis.exceptions import RedisClusterException, RedisError

        from topology.observe import collect
        from topology.streams import Connection

        now = time.time()
        try:
            topology, problem = await self.topology_fn(self.client)
            conn = Connection(self.client, prefix=topology.redis.prefix)
            data = await collect(self.client, conn, topology, self.url)
        except (RedisError, RedisClusterException, OSError, asyncio.TimeoutError) as exc:
            return self._unreachable(now, exc)
        self.flow.update(now, data)
        snapshot = self._compose(now, topology, data)
        snapshot["config"]["problem"] = problem
        self._last = snapshot
        return snapshot

    def _unreachable(self, now: float, exc: BaseException) -> dict[str, Any]:
        """The last figures, marked stale: the page keeps its picture and says why."""
        reason = redact_text(str(exc)) or type(exc).__name__
        base = dict(self._last) if self._last is not None else self._empty()
        base.update(time=now, ok=False, error=f"Redis unreachable: {reason}")
        return base

    def _empty(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "interval": self.interval,
            "deployment": "",
            "redis": self.url,
            "config": {"name": "", "path": None, "problem": None},
            "published": None,
            "graph": {"mermaid": "", "ids": {}},
            "streams": {},
            "reads": [],
            "sinks": {},
            "sources": {},
            "workers": {},
            "reloads": [],
        }

    def _compose(self, now: float, topology: Topology, data: dict[str, Any]) -> dict[str, Any]:
        from topology.graph import build
        from topology.observe import annotate
        from topology.render import mermaid, mermaid_ids

        live = {w for w, entry in data["workers"].items() if entry.get("live")}
        graph = build(topology)
        annotate(graph, data)
        streams = {
            name: {**info, "per_s": round(self.flow.stream_rate(name), 2)}
            for name, info in data["streams"].items()
        }
        reads = [
            {"stream": edge["stream"], "sink": graph.nodes[v]["name"], **edge["live"]}
            for _, v, edge in graph.edges(data=True)
            if edge.get("kind") == "read"
        ]
        sinks = {name: self._sink(name, sink, graph, live) for name, sink in data["sinks"].items()}
        self.flow.forget_sinks(set(sinks))
        _label(graph, streams, sinks)
        return {
            "format": FORMAT,
            "time": now,
            "interval": self.interval,
            "ok": True,
            "error": None,
            "deployment": data["deployment"],
            "redis": data["redis"],
            "config": {
                "name": topology.name,
                "path": None if topology.path is None else str(topology.path),
                "problem": None,
            },
            "published": data["published"],
            "graph": {"mermaid": mermaid(graph), "ids": mermaid_ids(graph)},
            "streams": streams,
            "reads": reads,
            "sinks": sinks,
            "sources": data["sources"],
            "workers": data["workers"],
            "reloads": self.flow.reloads,
        }

    def _sink(self, name: str, sink: dict[str, Any], graph: Any, live: set[str]) -> dict[str, Any]:
        node = graph.nodes[f"sink:{name}"]
        flow = self.flow.sink(name, live)
        history = self.flow.record(name, flow["handled_per_s"], flow["failed_per_s"])
        consumers = len(
            {c["name"] for s in sink["streams"].values() for c in s.get("consumers", [])}
        )
        return {
            **sink,
            **flow,
            "lag": node["live"]["lag"],
            "consumers": consumers,
            "history": history,
        }


def _rate(value: float) -> str:
    return f"{value:.0f}/s" if value >= 10 or value == 0 else f"{value:.1f}/s"


def _label(graph: Any, streams: dict[str, Any], sinks: dict[str, Any]) -> None:
    """The figures the diagram prints: a stream's rate, a sink's flow and dead letters."""
    from topology.graph import nodes_of

    for _node, data in nodes_of(graph, "stream"):
        data["detail"] = f"{data['detail']}, {_rate(streams[data['name']]['per_s'])}"
    for _node, data in nodes_of(graph, "sink"):
        sink = sinks.get(data["name"])
        if sink is None:
            continue
        parts = [f"{_rate(sink['handled_per_s'])}", f"failed {_rate(sink['failed_per_s'])}"]
        if sink["dead_letter"] is not None:
            parts.append(f"dead letters {sink['dead_letter']['count']}")
        parts.append(data["live_text"])
        data["live_text"] = ", ".join(parts)
