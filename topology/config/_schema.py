"""Validation against the published JSON Schema, with errors mapped to lines.

The schema file is the contract users' editors validate with; the loader uses
that very file (never a copy inlined in code) so the two cannot drift. jsonschema
reports instance paths; the located document turns each into ``line:col`` and
each jsonschema message into one a person can act on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
    """Every violation in ``doc`` of the published schema ``schema``, located, one per problem."""
    out: list[Raw] = []
    for error in _validator(schema).iter_errors(doc.data):
        out.extend(_convert(error, doc))
    return out


def _at(doc: Document, path: NodePath, message: str, *, key: bool = False) -> Raw:
    line, col = doc.where_key(path) if key else doc.where(path)
    return Raw(line, col, path, message)


def _convert(error: ValidationError, doc: Document) -> Iterator[Raw]:
    path: NodePath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}  # $ref already followed
    value = error.instance
    kind = error.validator
    if kind == "required":
        missing = [k for k in error.validator_value if isinstance(value, dict) and k not in value]
        for name in missing:
            yield _at(doc, path, f"missing required key {name!r}")
    elif kind == "additionalProperties" and isinstance(value, dict):
        known = list(schema.get("properties", {}))
        for extra in value:
            if extra in known:
                continue
            close = get_close_matches(extra, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            yield _at(doc, (*path, extra), f"unknown key {extra!r}{hint}", key=True)
    elif kind == "propertyNames":
        yield _at(doc, (*path, value), "a name must not be empty", key=True)
    elif kind == "type":
        yield _at(doc, path, f"expected {_expected(schema)}, got {describe(value)}")
    elif kind == "pattern":
        if "x-hint" in schema and "duration" in str(schema["x-hint"]):
            message = f"invalid duration {value!r} (use e.g. 250ms, 20s, 5m, 24h)"
        else:
            message = f"invalid value {value!r}: expected {_expected(schema)}"
        yield _at(doc, path, message)
    elif kind == "const":
        if path == ("version",):
            supported = error.validator_value
            message = f"unsupported version {value!r} (this release reads version {supported})"
        else:
            message = f"must be {error.validator_value!r}, got {describe(value)}"
        yield _at(doc, path, message)
    elif kind in ("minimum", "maximum"):
        word = "at least" if kind == "minimum" else "at most"
        yield _at(doc, path, f"must be {word} {error.validator_value}, got {value}")
    elif kind == "minLength":
        yield _at(doc, path, "must not be empty")
    elif kind == "maxLength":
        yield _at(doc, path, f"too long (at most {error.validator_value} characters)")
    elif kind == "minItems":
        yield _at(doc, path, f"must list at least {error.validator_value} item(s)")
    elif kind == "uniqueItems" and isinstance(value, list):
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                yield _at(doc, (*path, i), f"{describe(item)} is listed twice")
            else:
                seen.append(item)
    elif kind == "oneOf":
        yield from _one_of(error, doc, path, schema, value)
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
