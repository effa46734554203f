"""YAML to plain data, remembering where every key and value was written.

PyYAML's ``safe_load`` drops the marks and silently keeps the last of two
duplicate keys. Here the document is composed with a ``SafeLoader`` subclass
(safe tags only: no Python objects are ever built) and then walked by hand, so
that each value's and each key's line and column survive, duplicates are
reported, and ``${VAR}`` substitution happens per scalar, at its location.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from topology.config._problems import NodePath
from topology.config._substitute import substitute

__all__ = ["Document", "LocatedLoader", "Raw", "parse"]

#: Nodes composed, and nodes visited through aliases, at most: a huge flat list
#: stops while PyYAML composes it, an alias bomb ("billion laughs") while walking.
MAX_NODES = 100_000
#: Collections nested in each other at most. PyYAML composes recursively: without
#: this bound, deep nesting ends in a RecursionError instead of a located error.
MAX_DEPTH = 64

_PLAIN = (str, int, float, bool, type(None))
_MERGE = "tag:yaml.org,2002:merge"
_COLLECTION_TAGS = ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:map")


class LocatedLoader(yaml.SafeLoader):
    """SafeLoader whose nodes we walk ourselves (see module docstring).

    Composing counts nodes and nesting as it goes, so an oversized document is
    refused before it is built whole, not after.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.composed = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self.composed += 1
        self.depth += 1
        try:
            if self.composed > MAX_NODES:
                raise _TooBig(self.peek_event().start_mark, _TOO_MANY)
            if self.depth > MAX_DEPTH:
                raise _TooBig(self.peek_event().start_mark, _TOO_DEEP)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self.depth -= 1


@dataclass
class Raw:
    """A problem found while reading: a 0-based mark, turned into a Problem by the caller."""

    line: int
    col: int
    path: NodePath
    message: str
    severity: Literal["error", "warning"] = "error"


@dataclass
class Document:
    """Plain data (dicts, lists, scalars) plus 1-based ``(line, col)`` per node path."""

    data: Any
    values: dict[NodePath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[NodePath, tuple[int, int]] = field(default_factory=dict)
    #: Values whose ``${VAR}`` substitution failed: already reported, checked no further.
    unsubstituted: set[NodePath] = field(default_factory=set)

    def where(self, path: NodePath) -> tuple[int, int]:
        """Where the value at ``path`` starts (or its nearest located parent)."""
        path = tuple(path)
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, (1, 1))

    def where_key(self, path: NodePath) -> tuple[int, int]:
        """Where the key that names ``path`` is written (the value's place for list items)."""
        path = tuple(path)
        return self.keys.get(path) or self.where(path)


def _pos(mark: yaml.Mark | None) -> tuple[int, int]:
    if mark is None:
        return (1, 1)
    return (mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, loader: LocatedLoader, env: Mapping[str, str]) -> None:
        self.loader = loader
        self.env = env
        self.doc = Document(data=None)
        self.problems: list[Raw] = []
        self.visited = 0
        self.stack: set[int] = set()
        self.explicit: dict[int, set[int]] = {}  # mapping node id -> ids of its own keys

    def problem(self, pos: tuple[int, int], path: NodePath, message: str) -> None:
        self.problems.append(Raw(pos[0], pos[1], path, message))

    def build(self, node: yaml.Node, path: NodePath) -> Any:
        self.visited += 1
        if self.visited > MAX_NODES:
            raise _TooBig(node.start_mark, _TOO_MANY)
        if len(path) > MAX_DEPTH:  # aliases can nest deeper than any one node was written
            raise _TooBig(node.start_mark, _TOO_DEEP)
        pos = _pos(node.start_mark)
        self.doc.values[path] = pos
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path, pos)
        if node.tag not in _COLLECTION_TAGS:  # !!set, !!omap, !!python/...: never built
            self.problem(pos, path, f"invalid YAML: unsupported tag {node.tag!r}")
            return None
        if id(node) in self.stack:
            self.problem(pos, path, "recursive alias: a node contains itself")
            return None
        self.stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self.mapping(node, path, pos)
        finally:
            self.stack.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, path: NodePath, pos: tuple[int, int]) -> Any:
        value = node.value
        tag = node.tag
        if tag == "tag:yaml.org,2002:str" and "$" in value:
            new, errors = substitute(value, self.env)
            one_line = node.start_mark.line == node.end_mark.line
            shift = 0 if node.style is None else 1  # past the opening quote
            for offset, message in errors:
                col = (
                    pos[1] + shift + offset
                    if one_line and node.style in (None, "'", '"')
                    else pos[1]
                )
                self.problem((pos[0], col), path, message)
                self.doc.unsubstituted.add(path)
            if new != value and node.style is None:
                # A plain scalar becomes what its substituted text would have been:
                # `batch: ${BATCH:-256}` is the integer 256, as if written so.
                tag = self.loader.resolve(yaml.ScalarNode, new, (True, False))
            value = new
        try:
            result = self.loader.construct_object(
                yaml.ScalarNode(tag, value, node.start_mark, node.end_mark), deep=True
            )
        except yaml.MarkedYAMLError as exc:
            self.problem(_pos(exc.problem_mark or node.start_mark), path, _yaml_message(exc))
            return None
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. bad !!binary / !!timestamp
            self.problem(pos, path, f"invalid {tag.rsplit(':', 1)[-1]} value: {exc}")
            return None
        if not isinstance(result, _PLAIN):  # timestamps, binary, sets...: keep the text
            return value
        return result

    def first_visit(self, node: yaml.MappingNode, path: NodePath) -> set[int]:
        """Report duplicate keys, then resolve ``<<`` merges (which rewrites ``node.value``).

        Returns the ids of the keys written in this mapping (not merged in), which
        override merged ones. Remembered per node: an alias must not see its
        merged keys as duplicates the second time round.
        """
        explicit: set[int] = set()
        seen: dict[str, tuple[int, int]] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _MERGE:
                continue
            explicit.add(id(key_node))
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key_pos = _pos(key_node.start_mark)
            if key_node.value in seen:
                self.problem(
                    key_pos,
                    (*path, key_node.value),
                    f"duplicate key {key_node.value!r} (first at line {seen[key_node.value][0]})",
                )
            else:
                seen[key_node.value] = key_pos
        try:
            self.loader.flatten_mapping(node)  # `<<: *defaults` merge keys
        except yaml.MarkedYAMLError as exc:
            self.problem(_pos(exc.problem_mark or node.start_mark), path, _yaml_message(exc))
            # Reported; read the rest of the mapping as if the merge were not there.
            node.value = [(k, v) for k, v in node.value if k.tag != _MERGE]
        self.explicit[id(node)] = explicit
        return explicit

    def mapping(
        self, node: yaml.MappingNode, path: NodePath, pos: tuple[int, int]
    ) -> dict[str, Any]:
        explicit = self.explicit.get(id(node))
        if explicit is None:  # first visit (an alias may bring the same node back)
            explicit = self.first_visit(node, path)
        out: dict[str, Any] = {}
        explicit_keys: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(
                    _pos(key_node.start_mark), path, "a mapping key must be a plain string"
                )
                continue
            key = key_node.value  # the text as written: `on:` and `1:` are names, not bool/int
            child = (*path, key)
            if key in explicit_keys:  # a duplicate: reported above; keep the first
                continue
            if id(key_node) in explicit:  # explicit keys override merged ones (YAML merge)
                explicit_keys.add(key)
            self.doc.keys[child] = _pos(key_node.start_mark)
            out[key] = self.build(value_node, child)
        return out


_TOO_MANY = f"document too large: more than {MAX_NODES} nodes"
_TOO_DEEP = f"nested too deeply: more than {MAX_DEPTH} levels"


class _TooBig(Exception):
    def __init__(self, mark: yaml.Mark | None, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    parts = [p for p in (exc.context, exc.problem) if p]
    text = ", ".join(parts) or "invalid YAML"
    marks = exc.context_mark is not None and exc.problem_mark is not None
    if marks and exc.context and exc.context_mark.line != exc.problem_mark.line:  # type: ignore[union-attr]
        text = f"{exc.problem} ({exc.context} at line {exc.context_mark.line + 1})"
    return f"invalid YAML: {text}"


def parse(text: str, env: Mapping[str, str]) -> tuple[Document, list[Raw]]:
    """Compose and walk ``text``; YAML syntax errors come back as problems, never raised."""
    try:
        loader = LocatedLoader(text)
    except yaml.YAMLError as exc:  # the reader rejects control characters up front
        line, col = _reader_pos(exc, text)
        return Document(data=None), [Raw(line, col, (), f"invalid YAML: {_reader_message(exc)}")]
    try:
        try:
            node = loader.get_single_node()
        except _TooBig as big:
            line, col = _pos(big.mark)
            return Document(data=None), [Raw(line, col, (), big.message)]
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = _pos(mark)
            return Document(data=None), [Raw(line, col, (), _yaml_message(exc))]
        except yaml.YAMLError as exc:  # reader errors (bad characters) carry a position
            line, col = _reader_pos(exc, text)
            return Document(data=None), [
                Raw(line, col, (), f"invalid YAML: {_reader_message(exc)}")
            ]
        if node is None:
            return Document(data=None, values={(): (1, 1)}), []
        builder = _Builder(loader, env)
        try:
            builder.doc.data = builder.build(node, ())
        except _TooBig as big:
            line, col = _pos(big.mark)
            return Document(data=None), [Raw(line, col, (), big.message)]
        return builder.doc, builder.problems
    finally:
        loader.dispose()


def _reader_pos(exc: yaml.YAMLError, text: str) -> tuple[int, int]:
    position = getattr(exc, "position", None)
    if not isinstance(position, int):
        return (1, 1)
    before = text[:position]
    line = before.count("\n") + 1
    col = position - (before.rfind("\n") + 1) + 1
    return (line, col)


def _reader_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        code = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        return f"unacceptable character {code}: {exc.reason}"
    return str(exc).splitlines()[0]
