"""The dashboard's HTTP side against a real Redis: shared polls, the JSON, the guards."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.dashboard._helpers import write_config
from tests.helpers import wait_for
from topology.config import load
from topology.dashboard import from_file, serve
from topology.dashboard._server import DashboardServer
from topology.server import ServerProcess


@contextlib.asynccontextmanager
async def dashboard(
    url: str, config: Path, interval: float = 0.2
) -> AsyncIterator[tuple[DashboardServer, aioredis.Redis]]:
    client = aioredis.Redis.from_url(url)
    topology = load(config, import_callables=False)
    server = await serve(
        client, url, from_file(config, topology), host="127.0.0.1", port=0, interval=interval
    )
    try:
        yield server, client
    finally:
        await server.stop()
        await client.aclose()


async def read_events(session: aiohttp.ClientSession, url: str, count: int) -> list[int]:
    """The ``seq`` of the first ``count`` snapshots the SSE stream sends."""
    seqs: list[int] = []
    async with session.get(url + "events") as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                seqs.append(json.loads(line[6:])["seq"])
                if len(seqs) == count:
                    break
    return seqs


async def time_calls(client: aioredis.Redis) -> int:
    """How many TIME commands the server ran (every poll reads the workers with one)."""
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_time", {}).get("calls", 0))


async def test_ten_open_pages_share_one_poll_per_interval(redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, "dash")
    async with dashboard(redis_url, config) as (server, client):
        before = await time_calls(client)
        async with aiohttp.ClientSession() as session:
            pages = await asyncio.gather(*(read_events(session, server.url, 4) for _ in range(10)))
        for seqs in pages:
            assert seqs == sorted(seqs) and len(set(seqs)) == 4
        await wait_for(lambda: server.hub.viewers == 0, what="the pages' streams to end")
        await wait_for(lambda: server.hub.polling is False, what="the poller to stop")
        polls = server.hub.polls
        # Each page polling for itself would be ten polls per message a page sees; the
        # slack is the polls made while the closed pages were not yet noticed gone.
        assert polls <= 4 + 3
        # Counted by Redis too: every poll reads the workers' registry with one TIME.
        assert await time_calls(client) - before == polls


async def test_snapshot_json_has_the_graph_and_every_figure(redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, "dash")
    async with dashboard(redis_url, config) as (server, client):
        await client.xadd("pulse:stream:in", {"n": "e", "p": "1"})
        await client.xgroup_create("pulse:stream:in", "work", id="0")
        await client.xreadgroup("work", "c1", {"pulse:stream:in": ">"}, count=1)
        await client.xadd("pulse:stream:in", {"n": "e", "p": "2"})
        await client.xadd("pulse:stream:dlq", {"n": "e", "p": "3", "sink": "work"})
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.url + "api/snapshot") as response,
        ):
            assert response.status == 200
            assert response.content_type == "application/json"
            snap: dict[str, Any] = await response.json()
    assert snap["format"] == "ponos-topology.dashboard/1"
    assert snap["ok"] is True and snap["deployment"] == "dash"
    assert set(snap["streams"]) == {"in", "out", "dlq"}
    assert snap["streams"]["in"]["length"] == 2
    assert snap["reads"] == [
        {"stream": "in", "sink": "work", "pending": 1, "lag": 1, "group": True}
    ]
    work = snap["sinks"]["work"]
    # this sink's own dead letters (their `sink` field), and the stream's length
    assert work["dead_letter"] == {"stream": "dlq", "count": 1, "length": 1, "counted": 1}
    assert (work["pending"], work["lag"], work["consumers"]) == (1, 1, 1)
    for key in ("handled", "failed", "dead_lettered", "handled_per_s", "failed_per_s", "history"):
        assert key in work
    assert snap["graph"]["ids"]["sink:work"] == "sink_work"
    assert "flowchart LR" in snap["graph"]["mermaid"]
    assert "dead letters 1" in snap["graph"]["mermaid"]


async def test_redis_going_away_is_said_and_recovers(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "dash")
    async with (
        dashboard(fresh_server.url, config) as (server, _client),
        aiohttp.ClientSession() as session,
    ):

        async def snapshot() -> dict[str, Any]:
            async with session.get(server.url + "api/snapshot") as response:
                assert response.status == 200
                return dict(await response.json())

        assert (await snapshot())["ok"] is True
        fresh_server.stop()
        down = await snapshot_after(snapshot, lambda s: not s["ok"])
        assert down["error"].startswith("Redis unreachable")
        assert set(down["streams"]) == {"in", "out", "dlq"}  # the last figures stay
        fresh_server.start()
        await snapshot_after(snapshot, lambda s: s["ok"])


async def snapshot_after(snapshot: Any, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal found
        found = await snapshot()
        return bool(predicate(found))

    await wait_for(check, timeout=timeout, what="the snapshot to change state")
    return found


@pytest.mark.parametrize("host", ["evil.example", "192.168.1.5"])
async def test_a_loopback_dashboard_refuses_other_host_names(
    redis_url: str, tmp_path: Path, host: str
) -> None:
    config = write_config(tmp_path, "dash")
    async with (
        dashboard(redis_url, config) as (server, _client),
        aiohttp.ClientSession() as session,
    ):
        async with session.get(server.url + "api/snapshot", headers={"Host": host}) as response:
            assert response.status == 403
        async with session.get(server.url) as response:
            assert response.status == 200
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]


async def test_the_dashboard_is_read_only(redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, "dash")
    async with (
        dashboard(redis_url, config) as (server, _client),
        aiohttp.ClientSession() as session,
    ):
        for method in ("POST", "PUT", "DELETE"):
            async with session.request(method, server.url + "api/snapshot") as response:
                assert response.status == 405


async def test_the_page_ships_mermaid_and_its_license(redis_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, "dash")
    async with (
        dashboard(redis_url, config) as (server, _client),
        aiohttp.ClientSession() as session,
    ):
        async with session.get(server.url) as response:
            page = await response.text()
        assert '<script src="/static/mermaid.min.js">' in page
        assert "http" not in page.split("<body>")[0].replace("http-equiv", "")  # no CDN
        async with session.get(server.url + "static/mermaid.min.js") as response:
            assert response.status == 200
        async with session.get(server.url + "static/mermaid.LICENSE") as response:
            assert "MIT" in await response.text()
