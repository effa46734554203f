"""Callables the broken configs refer to (the valid ones, and some that are not)."""

from __future__ import annotations

NOT_CALLABLE = 3


def ok(event: object) -> None:
    """A handler that does nothing."""


def matches(event: object) -> bool:
    return True


def generate() -> list[object]:
    return []


def two_arguments(event: object, state: object) -> None:
    """A handler for a stateful sink: a stateless one calls handler(event)."""


def needs_arguments(ctx: object, extra: object) -> list[object]:
    return []
