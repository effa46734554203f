"""The dashboard's HTTP side: the page, its files, ``/api/snapshot`` and ``/events`` (SSE).

aiohttp, because the server has to live inside an event loop someone else
owns: ``run --ui-port`` serves the page from the worker's own loop, beside its
actors, and aiohttp's ``AppRunner``/``TCPSite`` start and stop there like any
other task (no second server lifecycle, no signal handlers of its own). It
streams responses natively, which is all server-sent events need.

Read-only: GET routes only. Bound to loopback (the default), requests must
also name a loopback host, so a web page elsewhere cannot read the dashboard
through a DNS name rebound to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from topology.dashboard._board import Board, TopologyFn
from topology.dashboard._hub import Hub

__all__ = ["DEFAULT_HOST", "DEFAULT_INTERVAL", "DEFAULT_PORT", "DashboardServer", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Seconds between two polls while a page is open.
DEFAULT_INTERVAL = 1.0
STATIC = Path(__file__).parent / "static"
#: The browser reconnects to /events this long (ms) after losing it.
SSE_RETRY_MS = 2000

_HEADERS = {
    # mermaid writes <style> into the SVG it draws: inline styles, no inline scripts.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, prog: str) -> None:
    """Say it plainly when the page is reachable from other machines: it has no login."""
    if not is_loopback(host):
        print(
            f"{prog}: warning: the dashboard on {host} has no authentication: anyone who "
            "can reach this port sees the topology, its streams and workers",
            file=sys.stderr,
        )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DashboardServer:
    """The page and its data for one :class:`Hub`, on ``host:port``."""

    def __init__(self, hub: Hub, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        self.hub = hub
        self.host = host
        self.port = port
        self.url = ""
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/events", self._events)
        app.router.add_static("/static/", STATIC)
        app.on_response_prepare.append(_secure)
        return app

    async def start(self) -> str:
        """Listen; returns the page's URL (``port=0`` picks a free port). OSError if taken."""
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{port}/"
        return self.url

    async def stop(self) -> None:
        await self.hub.close()  # ends every /events stream, so cleanup need not wait on them
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_loopback(self.host) and not is_loopback(request.url.host or ""):
            raise web.HTTPForbidden(text="this dashboard answers on a loopback address only\n")
        return await handler(request)

    async def _index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _snapshot(self, _request: web.Request) -> web.Response:
        text = await self.hub.current()
        return web.Response(
            text=text, content_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        await response.write(f"retry: {SSE_RETRY_MS}\n\n".encode())
        with contextlib.suppress(ConnectionResetError):
            async with contextlib.aclosing(self.hub.subscribe()) as snapshots:
                async for text in snapshots:
                    await response.write(f"data: {text}\n\n".encode())
        return response


async def _secure(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(_HEADERS)


async def serve(
    client: Any,
    url_redacted: str,
    topology_fn: TopologyFn,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    interval: float = DEFAULT_INTERVAL,
) -> DashboardServer:
    """A started dashboard reading Redis through ``client``; ``await server.stop()`` ends it."""
    board = Board(client, url_redacted, topology_fn, interval=interval)
    server = DashboardServer(Hub(board.poll, interval), host=host, port=port)
    await server.start()
    return server
