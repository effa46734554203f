"""The pytest helper for plain (sync) test functions.

``with ponos_topology(config) as t:`` runs the same :func:`run_topology` on an
event loop of its own, in a thread that lives as long as the block: the test
calls ``t.add(...)``, ``t.wait_idle()``, ``t.events(...)`` without ``await``
and without an async plugin. The server is started on the caller's thread
first: a server's parent-death signal follows the thread that started it, and
a session's server must outlive each block's thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from topology.config.model import Topology
from topology.streams import Event
from topology.testing._file import GivenEvent
from topology.testing._harness import DEFAULT_TIMEOUT, TopologyUnderTest, run_topology
from topology.testing._server import TestServer

__all__ = ["SyncTopology", "TopologyBlock"]

T = TypeVar("T")


class SyncTopology:
    """:class:`TopologyUnderTest`'s methods, each run to completion on the block's loop."""

    __test__ = False  # not a pytest test class

    def __init__(self, harness: TopologyUnderTest, loop: asyncio.AbstractEventLoop) -> None:
        self.harness = harness
        self._loop = loop

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def add(self, stream: str, name: str, payload: Any = None, *, topic: str | None = None) -> str:
        return self._run(self.harness.add(stream, name, payload, topic=topic))

    def wait_idle(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._run(self.harness.wait_idle(timeout))

    def events(self, stream: str) -> list[Event]:
        return self._run(self.harness.events(stream))

    def state(self, sink: str) -> dict[str, Any]:
        return self._run(self.harness.state(sink))


class TopologyBlock:
    """``async with`` it in a coroutine, ``with`` it in a plain function: same topology run."""

    def __init__(
        self,
        config: str | Path | Topology,
        *,
        sources: bool = False,
        given: Mapping[str, Sequence[GivenEvent | Mapping[str, Any]]] | None = None,
        server: TestServer | None = None,
    ) -> None:
        self._server = server
        self._open = lambda: run_topology(config, sources=sources, given=given, server=server)
        self._async: AbstractAsyncContextManager[TopologyUnderTest] | None = None
        self._sync: AbstractAsyncContextManager[TopologyUnderTest] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def __aenter__(self) -> TopologyUnderTest:
        self._async = self._open()
        return await self._async.__aenter__()

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._async is not None
        return await self._async.__aexit__(*exc)

    def __enter__(self) -> SyncTopology:
        if self._server is not None:
            self._server.url  # noqa: B018 - start it on this thread (see module docstring)
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="ponos-topology-test")
        self._thread.start()
        self._loop = loop
        self._sync = self._open()
        try:
            harness = asyncio.run_coroutine_threadsafe(self._sync.__aenter__(), loop).result()
        except BaseException:
            self._close_loop()
            raise
        return SyncTopology(harness, loop)

    def __exit__(self, *exc: Any) -> None:
        assert self._sync is not None and self._loop is not None
        try:
            asyncio.run_coroutine_threadsafe(self._sync.__aexit__(*exc), self._loop).result()
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = None
