"""Handlers for nasty-names.yaml: the config is about names, these only need to import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any


async def generate() -> AsyncIterator[Any]:
    return
    yield


def handle(event: Any) -> None:
    return None


def match(event: Any) -> bool:
    return True
