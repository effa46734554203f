"""``state:`` expectations: a stateful sink's keys read through the runtime's state layout."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from topology.config import load
from topology.runtime.connect import Connected
from topology.runtime.state import STATE_SCRIPT, KeyState, state_args, state_layout
from topology.testing import StateUnavailable, TestServer, TopologyUnderTest, check_test_file
from topology.testing._runner import _compare_state

LEDGER = Path(__file__).with_name("shop") / "ledger.yaml"


@pytest.fixture
async def ledger() -> AsyncIterator[tuple[TopologyUnderTest, Connected]]:
    """The ledger topology on a clean server, not started: its state is what a test seeds."""
    with TestServer() as server:
        async with server.scope(load(LEDGER)) as (topology, connected):
            yield TopologyUnderTest(topology, connected.conn), connected


async def seed(connected: Connected, topology: object, sink: str, states: dict) -> None:
    """Write states the way a commit does (the state section of the commit script)."""
    spec = topology.sinks[sink]  # type: ignore[attr-defined]
    layout = state_layout(topology.name, spec, connected.conn.stream_key)  # type: ignore[attr-defined]
    rows = [KeyState(layout.name(k), 0, json.dumps(v), changed=True) for k, v in states.items()]
    keys, args = state_args(rows, layout)
    await connected.client.register_script(STATE_SCRIPT)(keys=keys, args=args)


async def test_a_sinks_state_is_read_key_by_key(
    ledger: tuple[TopologyUnderTest, Connected],
) -> None:
    harness, connected = ledger
    assert await harness.state("balance") == {}
    await seed(connected, harness.topology, "balance", {"a1": {"balance": 5}, "a2": {}})
    assert await harness.state("balance") == {"a1": {"balance": 5}, "a2": {}}
    with pytest.raises(StateUnavailable, match="this topology has no stateful sink 'audit'"):
        await harness.state("audit")


async def test_state_expectations_diff_missing_unexpected_and_different_keys(
    ledger: tuple[TopologyUnderTest, Connected], tmp_path: Path
) -> None:
    harness, connected = ledger
    await seed(connected, harness.topology, "balance", {"a1": {"balance": 5}, "a3": {"balance": 1}})
    path = tmp_path / "ledger_test.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            config: {LEDGER}
            tests:
              - name: balances
                state:
                  balance: {{a1: {{balance: 6}}, a2: {{balance: 2}}}}
                  audit: {{}}
            """
        )
    )
    test_file, problems = check_test_file(path)
    assert test_file is not None, [str(p) for p in problems]
    [case] = test_file.tests
    assert await _compare_state(harness, case) == [
        "state of balance: missing key 'a2'",
        "state of balance: unexpected key 'a3': {\"balance\": 1}",
        'state of balance[\'a1\']: expected {"balance": 6}, got {"balance": 5}',
        "state of audit: this topology has no stateful sink 'audit'",
    ]
