"""Issue 5's "done when", each through the Reloader (a file write on disk, watched), with
events flowing during every reload, against a real server."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.helpers import wait_for
from topology.config import load
from topology.runtime import Runtime
from topology.runtime.reload import Reloader
from topology.streams import Connection

HANDLERS = """
import sys
import time
from topology import Emit

def forward(event):
    return Emit("out", event.payload)

async def forward_async(event):
    return Emit("out", event.payload)

def slow(event):
    time.sleep(0.0005)  # keeps a batch in hand while the reload happens
    return Emit("out", event.payload)

def extra(event):
    return Emit("out_extra", event.payload)
"""

#: Imports fine once (when validated), raises when the reload re-imports it.
SECOND_IMPORT_FAILS = """
import sys
from topology import Emit

sys._ponos_flaky_imports = getattr(sys, "_ponos_flaky_imports", 0) + 1
if sys._ponos_flaky_imports > 1:
    raise RuntimeError("flaky: only the first import works")

def forward(event):
    return Emit("out", event.payload)
"""


def config_text(
    streams: str = "in",
    handler: str = "forward",
    consumers: int = 1,
    extra: bool = False,
    extra_streams: str = "in",
    batch: int = 64,
    module: str = "dw_handlers",
) -> str:
    text = f"""version: 1
name: dw
defaults: {{start: oldest, ack_grace: 1s, batch: {batch}}}
streams: {{in: {{}}, more: {{}}, out: {{}}, out_extra: {{}}, broken: {{}}}}
sinks:
  fwd:
    streams: [{streams}]
    handler: {module}:{handler}
    consumers: {consumers}
    outputs: [out]
"""
    if extra:
        text += f"""  extra:
    streams: [{extra_streams}]
    handler: dw_handlers:extra
    outputs: [out_extra]
"""
    return text


def write_renamed(path: Path, text: str) -> None:
    """How editors save: write aside, rename over the original."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Producer:
    """Adds uniquely numbered events (payload ``stream-i``) to streams, continuously."""

    def __init__(self, r: aioredis.Redis, streams: tuple[str, ...], per_tick: int = 20) -> None:
        conn = Connection(r)
        self.streams = {name: conn.stream(name) for name in streams}
        self.produced = dict.fromkeys(streams, 0)
        self.per_tick = per_tick
        self.paused: set[str] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.started = self.ended = 0.0

    def start(self) -> None:
        self.started = time.monotonic()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            for name, stream in self.streams.items():
                if name in self.paused:
                    continue
                first = self.produced[name]
                await stream.add_many(
                    ("e", f"{name}-{i}", None) for i in range(first, first + self.per_tick)
                )
                self.produced[name] += self.per_tick
            await asyncio.sleep(0.01)  # the offered rate, not a synchronisation

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        self.ended = time.monotonic()

    def total(self) -> int:
        return sum(self.produced.values())

    async def flowed(self, since: int, ticks: int = 5) -> int:
        """Wait until ``ticks`` more ticks of events were added since the count ``since``.

        Load between reloads counted in events, not in events per second: a busy
        machine slows the producer, and the reloads must still happen amid it.
        """
        goal = since + ticks * self.per_tick * (len(self.streams) - len(self.paused))
        await wait_for(lambda: self.total() >= goal, timeout=30, what="load between reloads")
        return self.total()

    def expected(self, *streams: str) -> set[str]:
        return {f"{s}-{i}" for s in streams for i in range(self.produced[s])}


async def outputs(r: aioredis.Redis, stream: str = "out") -> list[str]:
    return [f[b"p"].decode() for _, f in await r.xrange(f"pulse:stream:{stream}")]


def sample(runtime: Runtime, result: str) -> float:
    value = runtime.metrics.registry.get_sample_value("ponos_reloads_total", {"result": result})
    return value or 0.0


@pytest.fixture
async def env(r: aioredis.Redis, tmp_path: Path) -> AsyncIterator[tuple[Runtime, Path]]:
    (tmp_path / "dw_handlers.py").write_text(HANDLERS)
    config = tmp_path / "dw.yaml"
    config.write_text(config_text())
    runtime = Runtime(
        Connection(r), deployment="dw", worker_id="w", base_dir=tmp_path, drain_timeout=10
    )
    await runtime.apply(load(config))
    yield runtime, config
    await runtime.drain(5)
    await runtime.close()


@pytest.fixture
async def watching(env: tuple[Runtime, Path]) -> AsyncIterator[tuple[Runtime, Path, Reloader]]:
    runtime, config = env
    reloader = Reloader(config, runtime, watch=True, quiet_ms=50)
    reloader.start()
    await asyncio.wait_for(reloader.armed.wait(), 5)
    yield runtime, config, reloader
    await reloader.stop()


async def test_a_stream_added_by_a_file_write_is_handled_within_a_second_of_the_write(
    watching: tuple[Runtime, Path, Reloader], r: aioredis.Redis
) -> None:
    runtime, config, reloader = watching
    producer = Producer(r, ("in", "more"))
    producer.start()
    try:
        await wait_for(lambda: runtime.handled().get("fwd", 0) > 100, what="load on 'in'")
        written = time.monotonic()
        config.write_text(config_text(streams="in, more"))  # an in-place write

        async def a_more_event_handled() -> bool:
            rows = await r.xrevrange("pulse:stream:out", count=500)
            return any(f[b"p"].startswith(b"more-") for _, f in rows)

        await wait_for(a_more_event_handled, timeout=5, what="the first event of 'more'")
        first = time.monotonic() - written
        assert await reloader.wait_finished(1, 5) == "applied"
        assert first < 1.0, f"first event of the added stream handled {first:.3f}s after the write"
        assert runtime.generation == 2
    finally:
        await producer.stop()
    await wait_for(
        lambda: runtime.handled().get("fwd") == sum(producer.produced.values()), what="drain"
    )
    out = await outputs(r)
    assert len(out) == len(set(out)) and set(out) == producer.expected("in", "more")


async def test_a_stream_removed_by_a_file_write_is_no_longer_handled_and_loses_nothing(
    env: tuple[Runtime, Path], r: aioredis.Redis
) -> None:
    runtime, config = env
    config.write_text(config_text(streams="in, more", handler="slow", consumers=2))
    reloader = Reloader(config, runtime, watch=True, quiet_ms=50)
    reloader.start()
    producer = Producer(r, ("in", "more"))
    try:
        await asyncio.wait_for(reloader.armed.wait(), 5)
        assert await reloader.reload("written before the watch was armed")
        producer.start()
        await wait_for(lambda: runtime.handled().get("fwd", 0) > 300, what="load")
        write_renamed(config, config_text(streams="in", handler="slow", consumers=2))
        assert await reloader.wait_finished(2, 10) == "applied"
        assert runtime.generation == 3
        # the reload is complete: from here on, no event of 'more' is handled by fwd
        handled_more = {p for p in await outputs(r) if p.startswith("more-")}
        target = f"in-{producer.produced['in'] + 50}"

        async def in_flowing() -> bool:
            rows = await r.xrevrange("pulse:stream:out", count=500)
            return any(f[b"p"] == target.encode() for _, f in rows)

        await wait_for(in_flowing, what="events of 'in' produced after the reload handled")
    finally:
        await producer.stop()
    out = await outputs(r)
    assert {p for p in out if p.startswith("more-")} == handled_more  # nothing more of it
    groups = {g["name"]: g for g in await r.xinfo_groups("pulse:stream:more")}
    assert b"fwd" in groups  # the group and its position stay
    # every event of 'more' delivered to the group is either handled or still pending
    last = groups[b"fwd"]["last-delivered-id"]
    delivered = {f[b"p"].decode() for _, f in await r.xrange("pulse:stream:more", max=last)}
    pending_rows = await r.xpending_range("pulse:stream:more", "fwd", "-", "+", 100_000)
    pending_ids = [row["message_id"] for row in pending_rows]
    pending = {
        f[b"p"].decode() for i in pending_ids for _, f in await r.xrange("pulse:stream:more", i, i)
    }
    assert not handled_more & pending
    assert handled_more | pending == delivered, "an in-flight event of the removed stream was lost"
    assert (
        len(handled_more) + len(pending) + int(groups[b"fwd"]["lag"] or 0)
        == (producer.produced["more"])
    )
    # re-adding resumes where it stopped: every event of 'more' handled exactly once
    write_renamed(config, config_text(streams="in, more", handler="slow", consumers=2))
    try:
        assert await reloader.wait_finished(3, 10) == "applied"
        await wait_for(
            lambda: runtime.handled().get("fwd") == sum(producer.produced.values()),
            timeout=15,
            what="the re-added stream drained (pending ones claimed)",
        )
    finally:
        await reloader.stop()
    out = await outputs(r)
    assert len(out) == len(set(out)) and set(out) == producer.expected("in", "more")


#: Reload k writes VARIANTS[k % len]: each differs from the one before it.
VARIANTS: list[dict[str, Any]] = [
    dict(streams="in", consumers=1, handler="forward", extra=True),  # start
    dict(streams="in", consumers=3, handler="forward", extra=True),  # rescale up
    dict(streams="in, more", consumers=3, handler="forward", extra=True),  # add a stream
    dict(streams="in, more", consumers=3, handler="forward"),  # remove a sink
    dict(streams="in, more", consumers=2, handler="forward_async"),  # change handler, rescale
    dict(streams="in", consumers=2, handler="forward_async", extra=True),  # rm stream, add sink
    dict(
        streams="in, more", consumers=1, handler="forward", extra=True, extra_streams="in, more"
    ),  # handler back, add a stream to both
]


async def test_every_event_is_handled_exactly_once_across_twenty_file_reloads_under_load(
    watching: tuple[Runtime, Path, Reloader], r: aioredis.Redis
) -> None:
    runtime, config, reloader = watching
    write_renamed(config, config_text(**VARIANTS[0]))
    await reloader.wait_finished(1, 5)  # 'unchanged' or 'applied': the start state either way
    producer = Producer(r, ("in", "more"), per_tick=20)
    producer.start()
    applied = 0
    finished = len(reloader.results)
    offered = 0
    try:
        for k in range(1, 23):
            offered = await producer.flowed(offered)  # every reload amid a flow of events
            generation = runtime.generation
            write_renamed(config, config_text(**VARIANTS[k % len(VARIANTS)]))
            while True:  # a stray extra event may add an 'unchanged' attempt: skip it
                finished += 1
                result = await reloader.wait_finished(finished, 10)
                if result != "unchanged":
                    break
            assert result == "applied", reloader.results
            assert runtime.generation == generation + 1
            applied += 1
        await producer.stop()
    finally:
        await producer.stop()
    write_renamed(config, config_text(streams="in, more", extra=True, extra_streams="in, more"))
    assert await reloader.wait_finished(finished + 1, 10) in ("applied", "unchanged")
    total = sum(producer.produced.values())
    await wait_for(lambda: runtime.handled().get("fwd") == total, timeout=30, what="fwd drained")
    out = await outputs(r)
    assert len(out) == len(set(out)), f"{len(out) - len(set(out))} duplicates"
    assert set(out) == producer.expected("in", "more")
    # the extra sink came and went: each of its events once (its group resumed each time)
    await wait_for(
        lambda: runtime.handled().get("extra", 0) >= total, timeout=30, what="extra drained"
    )
    extra = await outputs(r, "out_extra")
    assert len(extra) == len(set(extra)) and set(extra) == producer.expected("in", "more")
    assert applied >= 20
    assert await runtime.pending() == 0


async def test_invalid_files_change_nothing_log_located_errors_and_the_next_valid_one_applies(
    watching: tuple[Runtime, Path, Reloader],
    r: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime, config, reloader = watching
    actors = runtime.actors()
    producer = Producer(r, ("in",))
    producer.start()
    caplog.set_level(logging.INFO, logger="topology")
    good = config_text()
    invalid = {
        "bad yaml": good.replace("outputs: [out]", "outputs: [out\n  oops: {"),
        "unknown streams": config_text(streams="in, nope, ohno"),
        "handler that does not import": config_text(handler="missing"),
        "module that does not import": config_text(module="no_such_module_dw"),
    }
    try:
        for n, (what, text) in enumerate(invalid.items(), start=1):
            caplog.clear()
            handled = runtime.handled().get("fwd", 0)
            write_renamed(config, text)
            assert await reloader.wait_finished(n, 5) == "invalid", what
            assert runtime.generation == 1, what
            assert runtime.actors() == actors and all(a.running for a in actors), what
            assert sample(runtime, "invalid") == n
            errors = [
                rec.getMessage()
                for rec in caplog.records
                if rec.levelno >= logging.ERROR and rec.getMessage().startswith("reload: ")
            ]
            assert errors, what
            for message in errors:  # every error names the file, line and column
                assert re.match(rf"reload: .*{re.escape(config.name)}:\d+:\d+: ", message), message
            if what == "unknown streams":
                assert any("'nope'" in m for m in errors) and any("'ohno'" in m for m in errors)
            # nothing stopped: events keep being handled by the untouched actors
            await wait_for(lambda h=handled: runtime.handled().get("fwd", 0) > h + 20, what=what)
        write_renamed(config, config_text(streams="in, more"))
        assert await reloader.wait_finished(len(invalid) + 1, 5) == "applied"
        assert runtime.generation == 2 and runtime.actors() == actors  # applied live
        assert any("generation 2 running" in rec.getMessage() for rec in caplog.records)
        assert sample(runtime, "applied") == 2 and sample(runtime, "rolled_back") == 0
    finally:
        await producer.stop()


@pytest.mark.parametrize("layout", ["link-to-file", "kubernetes-data-dir"])
async def test_switching_a_symlinked_config_to_another_target_reloads(
    r: aioredis.Redis, tmp_path: Path, layout: str
) -> None:
    (tmp_path / "dw_handlers.py").write_text(HANDLERS)
    config = tmp_path / "dw.yaml"
    if layout == "link-to-file":  # config.yaml -> v1.yaml, then ln -sfn v2.yaml
        (tmp_path / "v1.yaml").write_text(config_text())
        (tmp_path / "v2.yaml").write_text(config_text(streams="in, more"))
        config.symlink_to("v1.yaml")
        link, new_target = config, "v2.yaml"
    else:  # dw.yaml -> ..data/dw.yaml, ..data -> ..v1: a ConfigMap update swaps ..data
        for version, streams in (("..v1", "in"), ("..v2", "in, more")):
            (tmp_path / version).mkdir()
            (tmp_path / version / "dw.yaml").write_text(config_text(streams=streams))
        (tmp_path / "..data").symlink_to("..v1")
        config.symlink_to("..data/dw.yaml")
        link, new_target = tmp_path / "..data", "..v2"
    runtime = Runtime(Connection(r), deployment="dw", worker_id="w", base_dir=tmp_path)
    await runtime.apply(load(config))
    reloader = Reloader(config, runtime, watch=True, quiet_ms=50)
    reloader.start()
    producer = Producer(r, ("in", "more"))
    producer.start()
    try:
        await asyncio.wait_for(reloader.armed.wait(), 5)
        tmp_link = link.with_name(link.name + ".new")
        tmp_link.symlink_to(new_target)
        os.replace(tmp_link, link)  # what `ln -sfn` does atomically
        assert await reloader.wait_finished(1, 5) == "applied"
        assert runtime.topology.sinks["fwd"].stream_names == ("in", "more")

        async def more_handled() -> bool:
            rows = await r.xrevrange("pulse:stream:out", count=500)
            return any(f[b"p"].startswith(b"more-") for _, f in rows)

        await wait_for(more_handled, what="the new target's stream handled")
    finally:
        await producer.stop()
        await reloader.stop()
        await runtime.drain(5)
        await runtime.close()


async def test_a_reload_failing_half_way_rolls_back_and_events_keep_flowing(
    watching: tuple[Runtime, Path, Reloader], r: aioredis.Redis, tmp_path: Path
) -> None:
    runtime, config, reloader = watching
    (tmp_path / "dw_flaky.py").write_text(SECOND_IMPORT_FAILS)
    producer = Producer(r, ("in",))
    producer.start()
    try:
        await wait_for(lambda: runtime.handled().get("fwd", 0) > 50, what="load")
        # Redis refuses a command half-way: fwd's new consumers start, then the new
        # sink's XGROUP CREATE hits a key of the wrong type.
        await r.set("pulse:stream:broken", "not a stream")
        actors = runtime.actors()
        write_renamed(config, config_text(consumers=3, extra=True, extra_streams="broken"))
        assert await reloader.wait_finished(1, 10) == "rolled_back"
        assert runtime.generation == 1 and sample(runtime, "rolled_back") == 1
        assert runtime.actors() == actors and all(a.running for a in actors)
        assert runtime.actors("extra") == []
        handled = runtime.handled().get("fwd", 0)
        await wait_for(lambda: runtime.handled().get("fwd", 0) > handled + 50, what="flowing")
        # half-way through a restart: fwd's actors are drained and restarted with the
        # new handler, then the new sink fails; fwd must run its old handler again
        write_renamed(
            config,
            config_text(handler="forward_async", extra=True, extra_streams="broken"),
        )
        assert await reloader.wait_finished(2, 10) == "rolled_back"
        assert runtime.generation == 1 and sample(runtime, "rolled_back") == 2
        restored = runtime.actors("fwd")
        assert len(restored) == 1 and restored[0].running
        assert restored[0].handler.fn.__name__ == "forward"
        assert runtime.topology.sinks["fwd"].handler == "dw_handlers:forward"
        actors = runtime.actors()
        handled = runtime.handled().get("fwd", 0)
        await wait_for(lambda: runtime.handled().get("fwd", 0) > handled + 50, what="flowing")
        # a handler module that imports at validation but raises when reloaded
        write_renamed(config, config_text(module="dw_flaky", consumers=2))
        assert await reloader.wait_finished(3, 10) == "rolled_back"
        assert runtime.generation == 1 and sample(runtime, "rolled_back") == 3
        assert runtime.actors() == actors and all(a.running for a in actors)
        handled = runtime.handled().get("fwd", 0)
        await wait_for(lambda: runtime.handled().get("fwd", 0) > handled + 50, what="flowing")
        # and the next good file applies
        write_renamed(config, config_text(consumers=2))
        assert await reloader.wait_finished(4, 10) == "applied"
        assert runtime.generation == 2 and len(runtime.actors("fwd")) == 2
    finally:
        await producer.stop()
    total = producer.produced["in"]
    await wait_for(lambda: runtime.handled().get("fwd") == total, what="drain")
    out = await outputs(r)
    assert len(out) == len(set(out)) and set(out) == producer.expected("in")
