"""Handlers of shop.yaml: small, deterministic, one of each behaviour a test checks."""

from __future__ import annotations

from collections.abc import Iterator

from topology import Emit, Event

#: Module state: a test must start with it empty (modules are imported afresh).
calls: list[str] = []


def feed() -> Iterator[Emit]:
    for i in range(3):
        yield Emit("order.created", {"id": 100 + i, "qty": 1, "price": 5})


def price(event: Event) -> Emit:
    """Raises on a negative quantity (retried, then dead-lettered)."""
    calls.append(event.id)
    order = event.json()
    if order["qty"] < 0:
        raise ValueError(f"order {order['id']}: negative quantity")
    total = order["qty"] * order["price"]
    return Emit(
        "order.priced",
        {"id": order["id"], "total": total, "lines": {"count": order["qty"], "calls": len(calls)}},
        topic="big" if total >= 100 else "small",
    )


def audit(event: Event) -> Emit:
    return Emit("audit.big", f"big order {event.json()['id']}")


def tally(event: Event) -> Emit:
    return Emit("tally", {"id": event.json()["id"]})


def always_fails(event: Event) -> None:
    raise RuntimeError("never works")


def ignore(event: Event) -> None:
    return None
