"""Handlers of configs/aggregator.yaml: a join of two streams, keyed by user."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from topology import Emit, Event

log = logging.getLogger(__name__)

USERS = 20
CLICKS_PER_USER = 10


def generate_clicks() -> Iterator[Emit]:
    for i in range(USERS * CLICKS_PER_USER):
        yield Emit("page.clicked", {"user": f"u{i % USERS}", "page": f"/p/{i % 7}"})


async def generate_purchases() -> AsyncIterator[Emit]:
    """An async generator source: every other user buys something."""
    for i in range(0, USERS, 2):
        yield Emit("order.paid", {"user": f"u{i}", "amount": 10 + i})


def aggregate(event: Event, state: dict[str, Any]) -> Emit | None:
    """Counts a user's clicks; a purchase emits the summary (clicks before buying).

    ``state`` is this user's state (the sink's ``key: user``), ``{}`` at first;
    changing it in place is what gets committed. Clearing it deletes the key,
    so the next session starts from zero. The stream an event came from is
    ``event.stream_name``: that is how a sink reading several streams tells
    them apart.
    """
    data = event.json()
    if event.stream_name == "clicks":
        state["clicks"] = state.get("clicks", 0) + 1
        return None
    summary = {"user": data["user"], "clicks": state.get("clicks", 0), "amount": data["amount"]}
    state.clear()
    return Emit("session.summary", summary)


def print_summary(event: Event) -> None:
    log.info("summary %s", event.json())
