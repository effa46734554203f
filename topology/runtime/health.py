"""``run --metrics-port``: ``/metrics``, ``/healthz`` and ``/readyz`` on one port.

``/healthz`` answers 200 while the process serves HTTP at all (a liveness
probe: restart me when it stops answering). ``/readyz`` answers 200 ``ready``,
or 503 with one line per reason the worker should not count as serving:
Redis unreachable (the last sample's PING failed), an actor stopped without
being told to (its task ended; its events wait for redelivery elsewhere), or
the last reload failed (an invalid file, a rolled-back apply: the previous
generation runs, but not the config on disk).

The :class:`Sampler` is a background task that reads Redis every few seconds —
lag and pending per sink, from the consumer groups (``XINFO GROUPS``) — into
gauges, outside the actors: they are neither slowed nor changed by it. The
HTTP server is a daemon thread (stdlib ``ThreadingHTTPServer``); it only reads
state the event loop wrote, never touches Redis or the loop itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from topology.redact import redact_text

__all__ = ["HealthServer", "Sampler", "readiness_problems"]

log = logging.getLogger("topology.health")

#: Seconds between two samples of Redis (PING, lag, pending).
SAMPLE_EVERY = 5.0
#: A PING slower than this counts as Redis unreachable.
PING_TIMEOUT = 2.0

#: Reload outcomes that mean "the config on disk is not what runs".
_FAILED_RELOADS = frozenset({"invalid", "rolled_back", "error"})


class Sampler:
    """Samples Redis for the runtime: reachability, then lag and pending per sink."""

    def __init__(self, runtime: Any, every: float = SAMPLE_EVERY) -> None:
        self.runtime = runtime
        self.every = every
        #: Why Redis counts as unreachable (None while the last PING answered).
        self.redis_error: str | None = None
        self.sampled = asyncio.Event()  # set after each sample (tests await it)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="health:sampler")

    async def stop(self) -> None:
        if self._task is not None:
            # The event ends the loop even when a cancellation landing in a sample's
            # command is swallowed (redis-py on Python 3.11); the cancellation still
            # cuts short a sample that hangs.
            self._stopping.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        # Imported here: a pool's parent serves probes and metrics without redis-py.
        from topology.streams import pause

        while not self._stopping.is_set():
            await self.sample()
            self.sampled.set()
            await pause(self.every, self._stopping)  # the sampling period

    async def sample(self) -> None:
        try:
            await asyncio.wait_for(self.runtime.conn.redis.ping(), PING_TIMEOUT)
        except Exception as exc:  # any failure: not reachable now
            self.redis_error = redact_text(str(exc)) or type(exc).__name__
            return
        self.redis_error = None
        metrics = self.runtime.metrics
        try:
            for sink, value in (await self.runtime.lag()).items():
                metrics.lag.labels(sink).set(value)
            for sink, value in (await _pending_per_sink(self.runtime)).items():
                metrics.pending.labels(sink).set(value)
        except Exception as exc:  # a sample is best effort
            log.debug("sampling lag/pending failed: %r", exc)


async def _pending_per_sink(runtime: Any) -> dict[str, int]:
    """Events delivered and not acked, per sink, over all its streams (XPENDING summary)."""
    conn = runtime.conn
    pipe = conn.redis.pipeline(transaction=False)
    order: list[str] = []
    for sink in runtime.topology.sinks.values():
        for stream in sink.stream_names:
            pipe.xpending(conn.stream_key(stream), sink.name)
            order.append(sink.name)
    totals = {name: 0 for name in runtime.topology.sinks}
    if not order:
        return totals
    for name, reply in zip(order, await pipe.execute(raise_on_error=False), strict=True):
        if isinstance(reply, dict):
            totals[name] += int(reply.get("pending", 0))
    return totals


def readiness_problems(
    runtime: Any, sampler: Sampler, last_reload: Callable[[], str | None]
) -> list[str]:
    """Why the worker is not ready, one reason per line; empty when it is."""
    problems = []
    if sampler.redis_error is not None:
        problems.append(f"redis unreachable: {sampler.redis_error}")
    crashed = sorted(a.name for a in runtime.actors() if not a.running)
    if crashed:
        problems.append(f"actor crashed: {', '.join(crashed)}")
    result = last_reload()
    if result in _FAILED_RELOADS:
        problems.append(
            f"last reload failed ({result}): generation {runtime.generation} runs, "
            "not the config on disk"
        )
    return problems


#: Seconds ``/readyz`` waits for the event loop to answer before saying it does not.
LOOP_TIMEOUT = 2.0


class HealthServer:
    """The HTTP endpoints, in a daemon thread.

    ``problems()`` runs on ``loop`` (it reads the runtime's actors, which only
    the loop changes); a loop too busy to run it within ``LOOP_TIMEOUT`` is
    itself a reason not to be ready. With ``loop=None`` it runs on the HTTP
    thread: a pool's parent asks its children over HTTP, which must not block
    the loop that supervises them.
    """

    def __init__(
        self,
        registry: Any,
        problems: Callable[[], list[str]],
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.registry = registry
        self.loop = loop
        self._problems = problems
        self._server: ThreadingHTTPServer | None = None

    def problems(self) -> list[str]:
        if self.loop is None:
            return self._problems()

        async def on_loop() -> list[str]:
            return self._problems()

        future = asyncio.run_coroutine_threadsafe(on_loop(), self.loop)
        try:
            return future.result(LOOP_TIMEOUT)
        except TimeoutError:
            future.cancel()
            return [f"event loop unresponsive for {LOOP_TIMEOUT:.0f}s"]
        except RuntimeError:  # the loop is closed: stopping
            return ["stopping"]

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Start listening (raises OSError when the port is taken); the port bound."""
        server = ThreadingHTTPServer((addr, port), _handler(self))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="ponos-health", daemon=True).start()
        self._server = server
        return int(server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for ``path``."""
        route = path.split("?", 1)[0]
        if route == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if route == "/healthz":
            return 200, "text/plain; charset=utf-8", b"ok\n"
        if route == "/readyz":
            problems = self.problems()
            if not problems:
                return 200, "text/plain; charset=utf-8", b"ready\n"
            return 503, "text/plain; charset=utf-8", ("\n".join(problems) + "\n").encode()
        return 404, "text/plain; charset=utf-8", b"not found: /metrics, /healthz, /readyz\n"


def _handler(owner: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                status, kind, body = owner.respond(self.path)
            except Exception as exc:  # a probe gets an answer, not a reset
                status, kind = 500, "text/plain; charset=utf-8"
                body = f"error: {type(exc).__name__}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes are not news
            return

    return Handler
