"""Whole-topology tests: the real graph on a throwaway real server.

``ponos-topology test`` runs ``*_test.yaml`` files; this package is the same
machinery for pytest (and any asyncio code)::

    from topology.testing import run_topology

    async def test_eu_orders_are_enriched():
        async with run_topology("configs/pipeline.yaml") as t:
            await t.add("orders", "order.created", {"id": 1, "region": "eu", "amount": 10},
                        topic="eu.orders")
            await t.wait_idle()
            [event] = await t.events("enriched")
            assert event.json()["total"] == 12.0

With the ``ponos_topology`` fixture (installed as a pytest plugin), every test
of a session shares one server, flushed before each use:
``async with ponos_topology("configs/pipeline.yaml") as t: ...`` in an async
test, ``with ponos_topology(...) as t:`` (the same calls, without ``await``)
in a plain one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from topology._lazy import load_lazily

if TYPE_CHECKING:
    from topology.testing._expect import contains, json_equal
    from topology.testing._file import (
        ExpectedEvent,
        GivenEvent,
        TestCase,
        TestFile,
        check_test_file,
        find_test_files,
    )
    from topology.testing._harness import (
        DEFAULT_TIMEOUT,
        IdleTimeout,
        TopologyUnderTest,
        run_topology,
    )
    from topology.testing._runner import TestResult, run_case, run_files
    from topology.testing._server import TestServer
    from topology.testing._state import StateUnavailable
    from topology.testing._sync import SyncTopology, TopologyBlock

__all__ = [
    "DEFAULT_TIMEOUT",
    "ExpectedEvent",
    "GivenEvent",
    "IdleTimeout",
    "StateUnavailable",
    "SyncTopology",
    "TestCase",
    "TestFile",
    "TestResult",
    "TestServer",
    "TopologyBlock",
    "TopologyUnderTest",
    "check_test_file",
    "contains",
    "find_test_files",
    "json_equal",
    "run_case",
    "run_files",
    "run_topology",
]

#: Where each public name lives. Imported on first use: the pytest plugin of this
#: package loads in every pytest run of an environment that has it installed, and
#: most of those runs never touch a topology.
_HOMES = {
    "contains": "_expect",
    "json_equal": "_expect",
    "ExpectedEvent": "_file",
    "GivenEvent": "_file",
    "TestCase": "_file",
    "TestFile": "_file",
    "check_test_file": "_file",
    "find_test_files": "_file",
    "DEFAULT_TIMEOUT": "_harness",
    "IdleTimeout": "_harness",
    "TopologyUnderTest": "_harness",
    "run_topology": "_harness",
    "TestResult": "_runner",
    "run_case": "_runner",
    "run_files": "_runner",
    "TestServer": "_server",
    "StateUnavailable": "_state",
    "SyncTopology": "_sync",
    "TopologyBlock": "_sync",
}


def __getattr__(name: str) -> Any:
    return load_lazily(__name__, _HOMES, name)


def __dir__() -> list[str]:
    return sorted(__all__)
