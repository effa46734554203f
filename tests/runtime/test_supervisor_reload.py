"""Hot reload through the Reloader: file writes (in place and by rename), SIGHUP's event,
invalid files, edited handler code."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.helpers import wait_for
from topology.config import load
from topology.runtime.reload import Reloader
from topology.runtime.supervisor import Runtime
from topology.streams import Connection

BASE = """
version: 1
name: hot
defaults: {{start: oldest, ack_grace: 5s}}
streams: {{in: {{}}, more: {{}}, out: {{}}}}
sinks:
  fwd:
    streams: [{streams}]
    handler: hot_handlers:{handler}
    outputs: [out]
"""

HANDLERS = """
from topology import Emit

def forward(event):
    return Emit("v{version}", event.payload)
"""


def write(path: Path, streams: str = "in", handler: str = "forward") -> None:
    path.write_text(BASE.format(streams=streams, handler=handler))


@pytest.fixture
async def setup(r: aioredis.Redis, tmp_path: Path) -> AsyncIterator[tuple[Runtime, Path]]:
    (tmp_path / "hot_handlers.py").write_text(HANDLERS.format(version=1))
    config = tmp_path / "hot.yaml"
    write(config)
    runtime = Runtime(Connection(r), deployment="hot", worker_id="w", base_dir=tmp_path)
    await runtime.apply(load(config))
    yield runtime, config
    await runtime.drain(5)
    await runtime.close()


async def add(r: aioredis.Redis, stream: str, n: int) -> None:
    await Connection(r).stream(stream).add_many(("e", str(i), None) for i in range(n))


async def test_a_file_write_adds_a_stream_to_the_running_sink_within_a_second(
    setup: tuple[Runtime, Path], r: aioredis.Redis
) -> None:
    runtime, config = setup
    reloader = Reloader(config, runtime, watch=True)
    reloader.start()
    try:
        await asyncio.wait_for(reloader.armed.wait(), 5)
        await add(r, "more", 3)
        written = time.monotonic()
        write(config, streams="in, more")
        await wait_for(lambda: runtime.handled().get("fwd") == 3, timeout=3)
        assert time.monotonic() - written < 1.0
        assert runtime.generation == 2
    finally:
        await reloader.stop()


async def test_a_rename_style_write_triggers_a_reload(
    setup: tuple[Runtime, Path], r: aioredis.Redis
) -> None:
    runtime, config = setup
    reloader = Reloader(config, runtime, watch=True)
    reloader.start()
    try:
        await asyncio.wait_for(reloader.armed.wait(), 5)
        tmp = config.with_suffix(".yaml.swp")
        write(tmp, streams="in, more")
        os.replace(tmp, config)
        await wait_for(lambda: runtime.generation == 2, timeout=3)
        assert runtime.topology.sinks["fwd"].stream_names == ("in", "more")
    finally:
        await reloader.stop()


async def test_an_invalid_file_changes_nothing_and_the_next_valid_one_applies(
    setup: tuple[Runtime, Path], r: aioredis.Redis
) -> None:
    runtime, config = setup
    hup = asyncio.Event()
    reloader = Reloader(config, runtime, hup=hup, watch=False)
    actors = runtime.actors()
    config.write_text("version: 1\nname: hot\nsinks: {fwd: {streams: [nope]}}\n")
    assert not await reloader.reload("test")
    write(config, handler="does_not_exist")
    assert not await reloader.reload("test")
    assert runtime.actors() == actors and runtime.generation == 1
    write(config, streams="in, more")
    assert await reloader.reload("test")
    assert runtime.generation == 2 and runtime.actors() == actors  # no restart either


async def test_the_hup_event_reloads_and_edited_handler_code_is_picked_up(
    setup: tuple[Runtime, Path], r: aioredis.Redis, tmp_path: Path
) -> None:
    runtime, config = setup
    hup = asyncio.Event()
    reloader = Reloader(config, runtime, hup=hup, watch=False)
    reloader.start()
    try:
        await add(r, "in", 1)
        await wait_for(lambda: runtime.handled().get("fwd") == 1)
        (tmp_path / "hot_handlers.py").write_text(HANDLERS.format(version=2) + "\n# v2\n")
        (tmp_path / "hot.yaml").write_text(
            config.read_text().replace("outputs: [out]", "outputs: [out]\n    batch: 100")
        )
        hup.set()
        await wait_for(lambda: runtime.generation == 2)
        await add(r, "in", 1)
        await wait_for(lambda: runtime.handled().get("fwd") == 2)
        names = [f[b"n"] for _, f in await r.xrange("pulse:stream:out")]
        assert names == [b"v1", b"v2"]
    finally:
        await reloader.stop()


async def test_an_oversized_or_deeply_nested_file_is_refused_with_a_located_line(
    setup: tuple[Runtime, Path], caplog: pytest.LogCaptureFixture
) -> None:
    from topology.config import MAX_BYTES

    runtime, config = setup
    reloader = Reloader(config, runtime, watch=False)
    config.write_text("version: 1\nname: hot\nstreams: " + "[" * 1000 + "\n")
    assert not await reloader.reload("test")
    config.write_bytes(b"#" * (MAX_BYTES + 1))
    assert not await reloader.reload("test")
    assert runtime.generation == 1
    errors = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reload: ")]
    assert errors == [
        f"reload: {config}:3:73: (root): nested too deeply: more than 64 levels",
        f"reload: {config}:1:1: (file): file too large: a config may hold at most "
        f"{MAX_BYTES} bytes (1 MB)",
    ]
    assert not any(r.exc_info for r in caplog.records)
