"""Where topology tests run: a throwaway server, or a given one under a unique namespace.

A run starts one server of its own (the same launcher as the embedded default
and the project's fixtures, in a temporary folder, no persistence, reached on a
unix socket only) and flushes it before each test: starting a server costs
far more than a test. With ``--redis-url`` the given server is shared with
whatever else lives there, so nothing is flushed: each test runs under a key
prefix and deployment name of its own, and its keys are deleted after.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from topology.config.model import Topology
from topology.runtime.connect import Connected, open_redis
from topology.runtime.keys import EngineKeys
from topology.server import ServerProcess

__all__ = ["TestServer"]

#: Socket file of the throwaway server, in its temporary folder.
SOCKET_NAME = "valkey.sock"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class TestServer:
    """The server tests run on, started on first use and stopped by :meth:`stop`."""

    __test__ = False  # not a pytest test class

    def __init__(self, redis_url: str | None = None) -> None:
        self.redis_url = redis_url or None
        self._process: ServerProcess | None = None
        self._folder: Path | None = None

    @property
    def url(self) -> str:
        if self.redis_url is not None:
            return self.redis_url
        if self._process is None:
            folder = Path(tempfile.mkdtemp(prefix="ponos-test-"))
            process = ServerProcess(folder, port=0, unixsocket=folder / SOCKET_NAME)
            try:
                process.start()
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            self._process, self._folder = process, folder
        return self._process.url

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.stop()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> TestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @asynccontextmanager
    async def scope(self, topology: Topology) -> AsyncIterator[tuple[Topology, Connected]]:
        """A clean place for one test: the topology to run there and its connection.

        On our own server: the topology as is, on a flushed server. On a given
        one: the topology renamed (stream prefix and deployment name get a
        random suffix), and every key under both names deleted on the way out.
        """
        if self.redis_url is None:
            async with open_redis(topology, cli_url=self.url) as connected:
                await connected.client.flushall()
                yield topology, connected
            return
        token = secrets.token_hex(4)
        scoped = replace(
            topology,
            name=f"{topology.name}-test-{token}",
            redis=replace(topology.redis, prefix=f"{topology.redis.prefix}-test-{token}"),
        )
        async with open_redis(scoped, cli_url=self.redis_url) as connected:
            try:
                yield scoped, connected
            finally:
                patterns = (
                    f"{_glob_escape(scoped.redis.prefix)}:*",
                    f"{_glob_escape(EngineKeys(scoped.name).base)}:*",
                )
                for pattern in patterns:
                    async for key in connected.client.scan_iter(match=pattern, count=1000):
                        await connected.client.unlink(key)
