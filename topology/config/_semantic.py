"""Checks the schema cannot express.

The schema says each value has the right shape; this module checks that the
values make sense together: names refer to declared streams and are names the
streams layer accepts, callables import and can take what they are given,
regexes compile, start positions parse (with the streams layer's own parser),
and, once the model is built, the graph has no unintended cycle. Apart from
the cycles it runs even when the schema found errors (so one pass reports
everything it can), which is why every read below goes through ``_raw``.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
from collections.abc import Callable
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from topology.callables import REF_PATTERN, CallableImportError, Origins, import_callable
from topology.config._problems import NodePath
from topology.config._raw import as_list, as_map, as_str, ref_name
from topology.config._redis_url import redis_url_problem
from topology.config._yaml import Document, Raw
from topology.config.durations import parse_duration
from topology.config.model import Topology
from topology.streams import parse_start, stream_name_problem

__all__ = ["MAX_CYCLES", "cycle_problems", "semantic_problems"]

#: Cycles reported at most: a dense graph has exponentially many.
MAX_CYCLES = 20

#: How the runtime calls each kind of callable, and the argument lists that fit.
_CALLS: dict[str, tuple[str, tuple[tuple[None, ...], ...]]] = {
    "sink": ("handler(event)", ((None,),)),
    "stateful sink": ("handler(event, state)", ((None, None),)),
    "key": ("key(event)", ((None,),)),
    "matcher": ("matcher(event)", ((None,),)),
    "source": ("handler() or handler(ctx)", ((), (None,))),
}


def _unknown_stream(name: str, streams: list[str], what: str = "stream") -> str:
    close = get_close_matches(name, streams, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {name!r}{hint}"


def _signature_problem(fn: Callable[..., Any], ref: str, kind: str) -> str | None:
    """Why the runtime could not call ``fn`` the way it calls a ``kind``, or None."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # no signature to read (some builtins): trust it
        return None
    call, argument_lists = _CALLS[kind]
    for args in argument_lists:
        try:
            signature.bind(*args)
            return None
        except TypeError:
            continue
    bare = signature.replace(
        parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
        return_annotation=signature.empty,
    )
    return f"{ref}{bare} cannot be called as {call}"


class _Checker:
    def __init__(
        self,
        doc: Document,
        base_dir: Path | None,
        import_callables: bool,
        had_errors: bool,
        origins: Origins | None = None,
    ) -> None:
        self.had_errors = had_errors
        self.origins = origins or Origins()
        self.doc = doc
        self.data = as_map(doc.data)
        self.base_dir = base_dir
        self.import_callables = import_callables
        self.problems: list[Raw] = []
        self.streams = list(as_map(self.data.get("streams")))
        self.imported: dict[str, Callable[..., Any] | str] = {}

    def add(
        self, path: NodePath, message: str, *, key: bool = False, warning: bool = False
    ) -> None:
        line, col = self.doc.where_key(path) if key else self.doc.where(path)
        self.problems.append(Raw(line, col, path, message, "warning" if warning else "error"))

    def stream_name(self, path: NodePath, value: Any) -> None:
        name = as_str(value)
        if name and name not in self.streams:
            self.add(path, _unknown_stream(name, self.streams))

    def callable_ref(self, path: NodePath, value: Any, kind: str) -> None:
        ref = as_str(value)
        if ref is None or not self.import_callables or not re.match(REF_PATTERN, ref):
            return
        if ref not in self.imported:
            # A module that prints at import must not corrupt what a command
            # prints on stdout (graph -f json, validate --format json).
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    self.imported[ref] = import_callable(ref, self.base_dir, origins=self.origins)
            except CallableImportError as exc:
                self.imported[ref] = str(exc)
        found = self.imported[ref]
        message = found if isinstance(found, str) else _signature_problem(found, ref, kind)
        if message is not None:
            self.add(path, message)
            return
        warning = self.origins.warning(ref.split(":", 1)[0])
        if warning is not None:
            self.add(path, warning, warning=True)

    def start(self, path: NodePath, value: Any) -> None:
        text = as_str(value)
        if text is not None and re.fullmatch(r"oldest|newest|after:.*|at:.*", text, re.S):
            try:  # other strings: the schema already said
                parse_start(text)
            except ValueError as exc:
                self.add(path, str(exc))

    def positive(self, path: NodePath, value: Any) -> None:
        """A duration that must not be zero (a zero ttl or ack_grace cannot work)."""
        try:
            seconds = parse_duration(value) if isinstance(value, str) else None
        except ValueError:
            return  # the schema said
        if seconds == 0:
            self.add(path, f"must be more than 0, got {value!r}")

    def run(self) -> list[Raw]:
        defaults = as_map(self.data.get("defaults"))
        self.start(("defaults", "start"), defaults.get("start"))
        self.positive(("defaults", "ack_grace"), defaults.get("ack_grace"))
        self.positive(("defaults", "timeout"), defaults.get("timeout"))
        self.positive(("redis", "timeout"), as_map(self.data.get("redis")).get("timeout"))
        self.redis_url(as_str(as_map(self.data.get("redis")).get("url")))
        self.declared_streams()
        for name, source in as_map(self.data.get("sources")).items():
            self.source(name, as_map(source))
        for name, sink in as_map(self.data.get("sinks")).items():
            self.sink(name, as_map(sink))
        if not self.had_errors and not any(p.severity == "error" for p in self.problems):
            self.usage_warnings()  # on a broken file they are noise (a typo'd name is "unused")
        return self.problems

    def redis_url(self, url: str | None) -> None:
        message = redis_url_problem(url) if url else None
        if message is not None:
            self.add(("redis", "url"), message)

    def declared_streams(self) -> None:
        for name, spec in as_map(self.data.get("streams")).items():
            message = stream_name_problem(name) if name else None  # empty: the schema said
            if message is not None:
                self.add(("streams", name), message, key=True)
            self.positive(("streams", name, "ttl"), as_map(spec).get("ttl"))

    def source(self, name: str, source: dict[str, Any]) -> None:
        base = ("sources", name)
        self.callable_ref((*base, "handler"), source.get("handler"), "source")
        self.stream_name((*base, "stream"), source.get("stream"))
        if name in as_map(self.data.get("sinks")):
            self.add(base, f"name {name!r} is used by a source and a sink", key=True)

    def sink_streams(self, base: NodePath, sink: dict[str, Any]) -> list[str | None]:
        """Check what the sink reads; the names, in order."""
        reads: list[str | None] = []
        for i, ref in enumerate(as_list(sink.get("streams"))):
            name = ref_name(ref)
            path = (*base, "streams", i, "name") if isinstance(ref, dict) else (*base, "streams", i)
            self.stream_name(path, name)
            if isinstance(ref, dict):
                self.start((*base, "streams", i, "start"), ref.get("start"))
            if name and name in reads:
                self.add(path, f"stream {name!r} is listed twice")
            reads.append(name)
        return reads

    def sink(self, name: str, sink: dict[str, Any]) -> None:
        base = ("sinks", name)
        reads = self.sink_streams(base, sink)
        for i, out in enumerate(as_list(sink.get("outputs"))):
            self.stream_name((*base, "outputs", i), out)
        dead_letter = as_str(sink.get("dead_letter"))
        self.stream_name((*base, "dead_letter"), dead_letter)
        if dead_letter is not None and dead_letter in reads:
            self.add(
                (*base, "dead_letter"),
                f"dead_letter {dead_letter!r} is a stream this sink reads:"
                " a failing event would come back forever",
            )
        kind = "stateful sink" if "state" in sink else "sink"
        self.callable_ref((*base, "handler"), sink.get("handler"), kind)
        self.callable_ref((*base, "matcher"), sink.get("matcher"), "matcher")
        self.state(base, sink)
        self.start((*base, "start"), sink.get("start"))
        self.positive((*base, "ack_grace"), sink.get("ack_grace"))
        self.positive((*base, "timeout"), sink.get("timeout"))
        self.topic_pattern((*base, "topic_pattern"), as_str(sink.get("topic_pattern")))
        self.filters(base, sink)
        if "retry" in sink and "dead_letter" not in sink:
            self.add(
                (*base, "retry"),
                "retry without dead_letter: events out of attempts are logged and acked",
                key=True,
                warning=True,
            )

    def state(self, base: NodePath, sink: dict[str, Any]) -> None:
        """``state`` needs a ``key``: a payload field path, or a function of the event."""
        if "state" not in sink:
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
        key = as_str(sink.get("key"))
        if key is not None and re.match(REF_PATTERN, key):
            self.callable_ref((*base, "key"), key, "key")
        elif key and "" in key.split("."):
            self.add(
                (*base, "key"),
                f"invalid key path {key!r}: field names joined by single dots (customer.id)",
            )

    def topic_pattern(self, path: NodePath, pattern: str | None) -> None:
        if pattern is None:
            return
        try:
            re.compile(pattern)
        except re.error as exc:
            self.add(path, f"invalid regex: {exc}")
        except (RecursionError, OverflowError) as exc:  # nesting or repeat counts too big
            self.add(path, f"invalid regex: {exc}")

    def filters(self, base: NodePath, sink: dict[str, Any]) -> None:
        filters = [key for key in ("topic", "topic_pattern", "matcher") if key in sink]
        if len(filters) > 1:
            later = max(filters, key=lambda k: self.doc.where_key((*base, k)))
            self.add(
                (*base, later),
                f"{' and '.join(filters)} are exclusive: a sink filters by one of them",
                key=True,
            )

    def usage_warnings(self) -> None:
        read: set[str] = set()
        written: set[str] = set()
        for source in as_map(self.data.get("sources")).values():
            stream = as_str(as_map(source).get("stream"))
            if stream is not None:
                written.add(stream)
        for sink in as_map(self.data.get("sinks")).values():
            sink = as_map(sink)
            read.update(n for n in map(ref_name, as_list(sink.get("streams"))) if n is not None)
            written.update(o for o in as_list(sink.get("outputs")) if isinstance(o, str))
            if isinstance(sink.get("dead_letter"), str):
                written.add(sink["dead_letter"])
        for name, sink in as_map(self.data.get("sinks")).items():
            dlq = as_str(as_map(sink).get("dead_letter"))
            if dlq in self.streams and dlq not in read:
                self.add(
                    ("sinks", name, "dead_letter"),
                    f"dead-letter stream {dlq!r} is read by no sink",
                    warning=True,
                )
        self.lossy_warnings(read)
        for name in self.streams:
            if name not in read and name not in written:
                self.add(
                    ("streams", name),
                    f"stream {name!r} is neither written nor read by any source or sink",
                    key=True,
                    warning=True,
                )

    def lossy_warnings(self, read: set[str]) -> None:
        """A trimmed stream a sink reads can lose events the sink has not read yet."""
        for name, spec in as_map(self.data.get("streams")).items():
            spec = as_map(spec)
            options = [o for o in ("max_len", "ttl") if o in spec]
            if name not in read or not options or spec.get("lossy") is True:
                continue
            self.add(
                ("streams", name, options[0]),
                f"stream {name!r} is trimmed ({' and '.join(options)}) and read by a sink: "
                "what is trimmed before a sink reads it is lost to that sink; add "
                "`lossy: true` to the stream if that is accepted",
                key=True,
                warning=True,
            )


def semantic_problems(
    doc: Document,
    base_dir: Path | None,
    import_callables: bool,
    *,
    had_errors: bool = False,
    origins: Origins | None = None,
) -> list[Raw]:
    """Problems beyond the schema; ``had_errors`` (earlier errors) mutes usage warnings.

    ``origins`` restricts where callables may come from (a deployment's rule).
    """
    return _Checker(doc, base_dir, import_callables, had_errors, origins).run()


def _closing_edge(topology: Topology, sink: str, stream: str) -> NodePath:
    """Where ``sink`` writes to ``stream``: the output, else the dead letter."""
    outputs = topology.sinks[sink].outputs
    if stream in outputs:
        return ("sinks", sink, "outputs", outputs.index(stream))
    return ("sinks", sink, "dead_letter")


def cycle_problems(topology: Topology, doc: Document) -> list[Raw]:
    """One error per cycle of the flow graph (``topology.graph``), up to :data:`MAX_CYCLES`.

    Each reads from the stream declared first, and is located where its last
    sink writes back into that stream.
    """
    from topology.graph import build, cycles

    if topology.allow_cycles:
        return []
    order = {name: i for i, name in enumerate(topology.streams)}
    found = cycles(build(topology), limit=MAX_CYCLES + 1)
    problems: list[Raw] = []
    for cycle in found[:MAX_CYCLES]:
        names = [node.split(":", 1)[1] for node in cycle]
        kinds = [node.split(":", 1)[0] for node in cycle]
        first = min(
            (i for i, kind in enumerate(kinds) if kind == "stream"),
            key=lambda i: order.get(names[i], len(order)),
        )
        names = names[first:] + names[:first]
        path = _closing_edge(topology, names[-1], names[0])
        line, col = doc.where(path)
        shown = " -> ".join([*names, names[0]])
        message = f"cycle: {shown} (set allow_cycles: true if it is intended)"
        problems.append(Raw(line, col, path, message))
    if len(found) > MAX_CYCLES:
        line, col = doc.where(("sinks",))
        problems.append(
            Raw(line, col, ("sinks",), f"more cycles: only the first {MAX_CYCLES} are listed")
        )
    return problems
