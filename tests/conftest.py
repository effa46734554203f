"""Fixtures that start real servers: no mock stands in for Redis in these tests.

The binary is the one ``ponos-topology run`` uses for its embedded default
(``topology.server.find_server_binary``), each server on a free loopback port,
with no persistence, stopped by PID at teardown. Children die with pytest even
when it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.proxy import TcpProxy
from topology.server import ServerCluster, ServerNotFoundError, ServerProcess, find_server_binary


@pytest.fixture(scope="session")
def server_binary() -> str:
    try:
        return find_server_binary()
    except ServerNotFoundError as exc:  # a clear message rather than 200 errors
        pytest.exit(f"cannot run the tests: {exc}", returncode=3)


@pytest.fixture(scope="session")
def redis_server(
    server_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One server for the session; tests get it flushed (see ``redis_url``)."""
    server = ServerProcess(tmp_path_factory.mktemp("redis"), binary=server_binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(
    server_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerCluster]:
    """A 3-master cluster for the session, started on first use; tests flush it."""
    cluster = ServerCluster(tmp_path_factory.mktemp("cluster"), binary=server_binary)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def fresh_server(server_binary: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for tests that stop, kill or restart it."""
    server = ServerProcess(tmp_path / "redis", binary=server_binary)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: ServerProcess) -> str:
    """URL of the session server, flushed before the test."""
    import redis as syncredis

    if not redis_server.ping():  # a test that broke it: start it again
        redis_server.restart()
    client = syncredis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client (bytes replies) on a flushed session server."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def proxy(redis_server: ServerProcess, redis_url: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the (flushed) session server; ``proxy.url`` reaches it."""
    assert redis_server.port
    with TcpProxy("127.0.0.1", redis_server.port) as tcp_proxy:
        yield tcp_proxy
