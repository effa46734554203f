"""Validation against the published JSON Schema, with errors mapped to lines.

The schema file is the contract users' editors validate with; the loader uses
that very file (never a copy inlined in code) so the two cannot drift. jsonschema
reports instance paths; the located document turns each into ``line:col`` and
each jsonschema message into one a person can act on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from difflib import get_close_matches
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from topology.config._problems import NodePath
from topology.config._yaml import Document, Raw

__all__ = ["load_schema", "schema_errors", "schema_path"]

#: The config schema; other documents (test files) have a schema of their own beside it.
CONFIG_SCHEMA = "topology.schema.json"
_RESOURCES = "_schemas"
_REPO_DIR = Path(__file__).resolve().parents[2] / "schemas"

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def schema_path(name: str = CONFIG_SCHEMA) -> Path:
    """The schema file in use: the installed wheel's copy, else the source tree's."""
    try:
        packaged = resources.files("topology").joinpath(f"{_RESOURCES}/{name}")
        if packaged.is_file():
            return Path(str(packaged))
    except (ModuleNotFoundError, OSError):  # pragma: no cover - odd installs
        pass
    return _REPO_DIR / name


@lru_cache(maxsize=4)
def load_schema(name: str = CONFIG_SCHEMA) -> dict[str, Any]:
    return json.loads(schema_path(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=4)
def _validator(name: str) -> Draft202012Validator:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def describe(value: Any) -> str:
    """``integer 20``, ``string 'x'``: what the user wrote, for 'expected X, got Y'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _expected(schema: dict[str, Any]) -> str:
    if "x-hint" in schema:
        return str(schema["x-hint"])
    types = schema.get("type")
    if isinstance(types, str):
        types = [types]
    if isinstance(types, list):
        return " or ".join(_TYPE_NAMES.get(t, t) for t in types)
    return "a valid value"


def schema_errors(doc: Document, schema: str = CONFIG_SCHEMA) -> list[Raw]:
    """Every violation in ``doc`` of the published schema ``schema``, located, one per problem.

    A value whose ``${VAR}`` substitution failed was reported where it was
    written; the schema's view of what is left ("got null") would only repeat it.
    """
    out: list[Raw] = []
    for error in _validator(schema).iter_errors(doc.data):
        if tuple(error.absolute_path) not in doc.unsubstituted:
            out.extend(_convert(error, doc))
    return out


def _at(doc: Document, path: NodePath, message: str, *, key: bool = False) -> Raw:
    line, col = doc.where_key(path) if key else doc.where(path)
    return Raw(line, col, path, message)


_Converter = Callable[[ValidationError, Document, NodePath, dict[str, Any], Any], Iterator[Raw]]


def _required(
    error: ValidationError, doc: Document, path: NodePath, schema: dict[str, Any], value: Any
) -> Iterator[Raw]:
    missing = [k for k in error.validator_value if isinstance(value, dict) and k not in value]
    for name in missing:
        yield _at(doc, path, f"missing required key {name!r}")


def _additional(
    error: ValidationError, doc: Document, path: NodePath, schema: dict[str, Any], value: Any
) -> Iterator[Raw]:
    known = list(schema.get("properties", {}))
    for extra in value if isinstance(value, dict) else ():
        if extra in known:
            continue
        close = get_close_matches(extra, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        yield _at(doc, (*path, extra), f"unknown key {extra!r}{hint}", key=True)


def _pattern(
    error: ValidationError, doc: Document, path: NodePath, schema: dict[str, Any], value: Any
) -> Iterator[Raw]:
    if "x-hint" in schema and "duration" in str(schema["x-hint"]):
        message = f"invalid duration {value!r} (use e.g. 250ms, 20s, 5m, 24h)"
    else:
        message = f"invalid value {value!r}: expected {_expected(schema)}"
    yield _at(doc, path, message)


def _const(
    error: ValidationError, doc: Document, path: NodePath, schema: dict[str, Any], value: Any
) -> Iterator[Raw]:
    wanted = error.validator_value
    if path != ("version",):
        message = f"must be {wanted!r}, got {describe(value)}"
    elif isinstance(value, str) and value.strip() == str(wanted):
        message = f"expected the number {wanted}, got {describe(value)} (write it without quotes)"
    else:
        message = f"unsupported version {value!r} (this release reads version {wanted})"
    yield _at(doc, path, message)


def _bound(
    error: ValidationError, doc: Document, path: NodePath, schema: dict[str, Any], value: Any
) -> Iterator[Raw]:
    word = "at least" if error.validator == "minimum" else "at most"
    yield _at(doc, path, f"must be {word} {error.validator_value}, got {value}")


def _unique(
    error: ValidationError, doc: Document, path: NodePath, schema: dict[str, Any], value: Any
) -> Iterator[Raw]:
    seen: list[Any] = []
    for i, item in enumerate(value if isinstance(value, list) else ()):
        if item in seen:
            yield _at(doc, (*path, i), f"{describe(item)} is listed twice")
        else:
            seen.append(item)


def _simple(message: Callable[[ValidationError, dict[str, Any], Any], str]) -> _Converter:
    def convert(
        error: ValidationError, doc: Document, path: NodePath, schema: dict[str, Any], value: Any
    ) -> Iterator[Raw]:
        yield _at(doc, path, message(error, schema, value))

    return convert


_CONVERTERS: dict[str, _Converter] = {
    "required": _required,
    "additionalProperties": _additional,
    "pattern": _pattern,
    "const": _const,
    "minimum": _bound,
    "maximum": _bound,
    "uniqueItems": _unique,
    "type": _simple(lambda e, s, v: f"expected {_expected(s)}, got {describe(v)}"),
    "minLength": _simple(lambda e, s, v: "must not be empty"),
    "maxLength": _simple(lambda e, s, v: f"too long (at most {e.validator_value} characters)"),
    "minItems": _simple(lambda e, s, v: f"must list at least {e.validator_value} item(s)"),
}


def _convert(error: ValidationError, doc: Document) -> Iterator[Raw]:
    path: NodePath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}  # $ref already followed
    value = error.instance
    if "propertyNames" in error.schema_path:  # the key itself: located where it is written
        yield _at(doc, (*path, str(value)), "a name must not be empty", key=True)
    elif error.validator == "oneOf":
        yield from _one_of(error, doc, path, schema, value)
    elif error.validator in _CONVERTERS:
        yield from _CONVERTERS[str(error.validator)](error, doc, path, schema, value)
    else:  # pragma: no cover - every keyword the schema uses is handled above
        yield _at(doc, path, error.message)


def _one_of(
    error: ValidationError, doc: Document, path: NodePath, schema: dict[str, Any], value: Any
) -> Iterator[Raw]:
    """A stream reference: report the branch the user obviously meant, not both."""
    wanted = 1 if isinstance(value, dict) else 0 if isinstance(value, str) else None
    if wanted is not None:
        branch = [e for e in error.context or () if e.schema_path and e.schema_path[0] == wanted]
        if branch:
            for sub in branch:
                yield from _convert(sub, doc)
            return
    yield _at(doc, path, f"expected {_expected(schema)}, got {describe(value)}")
