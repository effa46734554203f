"""Checks the schema cannot express, then the model.

The schema says each value has the right shape; this module checks that the
values make sense together: names refer to declared streams, callables import,
regexes compile, start positions parse, the graph has no unintended cycle. It
runs even when the schema found errors (so one pass reports everything it
can), which is why every access below checks the type it reads.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from datetime import datetime
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from topology.callables import REF_PATTERN, CallableImportError, import_callable
from topology.config._problems import NodePath
from topology.config._yaml import Document, Raw
from topology.config.durations import parse_duration
from topology.config.model import (
    DEFAULT_ACK_GRACE,
    DEFAULT_BATCH,
    DEFAULT_CONSUMERS,
    DEFAULT_RETRY,
    DEFAULT_START,
    RedisSpec,
    RetryPolicy,
    SinkSpec,
    SourceSpec,
    StateSpec,
    StreamRef,
    StreamSpec,
    Topology,
)

__all__ = ["build_model", "semantic_problems", "start_problem"]

_URL_SCHEMES = ("redis", "rediss", "unix")
_ENTRY_ID = re.compile(r"\d+(-\d+)?")
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def start_problem(text: str) -> str | None:
    """Why ``text`` is not a start position, or None when it is one."""
    if text in ("oldest", "newest"):
        return None
    if text.startswith("after:"):
        entry = text[len("after:") :]
        if _ENTRY_ID.fullmatch(entry):
            return None
        return f"invalid entry id {entry!r} (expected <ms>-<seq>, e.g. after:1700000000000-0)"
    if text.startswith("at:"):
        when = text[len("at:") :]
        match = _RFC3339.fullmatch(when)
        if match:
            date, clock, fraction, zone = match.groups()
            fraction = (fraction or ".0")[1:7].ljust(6, "0")
            zone = "+00:00" if zone in ("Z", "z") else zone
            try:
                datetime.fromisoformat(f"{date}T{clock}.{fraction}{zone}")
                return None
            except ValueError as exc:
                return f"invalid time {when!r} in {text!r}: {exc}"
        return (
            f"invalid time {when!r} in {text!r} (expected RFC 3339, e.g. at:2024-05-01T12:00:00Z)"
        )
    return (
        f"invalid start {text!r}: expected oldest, newest, after:<entry id> or at:<RFC 3339 time>"
    )


def _unknown_stream(name: str, streams: list[str], what: str = "stream") -> str:
    close = get_close_matches(name, streams, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {name!r}{hint}"


class _Checker:
    def __init__(
        self, doc: Document, base_dir: Path | None, import_callables: bool, had_errors: bool
    ) -> None:
        self.had_errors = had_errors
        self.doc = doc
        self.data = _map(doc.data)
        self.base_dir = base_dir
        self.import_callables = import_callables
        self.problems: list[Raw] = []
        self.streams = list(_map(self.data.get("streams")))
        self.imported: dict[str, str | None] = {}

    def add(
        self, path: NodePath, message: str, *, key: bool = False, warning: bool = False
    ) -> None:
        line, col = self.doc.where_key(path) if key else self.doc.where(path)
        self.problems.append(Raw(line, col, path, message, "warning" if warning else "error"))

    def stream_name(self, path: NodePath, value: Any) -> None:
        name = _str(value)
        if name is not None and name and name not in self.streams:
            self.add(path, _unknown_stream(name, self.streams))

    def callable_ref(self, path: NodePath, value: Any) -> None:
        ref = _str(value)
        if ref is None or not self.import_callables or not re.match(REF_PATTERN, ref):
            return
        if ref not in self.imported:
            try:
                import_callable(ref, self.base_dir)
                self.imported[ref] = None
            except CallableImportError as exc:
                self.imported[ref] = str(exc)
        message = self.imported[ref]
        if message is not None:
            self.add(path, message)

    def callable_arity(self, path: NodePath, value: Any, args: int, call: str) -> None:
        """An error at ``path`` when the callable there cannot be called with ``args``
        positional arguments (the runtime would fail on every event otherwise)."""
        ref = _str(value)
        if ref is None or self.imported.get(ref, "not imported") is not None:
            return  # not imported, or the import error is already reported
        try:
            signature = inspect.signature(import_callable(ref, self.base_dir))
        except (CallableImportError, TypeError, ValueError):  # builtins may have none
            return
        try:
            signature.bind(*([None] * args))
        except TypeError as exc:
            self.add(path, f"{ref} is called as {call}: {exc}")

    def state(self, base: NodePath, sink: dict[str, Any]) -> None:
        """``state`` needs a ``key``; both change how the handler is called."""
        if "state" not in sink:
            self.callable_arity((*base, "handler"), sink.get("handler"), 1, "handler(event)")
            if "key" in sink:
                self.add(
                    (*base, "key"),
                    "key without state: ignored (add state: {} to keep state per key)",
                    key=True,
                    warning=True,
                )
            return
        if "key" not in sink:
            self.add(
                (*base, "state"),
                "state needs a key: a payload field, a dotted path (customer.id) or "
                "module:function (Event -> str)",
                key=True,
            )
        key = _str(sink.get("key"))
        if key is not None and re.match(REF_PATTERN, key):
            self.callable_ref((*base, "key"), key)
            self.callable_arity((*base, "key"), key, 1, "key(event)")
        elif key and "" in key.split("."):
            self.add(
                (*base, "key"),
                f"invalid key path {key!r}: field names joined by single dots (customer.id)",
            )
        self.callable_arity((*base, "handler"), sink.get("handler"), 2, "handler(event, state)")

    def start(self, path: NodePath, value: Any) -> None:
        text = _str(value)
        if text is not None and re.fullmatch(r"oldest|newest|after:.*|at:.*", text, re.S):
            message = start_problem(text)  # other strings: the schema already said
            if message:
                self.add(path, message)

    def run(self) -> list[Raw]:
        self.start(("defaults", "start"), _map(self.data.get("defaults")).get("start"))
        url = _str(_map(self.data.get("redis")).get("url"))
        if url:  # the message names the scheme only: a URL may hold a password
            scheme = url.split("://", 1)[0] if "://" in url else ""
            if scheme not in _URL_SCHEMES:
                shown = f"URL scheme {scheme!r}" if scheme else "URL without a scheme"
                self.add(
                    ("redis", "url"), f"unsupported {shown} (use redis://, rediss:// or unix://)"
                )
        for name, source in _map(self.data.get("sources")).items():
            source = _map(source)
            base = ("sources", name)
            self.callable_ref((*base, "handler"), source.get("handler"))
            self.stream_name((*base, "stream"), source.get("stream"))
            if name in _map(self.data.get("sinks")):
                self.add(base, f"name {name!r} is used by a source and a sink", key=True)
        for name, sink in _map(self.data.get("sinks")).items():
            self.sink(name, _map(sink))
        if not self.had_errors and not any(p.severity == "error" for p in self.problems):
            self.usage_warnings()  # on a broken file they are noise (a typo'd name is "unused")
        if self.data.get("allow_cycles") is not True:
            self.cycles()
        return self.problems

    def sink(self, name: str, sink: dict[str, Any]) -> None:
        base = ("sinks", name)
        for i, ref in enumerate(_list(sink.get("streams"))):
            if isinstance(ref, dict):
                self.stream_name((*base, "streams", i, "name"), ref.get("name"))
                self.start((*base, "streams", i, "start"), ref.get("start"))
            else:
                self.stream_name((*base, "streams", i), ref)
        outputs = _list(sink.get("outputs"))
        for i, out in enumerate(outputs):
            self.stream_name((*base, "outputs", i), out)
        dead_letter = _str(sink.get("dead_letter"))
        self.stream_name((*base, "dead_letter"), dead_letter)
        reads = [
            _map(r).get("name") if isinstance(r, dict) else r for r in _list(sink.get("streams"))
        ]
        if dead_letter is not None and dead_letter in reads:
            self.add(
                (*base, "dead_letter"),
                f"dead_letter {dead_letter!r} is a stream this sink reads:"
                " a failing event would come back forever",
            )
        self.callable_ref((*base, "handler"), sink.get("handler"))
        self.callable_ref((*base, "matcher"), sink.get("matcher"))
        self.state(base, sink)
        self.start((*base, "start"), sink.get("start"))
        pattern = _str(sink.get("topic_pattern"))
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                self.add((*base, "topic_pattern"), f"invalid regex: {exc}")
            except (RecursionError, OverflowError) as exc:  # nesting or repeat counts too big
                self.add((*base, "topic_pattern"), f"invalid regex: {exc}")
        filters = [key for key in ("topic", "topic_pattern", "matcher") if key in sink]
        if len(filters) > 1:
            later = max(filters, key=lambda k: self.doc.where_key((*base, k)))
            self.add(
                (*base, later),
                f"{' and '.join(filters)} are exclusive: a sink filters by one of them",
                key=True,
            )
        if len(outputs) > 1:
            self.add(
                (*base, "outputs"),
                f"{len(outputs)} outputs: the handler must name the stream of each Emit",
                warning=True,
            )
        if "retry" in sink and "dead_letter" not in sink:
            self.add(
                (*base, "retry"),
                "retry without dead_letter: events out of attempts are logged and acked",
                key=True,
                warning=True,
            )

    def usage_warnings(self) -> None:
        read: set[str] = set()
        written: set[str] = set()
        for source in _map(self.data.get("sources")).values():
            if isinstance(_str(_map(source).get("stream")), str):
                written.add(_map(source)["stream"])
        for sink in _map(self.data.get("sinks")).values():
            sink = _map(sink)
            for ref in _list(sink.get("streams")):
                name = _str(_map(ref).get("name")) if isinstance(ref, dict) else _str(ref)
                if name is not None:
                    read.add(name)
            written.update(o for o in _list(sink.get("outputs")) if isinstance(o, str))
            if isinstance(sink.get("dead_letter"), str):
                written.add(sink["dead_letter"])
        for name, sink in _map(self.data.get("sinks")).items():
            dlq = _str(_map(sink).get("dead_letter"))
            if dlq in self.streams and dlq not in read:
                self.add(
                    ("sinks", name, "dead_letter"),
                    f"dead-letter stream {dlq!r} is read by no sink",
                    warning=True,
                )
        for name in self.streams:
            if name not in read and name not in written:
                self.add(
                    ("streams", name),
                    f"stream {name!r} is neither written nor read by any source or sink",
                    key=True,
                    warning=True,
                )

    def cycles(self) -> None:
        """One error per strongly connected group of streams and sinks (via outputs)."""
        graph: dict[tuple[str, str], list[tuple[str, str]]] = {}
        out_index: dict[tuple[str, str], int] = {}
        for name, sink in _map(self.data.get("sinks")).items():
            sink = _map(sink)
            node = ("sink", name)
            graph.setdefault(node, [])
            for ref in _list(sink.get("streams")):
                stream = _str(_map(ref).get("name")) if isinstance(ref, dict) else _str(ref)
                if stream in self.streams:
                    graph.setdefault(("stream", stream), []).append(node)
            for i, out in enumerate(_list(sink.get("outputs"))):
                if isinstance(out, str) and out in self.streams:
                    graph[node].append(("stream", out))
                    out_index.setdefault((name, out), i)
        for component in _components(graph):
            starts = [s for s in self.streams if ("stream", s) in component]
            if not starts:
                continue
            cycle = _cycle_from(graph, ("stream", starts[0]), component)
            names = [n for _, n in cycle]
            last_sink = names[-2]
            path = ("sinks", last_sink, "outputs", out_index[(last_sink, names[-1])])
            self.add(
                path,
                f"cycle: {' -> '.join(names)} (set allow_cycles: true if it is intended)",
            )


def _components(graph: dict[Any, list[Any]]) -> Iterator[set[Any]]:
    """Strongly connected components with more than one node (Kosaraju, iterative)."""
    nodes = list(graph)
    for targets in graph.values():
        nodes.extend(t for t in targets if t not in graph)
    order: list[Any] = []
    seen: set[Any] = set()
    for root in nodes:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(graph.get(root, ())))]
        while stack:
            node, it = stack[-1]
            nxt = next((t for t in it if t not in seen), None)
            if nxt is None:
                stack.pop()
                order.append(node)
            else:
                seen.add(nxt)
                stack.append((nxt, iter(graph.get(nxt, ()))))
    reverse: dict[Any, list[Any]] = {}
    for node, targets in graph.items():
        for t in targets:
            reverse.setdefault(t, []).append(node)
    assigned: set[Any] = set()
    for root in reversed(order):
        if root in assigned:
            continue
        component = {root}
        assigned.add(root)
        todo = [root]
        while todo:
            for prev in reverse.get(todo.pop(), ()):
                if prev not in assigned:
                    assigned.add(prev)
                    component.add(prev)
                    todo.append(prev)
        if len(component) > 1:
            yield component


def _cycle_from(graph: dict[Any, list[Any]], start: Any, component: set[Any]) -> list[Any]:
    """Shortest path start -> ... -> start inside ``component`` (BFS)."""
    parents: dict[Any, Any] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for t in graph.get(node, ()):
                if t not in component:
                    continue
                if t == start:
                    chain = [node]
                    while chain[-1] != start:
                        chain.append(parents[chain[-1]])
                    return [*reversed(chain), start]
                if t not in parents:
                    parents[t] = node
                    following.append(t)
        frontier = following
    return [start, start]  # pragma: no cover - a component always has a cycle


def semantic_problems(
    doc: Document, base_dir: Path | None, import_callables: bool, *, had_errors: bool = False
) -> list[Raw]:
    """Problems beyond the schema; ``had_errors`` (earlier errors) mutes usage warnings."""
    return _Checker(doc, base_dir, import_callables, had_errors).run()


def _seconds(value: Any, default: float) -> float:
    return parse_duration(value) if isinstance(value, str) else default


def _retry(base: RetryPolicy, raw: Any) -> RetryPolicy:
    raw = _map(raw)
    return RetryPolicy(
        max_attempts=raw.get("max_attempts", base.max_attempts),
        backoff=_seconds(raw.get("backoff"), base.backoff),
        max_backoff=_seconds(raw.get("max_backoff"), base.max_backoff),
    )


def _state(raw: Any) -> StateSpec:
    ttl = _map(raw).get("ttl")
    return StateSpec(ttl=parse_duration(ttl) if isinstance(ttl, str) else None)


def build_model(data: dict[str, Any], path: Path | None) -> Topology:
    """The model of a document that passed every check (so types are right here)."""
    defaults = _map(data.get("defaults"))
    redis = _map(data.get("redis"))
    default_retry = _retry(DEFAULT_RETRY, defaults.get("retry"))
    streams = {
        name: StreamSpec(
            name=name,
            max_len=_map(spec).get("max_len"),
            ttl=_seconds(_map(spec).get("ttl"), 0.0) if "ttl" in _map(spec) else None,
            topics=tuple(_map(spec).get("topics", ())),
        )
        for name, spec in _map(data.get("streams")).items()
    }
    sources = {
        name: SourceSpec(
            name=name, handler=spec["handler"], stream=spec["stream"], topic=spec.get("topic")
        )
        for name, spec in _map(data.get("sources")).items()
    }
    sinks = {}
    for name, spec in _map(data.get("sinks")).items():
        refs = tuple(
            StreamRef(ref["name"], ref.get("start")) if isinstance(ref, dict) else StreamRef(ref)
            for ref in spec["streams"]
        )
        sinks[name] = SinkSpec(
            name=name,
            streams=refs,
            handler=spec["handler"],
            topic=spec.get("topic"),
            topic_pattern=spec.get("topic_pattern"),
            matcher=spec.get("matcher"),
            consumers=spec.get("consumers", defaults.get("consumers", DEFAULT_CONSUMERS)),
            outputs=tuple(spec.get("outputs", ())),
            start=spec.get("start", defaults.get("start", DEFAULT_START)),
            ack_grace=_seconds(
                spec.get("ack_grace"), _seconds(defaults.get("ack_grace"), DEFAULT_ACK_GRACE)
            ),
            batch=spec.get("batch", defaults.get("batch", DEFAULT_BATCH)),
            retry=_retry(default_retry, spec.get("retry")),
            dead_letter=spec.get("dead_letter"),
            key=spec.get("key"),
            state=_state(spec.get("state")) if "state" in spec else None,
        )
    return Topology(
        name=data["name"],
        version=int(data["version"]),
        allow_cycles=bool(data.get("allow_cycles", False)),
        redis=RedisSpec(url=redis.get("url") or None, prefix=redis.get("prefix", RedisSpec.prefix)),
        streams=streams,
        sources=sources,
        sinks=sinks,
        path=path,
    )
