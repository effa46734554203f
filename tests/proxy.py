"""A TCP proxy between a client and a real server, with the faults networks have.

It runs on its own event loop in a thread, so the same proxy serves code under
test in this process and in child processes (workers started by a test or by
``tools/chaos.py``). Its faults are the ones the engine must survive:

- ``stall()``: every connection open now stops forwarding, in both directions,
  and stays open (a NAT or load balancer that forgot the flow, a stuck proxy).
  Connections made afterwards work: only a client that reconnects recovers.
- ``refuse(True)``: new connections are closed at once (a server that is down).
- ``delay(seconds)``: every chunk is held that long before it is forwarded.
- ``cut()``: every open connection is reset (a restart on the path).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    # Set while the link forwards; a stalled link never gets it back.
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            transport = writer.transport
            if not transport.is_closing():
                transport.abort()
        for task in self.tasks:
            task.cancel()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream_host``:``upstream_port``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.accepted = 0
        self._links: set[_Link] = set()
        self._refusing = False
        self._delay = 0.0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults --------------------------------------------------------------

    def stall(self) -> int:
        """Freeze every open connection; returns how many were frozen."""
        return self._call(self._stall())

    def refuse(self, refusing: bool) -> None:
        self._loop.call_soon_threadsafe(setattr, self, "_refusing", refusing)

    def delay(self, seconds: float) -> None:
        self._loop.call_soon_threadsafe(setattr, self, "_delay", seconds)

    def cut(self) -> int:
        """Reset every open connection; returns how many were cut."""
        return self._call(self._cut())

    def open_links(self) -> int:
        return self._call(self._count())

    # -- the loop's side -----------------------------------------------------

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        sock: socket.socket = self._server.sockets[0]
        self.port = sock.getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()

    async def _stall(self) -> int:
        for link in self._links:
            link.flowing.clear()
        return len(self._links)

    async def _cut(self) -> int:
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.clear()
        return len(links)

    async def _count(self) -> int:
        return len(self._links)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        link.flowing.set()
        self._links.add(link)
        link.tasks = [
            asyncio.ensure_future(self._pump(link, reader, up_writer)),
            asyncio.ensure_future(self._pump(link, up_reader, writer)),
        ]

    async def _pump(
        self, link: _Link, source: asyncio.StreamReader, target: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                await link.flowing.wait()
                chunk = await source.read(65536)
                if not chunk:
                    break
                if self._delay:
                    await asyncio.sleep(self._delay)
                # A link stalled while this chunk was in hand keeps it: nothing passes.
                await link.flowing.wait()
                target.write(chunk)
                await target.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if link.flowing.is_set():  # a stalled link stays open, as a stuck path does
                self._links.discard(link)
                with contextlib.suppress(Exception):
                    link.abort()


@contextlib.contextmanager
def proxy_to(host: str, port: int) -> Iterator[TcpProxy]:
    with TcpProxy(host, port) as proxy:
        yield proxy
