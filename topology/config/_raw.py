"""Reading the parsed document defensively: checks run on files the schema rejected.

The semantic checks run even when the schema found errors (one pass reports
everything it can), so every read of the raw data says the type it expects and
gets an empty value of that type otherwise.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_list", "as_map", "as_str", "ref_name"]


def as_map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def ref_name(ref: Any) -> str | None:
    """The stream a sink's ``streams`` item names: ``orders`` or ``{name: orders, start: ...}``."""
    return as_str(ref.get("name")) if isinstance(ref, dict) else as_str(ref)
