"""``apply`` publishes a config; ``run --deployment`` workers follow it (real servers)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from tests.helpers import wait_until
from topology.config.model import Topology
from topology.runtime.deployment import DeploymentFollower, publish, read_published
from topology.runtime.keys import EngineKeys
from topology.runtime.metrics import Metrics
from topology.runtime.signing import KEY_ENV
from topology.server import ServerProcess

PASSWORD = "dep-s3cret-pw"

CONFIG = """
version: 1
name: {name}
defaults:
  start: oldest
streams:
  a: {{}}
  b: {{}}
  out: {{}}
sinks:
  fwd:
    streams: [{streams}]
    handler: dep_handlers:forward
    outputs: [out]
"""

HANDLERS = """
from topology import Emit

def forward(event):
    return Emit("out", event.payload)
"""


def write_config(folder: Path, name: str, streams: str = "a") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dep_handlers.py").write_text(textwrap.dedent(HANDLERS))
    path = folder / "dep.yaml"
    path.write_text(CONFIG.format(name=name, streams=streams))
    return path


def cli(
    *args: str, cwd: Path | None = None, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    if key is not None:
        env[KEY_ENV] = key
    return subprocess.run(
        [sys.executable, "-m", "topology.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


class Worker:
    """A ``run --deployment`` subprocess whose stderr is collected line by line."""

    def __init__(
        self, url: str, name: str, handlers: Path, *extra: str, key: str | None = None
    ) -> None:
        env = {**os.environ}
        env.pop("REDIS_URL", None)
        env.pop(KEY_ENV, None)
        if key is not None:
            env[KEY_ENV] = key
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "topology.cli",
                "run",
                "--deployment",
                name,
                "--redis-url",
                url,
                "--handlers-dir",
                str(handlers),
                "--quiet",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.out = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def wait_log(self, needle: str, timeout: float = 20.0) -> None:
        wait_until(
            lambda: needle in self.text() or self.proc.poll() is not None,
            timeout,
            f"log {needle!r}",
        )
        assert needle in self.text(), self.text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.stdout is not None
        self.out = self.proc.stdout.read()
        self._reader.join(5)
        return code


def outputs(client: redis.Redis) -> list[bytes]:
    return [fields[b"p"] for _, fields in client.xrange("pulse:stream:out")]


def heartbeat(client: redis.Redis, name: str) -> dict:
    beats = client.hgetall(EngineKeys(name).workers())
    return json.loads(next(iter(beats.values()))) if beats else {}


@pytest.fixture
def secured(server_binary: str, tmp_path: Path) -> Iterator[str]:
    """URL (with its password) of a password-protected server of the test's own."""
    server = ServerProcess(tmp_path / "srv", binary=server_binary, password=PASSWORD)
    server.start()
    yield f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    server.stop()


def test_apply_then_worker_handles_events_and_reconciles_next_apply(
    tmp_path: Path, secured: str
) -> None:
    client = redis.Redis.from_url(secured)
    config = write_config(tmp_path / "pub", "dep1")
    handlers = tmp_path / "worker"
    write_config(handlers, "unused")  # the worker imports handlers from its own folder
    applied = cli("apply", str(config), "--redis-url", secured)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.startswith("applied dep1 version 1 (sha256 ")
    worker = Worker(secured, "dep1", handlers)
    try:
        client.xadd("pulse:stream:a", {"n": "e", "p": "a1"})
        wait_until(lambda: outputs(client) == [b"a1"], 20, "a1 forwarded")
        worker.wait_log("generation 1 running")

        write_config(tmp_path / "pub", "dep1", streams="a, b")
        second = cli("apply", str(config), "--redis-url", secured)
        assert second.returncode == 0, second.stderr
        assert "applied dep1 version 2" in second.stdout
        worker.wait_log("generation 2 running")
        client.xadd("pulse:stream:b", {"n": "e", "p": "b1"})
        client.xadd("pulse:stream:a", {"n": "e", "p": "a2"})
        wait_until(lambda: len(outputs(client)) == 3, 20, "b1 and a2 forwarded")
        assert sorted(outputs(client)) == [b"a1", b"a2", b"b1"]
        wait_until(
            lambda: heartbeat(client, "dep1").get("deployment_version") == 2,
            10,
            "heartbeat shows version 2",
        )
        assert heartbeat(client, "dep1")["generation"] == 2
        assert worker.proc.poll() is None  # reconciled, not restarted
    finally:
        code = worker.stop()
        client.close()
        print(worker.text())  # shown by pytest when the test fails
    assert code == 0, worker.text()
    for text in (
        applied.stdout,
        applied.stderr,
        second.stdout,
        second.stderr,
        worker.text(),
        worker.out,
    ):
        assert PASSWORD not in text


def test_worker_waits_for_a_first_apply(tmp_path: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    config = write_config(tmp_path, "dep2")
    worker = Worker(redis_url, "dep2", tmp_path)
    try:
        worker.wait_log("waiting for a config")
        assert worker.proc.poll() is None
        client.xadd("pulse:stream:a", {"n": "e", "p": "early"})
        assert cli("apply", str(config), "--redis-url", redis_url).returncode == 0
        wait_until(lambda: outputs(client) == [b"early"], 20, "early forwarded")
    finally:
        code = worker.stop()
        client.close()
    assert code == 0, worker.text()


def test_worker_stopped_while_waiting_exits_0(tmp_path: Path, redis_url: str) -> None:
    worker = Worker(redis_url, "dep3", tmp_path)
    worker.wait_log("waiting for a config")
    assert worker.stop() == 0


def test_invalid_apply_exits_2_and_publishes_nothing(tmp_path: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    config = write_config(tmp_path, "dep4")
    config.write_text(config.read_text().replace("streams: [a]", "streams: [aa]"))
    result = cli("apply", str(config), "--redis-url", redis_url)
    try:
        assert result.returncode == 2
        assert f"{config}:" in result.stderr and "unknown stream 'aa'" in result.stderr
        assert result.stdout == ""
        assert not client.exists(EngineKeys("dep4").config())
    finally:
        client.close()


def test_applying_the_same_text_keeps_the_version(tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path, "dep5")
    first = cli("apply", str(config), "--redis-url", redis_url)
    again = cli("apply", str(config), "--redis-url", redis_url)
    assert first.returncode == again.returncode == 0
    assert "version 1" in first.stdout
    assert again.stdout.startswith("unchanged: dep5 is at version 1")


def test_run_deployment_needs_a_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "topology.cli", "run", "--deployment", "x"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "--redis-url" in result.stderr


def test_run_takes_config_or_deployment_not_both(tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path, "dep6")
    both = cli("run", str(config), "--deployment", "dep6", "--redis-url", redis_url)
    neither = cli("run", "--redis-url", redis_url)
    assert both.returncode == neither.returncode == 2
    assert "either CONFIG or --deployment" in both.stderr


# -- the follower in process: guards and the polling safety net ----------------------


class Recorder:
    """Stands in for Runtime: records what it is asked to apply."""

    def __init__(self) -> None:
        self.applied: list[Topology] = []
        self.event = asyncio.Event()
        self.metrics = Metrics()

    async def apply(self, topology: Topology) -> None:
        self.applied.append(topology)
        self.event.set()


async def wait_applied(recorder: Recorder, count: int) -> None:
    async def until() -> None:
        while len(recorder.applied) < count:
            recorder.event.clear()
            await recorder.event.wait()

    await asyncio.wait_for(until(), 10)


async def test_invalid_published_version_is_logged_and_skipped(
    tmp_path: Path, r: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path, "dep7")
    text = config.read_text()
    await publish(r, "dep7", text, source="dep.yaml")
    follower = DeploymentFollower(r, "dep7", handlers_dir=tmp_path, poll_interval=0.2)
    recorder = Recorder()
    try:
        first = await follower.first(asyncio.Event())
        assert first is not None and list(first.sinks) == ["fwd"]
        assert follower.version == 1
        follower.start(recorder)
        caplog.set_level(logging.INFO, logger="topology.deployment")
        # Written around apply (which would refuse it): the worker must still guard.
        await publish(r, "dep7", text.replace("streams: [a]", "streams: [zz]"), source="dep.yaml")
        deadline = time.monotonic() + 10  # a log line has no event to await
        while "unknown stream 'zz'" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.05)
        assert "dep.yaml:" in caplog.text and "version 1 keeps running" in caplog.text
        assert recorder.applied == [] and follower.version == 1
        assert (
            recorder.metrics.registry.get_sample_value("ponos_reloads_total", {"result": "invalid"})
            == 1
        )
        await publish(r, "dep7", text.replace("streams: [a]", "streams: [a, b]"), source="dep.yaml")
        await wait_applied(recorder, 1)
        assert recorder.applied[0].sinks["fwd"].stream_names == ("a", "b")
        assert follower.version == 3
    finally:
        await follower.stop()


async def test_a_missed_announcement_is_caught_by_polling(
    tmp_path: Path, r: aioredis.Redis
) -> None:
    config = write_config(tmp_path, "dep8")
    text = config.read_text()
    await publish(r, "dep8", text, source="dep.yaml")
    follower = DeploymentFollower(r, "dep8", handlers_dir=tmp_path, poll_interval=0.2)
    recorder = Recorder()
    try:
        assert await follower.first(asyncio.Event()) is not None
        follower.start(recorder)
        # A new version with no PUBLISH: as if the message was lost in a reconnect.
        changed = text.replace("streams: [a]", "streams: [b]")
        await r.hset(
            EngineKeys("dep8").config(),
            mapping={
                "text": changed,
                "version": 2,
                "sha256": "x",
                "source": "dep.yaml",
            },
        )
        await wait_applied(recorder, 1)
        assert recorder.applied[0].sinks["fwd"].stream_names == ("b",)
        assert follower.version == 2
        published = await read_published(r, "dep8")
        assert published is not None and published.text == changed
    finally:
        await follower.stop()


async def follow_second_version(client: object, tmp_path: Path, name: str) -> Recorder:
    """Publish v1, follow it with polling out of the picture, publish v2: pub/sub must wake it."""
    config = write_config(tmp_path, name)
    text = config.read_text()
    await publish(client, name, text, source="dep.yaml")
    follower = DeploymentFollower(client, name, handlers_dir=tmp_path, poll_interval=60)
    recorder = Recorder()
    try:
        assert await follower.first(asyncio.Event()) is not None
        follower.start(recorder)
        changed = text.replace("streams: [a]", "streams: [a, b]")
        version, changed_flag = await publish(client, name, changed, source="dep.yaml")
        assert (version, changed_flag) == (2, True)
        await wait_applied(recorder, 1)
        assert follower.version == 2
    finally:
        await follower.stop()
    return recorder


async def test_an_announcement_wakes_the_worker_at_once(tmp_path: Path, r: aioredis.Redis) -> None:
    await follow_second_version(r, tmp_path, "dep9")


async def test_apply_and_follow_on_a_cluster(tmp_path: Path, redis_cluster: object) -> None:
    nodes = redis_cluster.nodes  # type: ignore[attr-defined]
    client = aioredis.RedisCluster.from_url(nodes[0].url)
    try:
        await client.initialize()
        await client.delete(EngineKeys("dep10").config())
        await follow_second_version(client, tmp_path, "dep10")
    finally:
        await client.aclose()


async def test_sighup_retries_a_version_that_was_invalid_here(
    tmp_path: Path,
    r: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("DEP_STREAM", raising=False)
    config = write_config(tmp_path, "dep11")
    text = config.read_text()
    await publish(r, "dep11", text, source="dep.yaml")
    follower = DeploymentFollower(r, "dep11", handlers_dir=tmp_path, poll_interval=0.2)
    recorder = Recorder()
    hup = asyncio.Event()
    try:
        assert await follower.first(asyncio.Event()) is not None
        follower.start(recorder, hup=hup)
        # ${VAR} resolves on the worker: missing here, so version 2 is invalid here.
        await publish(r, "dep11", text.replace("[a]", '[a, "${DEP_STREAM}"]'), source="dep.yaml")
        deadline = time.monotonic() + 10  # the rejection is only visible in the metrics
        while not recorder.metrics.registry.get_sample_value(
            "ponos_reloads_total", {"result": "invalid"}
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert recorder.applied == [] and follower.version == 1
        assert "DEP_STREAM" in caplog.text
        monkeypatch.setenv("DEP_STREAM", "b")
        hup.set()
        await wait_applied(recorder, 1)
        assert recorder.applied[0].sinks["fwd"].stream_names == ("a", "b")
        assert follower.version == 2
    finally:
        await follower.stop()


def test_apply_to_unreachable_redis_exits_1_without_the_password(
    tmp_path: Path, secured: str
) -> None:
    config = write_config(tmp_path, "dep12")
    wrong = secured.replace(PASSWORD, "wrong-pw-42")
    result = cli("apply", str(config), "--redis-url", wrong)
    assert result.returncode == 1
    assert "wrong-pw-42" not in result.stdout + result.stderr
    assert ":***@" in result.stderr
    worker = cli("run", "--deployment", "dep12", "--redis-url", wrong)
    assert worker.returncode == 1
    assert "wrong-pw-42" not in worker.stdout + worker.stderr
