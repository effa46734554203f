"""Handlers of configs/totals.yaml: dedupe by id, then a running total per customer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from topology import Emit, Event

CUSTOMERS = 5


def generate_payments() -> Iterator[Emit]:
    """Payments of 5 customers; every fifth one is sent twice (a client's retry)."""
    for i in range(50):
        payment = {"id": f"pay-{i}", "customer": {"id": f"c{i % CUSTOMERS}"}, "amount": i}
        yield Emit("payment.received", payment)
        if i % 5 == 0:
            yield Emit("payment.received", payment)


def dedupe(event: Event, state: dict[str, Any]) -> Emit | None:
    """Forwards a payment the first time its id is seen (state: this id's)."""
    if state:
        return None
    state["seen"] = True
    return Emit("payment.unique", event.payload)


def running_total(event: Event, state: dict[str, Any]) -> Emit:
    """Adds the amount to the customer's total and emits the new total."""
    payment = event.json()
    state["total"] = state.get("total", 0) + payment["amount"]
    state["count"] = state.get("count", 0) + 1
    return Emit(
        "total.updated",
        {"customer": payment["customer"]["id"], "total": state["total"], "count": state["count"]},
    )
