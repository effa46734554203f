"""Hot reload through the Reloader: file writes (in place and by rename), SIGHUP's event,
invalid files, edited handler code."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.helpers import LatencyPromise, wait_for
from topology.config import load
from topology.runtime import Runtime
from topology.runtime.reload import Reloader
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
        within_a_second = LatencyPromise(1.0)
        write(config, streams="in, more")
        await wait_for(lambda: runtime.handled().get("fwd") == 3)
        within_a_second.check("the events of the stream the write added, handled")
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


@pytest.mark.parametrize("config_edited", [True, False], ids=["with-config-edit", "code-only"])
async def test_the_hup_event_reloads_and_edited_handler_code_is_picked_up(
    setup: tuple[Runtime, Path], r: aioredis.Redis, tmp_path: Path, config_edited: bool
) -> None:
    """With the config unchanged too: the module's new content alone restarts the sink."""
    runtime, config = setup
    hup = asyncio.Event()
    reloader = Reloader(config, runtime, hup=hup, watch=False)
    reloader.start()
    try:
        await add(r, "in", 1)
        await wait_for(lambda: runtime.handled().get("fwd") == 1)
        before = runtime.actors("fwd")
        (tmp_path / "hot_handlers.py").write_text(HANDLERS.format(version=2) + "\n# v2\n")
        if config_edited:
            (tmp_path / "hot.yaml").write_text(
                config.read_text().replace("outputs: [out]", "outputs: [out]\n    batch: 100")
            )
        hup.set()
        assert await reloader.wait_finished(1, 10) == "applied"
        assert runtime.generation == 2 and runtime.actors("fwd") != before  # restarted
        await add(r, "in", 1)
        await wait_for(lambda: runtime.handled().get("fwd") == 2)
        names = [f[b"n"] for _, f in await r.xrange("pulse:stream:out")]
        assert names == [b"v1", b"v2"]
        hup.set()  # nothing changed since: no restart
        assert await reloader.wait_finished(2, 10) == "unchanged"
    finally:
        await reloader.stop()


async def test_a_watched_handler_module_edit_reloads_it_and_other_files_are_ignored(
    setup: tuple[Runtime, Path], r: aioredis.Redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="topology")  # an in-process CLI may have raised it
    runtime, config = setup
    reloader = Reloader(config, runtime, watch=True, quiet_ms=50)
    reloader.start()
    try:
        await asyncio.wait_for(reloader.armed.wait(), 5)
        log_file = tmp_path / "run.log"  # `run > run.log` beside the config
        for i in range(5):
            with log_file.open("a") as out:
                out.write(f"line {i}\n")
            (tmp_path / "notes.txt").write_text(str(i))
        # Saved the way editors do (write aside, rename over): one whole change.
        module = tmp_path / "hot_handlers.py"
        module.with_suffix(".tmp").write_text(HANDLERS.format(version=2) + "\n# v2\n")
        os.replace(module.with_suffix(".tmp"), module)
        # The first reload attempt is the module edit: the other writes woke nothing.
        assert await reloader.wait_finished(1, 10) == "applied"
        assert reloader.reloads == 1 and runtime.generation == 2
        await add(r, "in", 1)
        await wait_for(lambda: runtime.handled().get("fwd") == 1)
        assert [f[b"n"] for _, f in await r.xrange("pulse:stream:out")] == [b"v2"]
        assert "reload (handler code changed: hot_handlers.py)" in caplog.text
        assert "plan: sink fwd: handler code changed (hot_handlers) (restart)" in caplog.text
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
