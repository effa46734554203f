"""Handlers of configs/fanout.yaml: three independent consumers of one stream."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from topology import Emit, Event

PLANS = ("free", "pro", "team")
SIGNUPS = 300

#: Welcome mails "sent" and signups per plan: in memory, per worker process.
sent: list[str] = []
plans: Counter[str] = Counter()


def generate_signups() -> Iterator[Emit]:
    """A finite burst of signups (the source is done after the last one)."""
    for i in range(SIGNUPS):
        yield Emit("user.signed_up", {"user": f"user-{i}", "plan": PLANS[i % len(PLANS)]})


def send_welcome(event: Event) -> None:
    sent.append(event.json()["user"])


def to_crm(event: Event) -> Emit:
    """One output stream, so the Emit need not name it."""
    user = event.json()
    return Emit("crm.contact", {"email": f"{user['user']}@example.com", "plan": user["plan"]})


async def count_plan(event: Event) -> None:
    plans[event.json()["plan"]] += 1
