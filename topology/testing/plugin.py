"""The pytest plugin (entry point ``pytest11``): the ``ponos_topology`` fixture.

One throwaway server per pytest session, started on first use; each
``ponos_topology(config)`` block flushes it first. ``--ponos-redis-url URL``
uses that server instead, each block under a key prefix of its own (removed
after). Tests using the fixture are async (pytest-asyncio, anyio...): the
fixture itself is sync, so it works with whichever the project uses::

    async def test_enrich(ponos_topology):
        async with ponos_topology("configs/pipeline.yaml") as t:
            await t.add("orders", "order.created", {...}, topic="eu.orders")
            await t.wait_idle()
            assert len(await t.events("enriched")) == 1
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # every pytest run of an environment loads the plugin: import on use
    from topology.config import Topology
    from topology.testing import GivenEvent, TestServer, TopologyUnderTest

__all__ = ["ponos_server", "ponos_topology", "pytest_addoption"]

StartTopology = Callable[..., AbstractAsyncContextManager["TopologyUnderTest"]]


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
    """``ponos_topology(config, sources=False, given=None)``: an async context manager
    running the topology on a clean server, yielding a ``TopologyUnderTest``."""

    def start(
        config: str | Path | Topology,
        *,
        sources: bool = False,
        given: Mapping[str, Sequence[GivenEvent | Mapping[str, Any]]] | None = None,
    ) -> AbstractAsyncContextManager[TopologyUnderTest]:
        from topology.testing import run_topology

        return run_topology(config, sources=sources, given=given, server=ponos_server)

    return start
