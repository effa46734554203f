"""Handlers of ledger.yaml."""

from __future__ import annotations

from typing import Any

from topology import Emit, Event


def balance(event: Event, state: dict[str, Any]) -> Emit:
    state["balance"] = state.get("balance", 0) + event.json()["amount"]
    return Emit("balance", {"account": event.json()["account"], "balance": state["balance"]})


def ignore(event: Event) -> None:
    return None
