"""Handlers of configs/pipeline.yaml: cheap on purpose, so the pipeline measures the engine.

A handler gets an ``Event`` and returns an ``Emit``, several, or None; it may be
sync or async. A source is a (async) generator function yielding ``Emit``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from topology import Emit, Event

log = logging.getLogger(__name__)

ORDERS = 2000
LARGE = 900.0  # amount above which an order raises an alert
COUNTRIES = {"eu": ("fr", "de", "it", "es"), "us": ("ny", "ca", "tx")}

#: What report() has seen, per event name: a test (or a curious user) reads it.
seen: dict[str, int] = {}


def generate_orders() -> Iterator[Emit]:
    """2000 orders on two topics, then the source is done (``run --stop-when-idle`` ends).

    Every 500th order has no amount: enrich() rejects it, the retries fail and it
    lands on the dead-letter stream, which shows the DLQ path on a normal run.
    """
    for i in range(ORDERS):
        region = "eu" if i % 2 == 0 else "us"
        places = COUNTRIES[region]
        amount = None if i % 500 == 499 else round((i * 37) % 1000 + 0.99, 2)
        order = {"id": i, "region": region, "place": places[i % len(places)], "amount": amount}
        yield Emit("order.created", order, topic=f"{region}.orders")


def is_large_order(event: Event) -> bool:
    """Matcher: only large orders reach flag_large (others are acked, unhandled)."""
    amount = event.json().get("amount")
    return isinstance(amount, (int, float)) and amount > LARGE


def enrich(event: Event) -> Emit:
    """Adds tax and a label; raises on an order without an amount (retried, then DLQ)."""
    order = event.json()
    amount = order["amount"]
    if amount is None:
        raise ValueError(f"order {order['id']} has no amount")
    rate = 0.2 if order["region"] == "eu" else 0.08
    order["total"] = round(amount * (1 + rate), 2)
    return Emit("order.enriched", order)


async def flag_large(event: Event) -> Emit:
    """An async handler: same contract as a sync one."""
    order = event.json()
    return Emit("order.large", {"id": order["id"], "amount": order["amount"]})


def report(event: Event) -> None:
    """Counts what arrives from enriched and alerts; returns nothing (ack only)."""
    seen[event.name] = seen.get(event.name, 0) + 1


def log_dead_letter(event: Event) -> None:
    """Dead letters carry the original payload; the engine adds the error in its fields."""
    log.warning("dead letter %s from %s: %s", event.id, event.stream_name, event.payload[:200])
