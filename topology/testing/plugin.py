"""The pytest plugin (entry point ``pytest11``): the ``ponos_topology`` fixture.

One throwaway server per pytest session, started on first use; each
``ponos_topology(config)`` block flushes it first. ``--ponos-redis-url URL``
uses that server instead, each block under a key prefix of its own (removed
after). A block works in async tests (pytest-asyncio, anyio...) and in plain
ones alike::

    async def test_enrich(ponos_topology):
        async with ponos_topology("configs/pipeline.yaml") as t:
            await t.add("orders", "order.created", {...}, topic="eu.orders")
            await t.wait_idle()
            assert len(await t.events("enriched")) == 1

    def test_enrich_sync(ponos_topology):
        with ponos_topology("configs/pipeline.yaml") as t:
            t.add("orders", "order.created", {...}, topic="eu.orders")
            t.wait_idle()
            assert len(t.events("enriched")) == 1
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # every pytest run of an environment loads the plugin: import on use
    from topology.config import Topology
    from topology.testing import GivenEvent, TestServer
    from topology.testing._sync import TopologyBlock

__all__ = ["ponos_server", "ponos_topology", "pytest_addoption"]

StartTopology = Callable[..., "TopologyBlock"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ponos-topology")
    group.addoption(
        "--ponos-redis-url",
        default=None,
        metavar="URL",
        help="run ponos_topology tests on this server (unique key prefix per test) "
        "instead of a throwaway one",
    )


@pytest.fixture(scope="session")
def ponos_server(request: pytest.FixtureRequest) -> Iterator[TestServer]:
    """The server of the session's topology tests (a throwaway one unless told otherwise)."""
    from topology.testing import TestServer

    with TestServer(request.config.getoption("--ponos-redis-url")) as server:
        yield server


@pytest.fixture
def ponos_topology(ponos_server: TestServer) -> StartTopology:
    """``ponos_topology(config, sources=False, given=None)``: a block running the topology
    on a clean server: ``async with`` yields a ``TopologyUnderTest``, ``with`` its sync twin."""

    def start(
        config: str | Path | Topology,
        *,
        sources: bool = False,
        given: Mapping[str, Sequence[GivenEvent | Mapping[str, Any]]] | None = None,
    ) -> TopologyBlock:
        from topology.testing._sync import TopologyBlock

        return TopologyBlock(config, sources=sources, given=given, server=ponos_server)

    return start
