"""Where the engine's Redis is, and how to reach it without leaking its password.

Resolution order: ``--redis-url``, else ``$REDIS_URL``, else the
config's ``redis.url``; an empty value at any level means "the embedded server"
(an empty ``--redis-url ""`` forces it even when ``$REDIS_URL`` is set).

Every URL that reaches a log line, an error message or ``status`` output goes
through :func:`redact` first: ``redis://user:***@host:6379/0``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from topology.redact import redact, redact_text

log = logging.getLogger("topology.runtime")

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from topology.config.model import Topology
    from topology.runtime.embedded import EmbeddedServer
    from topology.streams import Connection

__all__ = [
    "Connected",
    "RedisUnavailableError",
    "RedisUrlError",
    "client_from_url",
    "embedded_url",
    "open_redis",
    "redact",
    "redact_text",
    "resolve_url",
]

#: The environment variable read when no ``--redis-url`` is given.
URL_ENV = "REDIS_URL"

#: TCP keepalive of every engine connection: probes after this many idle seconds,
#: then every ``KEEPALIVE_INTERVAL`` s; ``KEEPALIVE_COUNT`` unanswered ones close it.
KEEPALIVE_IDLE = 5
KEEPALIVE_INTERVAL = 5
KEEPALIVE_COUNT = 3


class RedisUnavailableError(RuntimeError):
    """Redis cannot be reached (or started); the message is safe to print as is."""


class RedisUrlError(RedisUnavailableError):
    """The URL itself is unusable: a usage error (exit 2), found before connecting."""


def resolve_url(cli_url: str | None, topology: Topology | None) -> str | None:
    """The Redis URL to use, or None for the embedded server.

    ``--redis-url`` > ``$REDIS_URL`` > ``topology.redis.url``. The first level
    that is *set* decides, and an empty value there means embedded: a user who
    types ``--redis-url ""`` wants the embedded server whatever the environment says.
    """
    if cli_url is not None:
        return cli_url.strip() or None
    env = os.environ.get(URL_ENV)
    if env is not None:
        return env.strip() or None
    if topology is not None and topology.redis.url:
        return topology.redis.url.strip() or None
    return None


def client_from_url(url: str, timeout: float | None = None) -> aioredis.Redis:
    """A ``redis.asyncio`` client for ``redis://``, ``rediss://`` or ``unix://`` URLs.

    Replies stay bytes (payloads are arbitrary bytes). ACL ``user:password``
    and TLS options (``?ssl_ca_certs=...&ssl_cert_reqs=required``,
    ``ssl_certfile``, ``ssl_keyfile``) come from the URL, as redis-py parses them.
    Every command has a deadline, ``timeout`` (``redis.timeout``): a connection
    that stops answering without closing (a stuck proxy, a forgotten NAT flow)
    would otherwise hold its caller forever (default: ``topology.streams.DEFAULT_TIMEOUT``).
    A call past it drops its connection and the caller retries on a new one.
    Blocking reads do not use these connections: the consumers read on links of
    their own whose deadline is the BLOCK plus ``timeout`` (see
    ``topology.streams._deadline``). A peer that vanished without a reset is
    found by a short TCP keepalive, and by the health check before an idle
    connection is reused. Connecting gives up after ``timeout`` too. Options in
    the URL's query string win over these defaults.
    """
    import redis.asyncio as aioredis

    from topology.config import redis_url_problem
    from topology.streams import DEFAULT_TIMEOUT

    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    problem = redis_url_problem(url)
    if problem is not None:
        raise RedisUrlError(f"invalid Redis URL {redact(url)}: {problem} (--redis-url)")
    options = _client_options(url, timeout)
    try:
        return aioredis.Redis.from_url(url, **options)
    except (ValueError, TypeError) as exc:
        raise RedisUrlError(
            f"invalid Redis URL {redact(url)}: {redact_text(str(exc))} (--redis-url)"
        ) from None


def _client_options(url: str, timeout: float) -> dict[str, Any]:
    """Defaults for a long-lived engine client, unless the URL's query sets them."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    options: dict[str, Any] = {"decode_responses": False}
    if "socket_timeout" not in query and "timeout" not in query:
        options["socket_timeout"] = timeout
    if "socket_connect_timeout" not in query:
        options["socket_connect_timeout"] = timeout
    if parts.scheme.lower() != "unix" and "socket_keepalive" not in query:
        options["socket_keepalive"] = True
        if hasattr(socket, "TCP_KEEPIDLE"):
            options["socket_keepalive_options"] = {
                socket.TCP_KEEPIDLE: KEEPALIVE_IDLE,
                socket.TCP_KEEPINTVL: KEEPALIVE_INTERVAL,
                socket.TCP_KEEPCNT: KEEPALIVE_COUNT,
            }
    if "health_check_interval" not in query:
        options["health_check_interval"] = 30
    return options


async def _cluster_if_enabled(client: Any, url: str, timeout: float) -> Any:
    """A cluster client when the node at ``url`` is part of a Redis Cluster, else ``client``.

    Any node's URL reaches a whole cluster: the user need not say "cluster",
    the server does (``INFO cluster``). Engine keys share the hash tag
    ``{deployment}``, so a deployment's own keys live on one node.
    """
    import redis.asyncio as aioredis
    from redis.exceptions import ResponseError

    try:
        info = await client.info("cluster")
    except ResponseError:  # an ACL user without INFO: take it as a single node
        return client
    if str(info.get("cluster_enabled", 0)) != "1":
        return client
    options = _client_options(url, timeout)
    try:
        cluster = aioredis.RedisCluster.from_url(url, **options)
        await cluster.initialize()
    except Exception as exc:
        await client.aclose()
        raise RedisUnavailableError(
            f"cannot use the Redis Cluster at {redact(url)}: "
            f"{redact_text(str(exc)) or type(exc).__name__} (--redis-url)"
        ) from None
    await client.aclose()
    return cluster


#: How long a start waits for a server that is still loading its data.
LOADING_WAIT = 600.0


async def _ping_while_loading(client: Any) -> None:
    """PING, waiting (with a backoff) while the server loads its data set.

    A server restarting with a large append-only file answers ``LOADING`` for
    a while: a worker started meanwhile waits for it rather than exiting.
    """
    from redis.exceptions import BusyLoadingError

    from topology.streams import Backoff

    backoff = Backoff(0.1, 2.0)
    deadline = time.monotonic() + LOADING_WAIT
    while True:
        try:
            await client.ping()
            return
        except BusyLoadingError:
            if time.monotonic() > deadline:
                raise
            if not backoff.failures:
                log.warning("Redis is loading its data; waiting for it")
            await asyncio.sleep(backoff.next())  # a backoff, not a synchronisation


@dataclass
class Connected:
    """What :func:`open_redis` hands out: the client, the streams connection on it,
    a printable URL, and the embedded server this process started (if any).

    ``client`` is a ``redis.asyncio.RedisCluster`` when the URL names a node of
    a Redis Cluster (same command API; keys route to their node).
    """

    client: aioredis.Redis
    conn: Connection
    url_redacted: str
    server: EmbeddedServer | None


def embedded_url(data_dir: Path, owner: bool) -> tuple[str, EmbeddedServer | None]:
    """Reuse the live server recorded in ``data_dir``, else start one (returned).

    Its URL, and the server when this call started it (the caller stops it).
    """
    from topology.runtime.embedded import EmbeddedServer, EmbeddedServerError, EmbeddedServerRunning

    for _ in range(3):  # lost a start race: reuse the winner's server
        info = EmbeddedServer.running_info(data_dir)
        if info is not None:
            if owner and not info.get("owner", True):
                raise RedisUnavailableError(
                    f"the embedded server in {data_dir} was started by a short-lived command "
                    f"(pid {info.get('parent')}) and stops with it; let that command end "
                    "first, or pass --redis-url"
                )
            return str(info["url"]), None
        server = EmbeddedServer(data_dir, owner=owner)
        try:
            return server.start(), server
        except EmbeddedServerRunning:
            continue
        except EmbeddedServerError as exc:
            raise RedisUnavailableError(str(exc)) from None
        except OSError as exc:  # the folder cannot be created or written
            raise RedisUnavailableError(
                f"cannot use {data_dir} for the embedded server: {exc.strerror or exc}; "
                "choose another folder with --data-dir, or pass --redis-url"
            ) from None
    raise RedisUnavailableError(f"cannot start or reuse the embedded server in {data_dir}")


@asynccontextmanager
async def open_redis(
    topology: Topology,
    *,
    cli_url: str | None = None,
    data_dir: Path | None = None,
    owner: bool = False,
) -> AsyncIterator[Connected]:
    """Connect to the deployment's Redis, starting the embedded server if there is none.

    With a URL: connect and PING; failure raises :class:`RedisUnavailableError`
    naming the redacted URL and ``--redis-url``. Without: reuse the live embedded
    server recorded in ``data_dir`` (default ``<config folder>/.ponos-data``), else
    start one that lives until this context exits (``owner=True`` for ``run``;
    ``emit``/``tail``/``status`` start one for their own duration — the
    append-only file keeps the data between them).

    The embedded server is started on the calling (event loop) thread on purpose:
    its parent-death signal is tied to the thread that forked it.
    """
    import redis.exceptions

    from topology.runtime.embedded import default_data_dir
    from topology.streams import Connection

    url = resolve_url(cli_url, topology)
    server: EmbeddedServer | None = None
    if url is None:
        folder = Path(data_dir) if data_dir is not None else default_data_dir(topology.path)
        url, server = embedded_url(folder, owner)
    try:
        client = client_from_url(url, topology.redis.timeout)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    try:
        try:
            await _ping_while_loading(client)
        except (redis.exceptions.RedisError, OSError) as exc:
            hint = "" if server is not None else "; check the server or pass another --redis-url"
            reason = redact_text(str(exc)) or type(exc).__name__
            raise RedisUnavailableError(
                f"cannot reach Redis at {redact(url)}: {reason}{hint}"
            ) from None
        client = await _cluster_if_enabled(client, url, topology.redis.timeout)
        conn = Connection(client, prefix=topology.redis.prefix)
        yield Connected(client=client, conn=conn, url_redacted=redact(url), server=server)
    finally:
        try:
            await client.aclose()
        finally:
            if server is not None:
                server.stop()
