"""Handlers of configs/retry_dlq.yaml: transient failures retried, bad events dead-lettered."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from topology import Emit, Event

log = logging.getLogger(__name__)

PAYMENTS = 100

#: Failed attempts per payment id, to fail a flaky payment exactly twice. The
#: engine keeps its own attempt count in Redis (it survives restarts); this one
#: is only the example's simulation of a gateway that recovers.
_failures: dict[int, int] = {}


class GatewayError(Exception):
    """What a real payment client might raise: retrying may help."""


def generate_payments() -> Iterator[Emit]:
    for i in range(PAYMENTS):
        amount = -5 if i % 25 == 24 else 10 + i  # 4 bad payments
        yield Emit("payment.requested", {"id": i, "amount": amount})


def charge(event: Event) -> Emit:
    payment = event.json()
    if payment["amount"] < 0:
        raise ValueError(f"payment {payment['id']}: negative amount {payment['amount']}")
    if payment["id"] % 5 == 0 and _failures.get(payment["id"], 0) < 2:
        _failures[payment["id"]] = _failures.get(payment["id"], 0) + 1
        raise GatewayError("gateway timeout")
    return Emit("payment.charged", {"id": payment["id"], "amount": payment["amount"]})


def review(event: Event) -> None:
    """A dead letter: the original payload, plus the engine's fields (error, attempts...)."""
    log.warning("needs review: %s (%s)", event.payload, event.fields)
