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
``async with ponos_topology("configs/pipeline.yaml") as t: ...``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from topology.config import Topology, load
from topology.testing._expect import contains, json_equal
from topology.testing._file import (
    ExpectedEvent,
    GivenEvent,
    TestCase,
    TestFile,
    check_test_file,
    find_test_files,
)
from topology.testing._harness import DEFAULT_TIMEOUT, IdleTimeout, TopologyUnderTest
from topology.testing._runner import TestResult, run_case, run_files
from topology.testing._server import TestServer
from topology.testing._state import StateUnavailable

__all__ = [
    "DEFAULT_TIMEOUT",
    "ExpectedEvent",
    "GivenEvent",
    "IdleTimeout",
    "StateUnavailable",
    "TestCase",
    "TestFile",
    "TestResult",
    "TestServer",
    "TopologyUnderTest",
    "check_test_file",
    "contains",
    "find_test_files",
    "json_equal",
    "run_case",
    "run_files",
    "run_topology",
]


@asynccontextmanager
async def run_topology(
    config: str | Path | Topology,
    *,
    sources: bool = False,
    given: Mapping[str, Sequence[GivenEvent | Mapping[str, Any]]] | None = None,
    server: TestServer | None = None,
    redis_url: str | None = None,
) -> AsyncIterator[TopologyUnderTest]:
    """The topology of ``config`` running on a clean server until the block ends.

    ``server``: a :class:`TestServer` to share between tests (flushed here
    before use); else one is started for this block (or ``redis_url`` is used,
    under a key prefix of the block's own, removed after). ``sources=True``
    runs the config's sources too. ``given`` events are added before the sinks
    start (``GivenEvent`` or ``{name, payload, topic}``). An invalid config
    raises ``topology.config.ConfigError``.
    """
    topology = config if isinstance(config, Topology) else load(config)
    own = server is None
    where = TestServer(redis_url) if server is None else server
    try:
        async with where.scope(topology) as (scoped, connected):
            harness = TopologyUnderTest(scoped, connected.conn, sources=sources)
            try:
                await harness.start(given)
                yield harness
            finally:
                await harness.stop()
    finally:
        if own:
            where.stop()
