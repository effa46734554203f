"""Handlers of configs/aggregator.yaml: a join of two streams, keyed by user."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

from topology import Emit, Event

log = logging.getLogger(__name__)

USERS = 20
CLICKS_PER_USER = 10

#: Per user: clicks seen so far, and whether a purchase closed the session.
clicks: dict[str, int] = {}


def generate_clicks() -> Iterator[Emit]:
    for i in range(USERS * CLICKS_PER_USER):
        yield Emit("page.clicked", {"user": f"u{i % USERS}", "page": f"/p/{i % 7}"})


async def generate_purchases() -> AsyncIterator[Emit]:
    """An async generator source: every other user buys something."""
    for i in range(0, USERS, 2):
        yield Emit("order.paid", {"user": f"u{i}", "amount": 10 + i})


def aggregate(event: Event) -> Emit | None:
    """Counts clicks per user; a purchase emits the user's summary (clicks before buying).

    The stream an event came from is ``event.stream_name``: that is how a sink
    reading several streams tells them apart.
    """
    data = event.json()
    user = data["user"]
    if event.stream_name == "clicks":
        clicks[user] = clicks.get(user, 0) + 1
        return None
    return Emit(
        "session.summary",
        {"user": user, "clicks": clicks.pop(user, 0), "amount": data["amount"]},
    )


def print_summary(event: Event) -> None:
    log.info("summary %s", event.json())
