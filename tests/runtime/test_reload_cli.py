"""A running ``ponos-topology run`` process: a symlinked config switched to a new target
reloads, the new generation is logged, and ``status`` shows it from the heartbeat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import wait_until
from tests.runtime.test_reload_done_when import write_renamed
from topology.runtime.keys import EngineKeys

CONFIG = """
version: 1
name: rcli
defaults: {{start: oldest}}
streams: {{in: {{}}, more: {{}}, out: {{}}}}
sinks:
  fwd:
    streams: [{streams}]
    handler: rcli_handlers:forward
    outputs: [out]
"""

HANDLERS = """
from topology import Emit

def forward(event):
    return Emit("out", event.payload)
"""


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def generations(client: redis.Redis) -> list[int]:
    beats = client.hgetall(EngineKeys("rcli").workers())
    return [int(json.loads(v).get("generation", -1)) for v in beats.values()]


@pytest.mark.skipif(os.name != "posix", reason="symlinks and signals")
def test_switching_the_config_symlink_reloads_and_status_shows_the_generation(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    (tmp_path / "rcli_handlers.py").write_text(HANDLERS)
    (tmp_path / "v1.yaml").write_text(CONFIG.format(streams="in"))
    (tmp_path / "v2.yaml").write_text(CONFIG.format(streams="in, more"))
    config = tmp_path / "rcli.yaml"
    config.symlink_to("v1.yaml")
    client.xadd("pulse:stream:in", {"n": "e", "p": "in-0"})
    client.xadd("pulse:stream:more", {"n": "e", "p": "more-0"})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "topology.cli",
            "run",
            str(config),
            "--redis-url",
            redis_url,
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: seen.extend(proc.stderr), daemon=True)
    reader.start()

    def logged(text: str) -> bool:
        return any(text in line for line in list(seen))

    try:
        # a switch before the watch is armed would go unseen
        wait_until(lambda: logged("watching"), 15, "the watch armed")
        wait_until(lambda: client.xlen("pulse:stream:out") == 1, 15, "generation 1")
        tmp_link = tmp_path / "rcli.yaml.new"
        tmp_link.symlink_to("v2.yaml")
        os.replace(tmp_link, config)  # ln -sfn v2.yaml rcli.yaml
        try:
            wait_until(lambda: logged("generation 2 running"), 10, "the reload's log line")
        except AssertionError:
            raise AssertionError("".join(seen)) from None
        wait_until(lambda: client.xlen("pulse:stream:out") == 2, 10, "the new target's stream")
        wait_until(lambda: generations(client) == [2], 10, "the heartbeat's generation")
        status = subprocess.run(
            [sys.executable, "-m", "topology.cli", "status", str(config), "--redis-url", redis_url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        assert "generation 2" in status.stdout, status.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)  # stderr is the reader thread's: no communicate()
        reader.join(5)
        assert proc.stdout is not None
        out = proc.stdout.read()
    assert proc.returncode == 0, "".join(seen)
    assert "fwd 2" in out, out


def test_run_logging_into_the_config_folder_does_not_wake_the_watcher(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    """`run > run.log 2>&1` beside the config: only the config's own change reloads."""
    (tmp_path / "rcli_handlers.py").write_text(HANDLERS)
    config = tmp_path / "rcli.yaml"
    config.write_text(CONFIG.format(streams="in"))
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "topology.cli", "run", str(config), "--redis-url", redis_url],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "watching" in log_path.read_text(), 30, "the watch")
        for i in range(50):  # the worker's own lines land in the folder too
            client.xadd("pulse:stream:in", {"n": "e", "p": str(i)})
        wait_until(lambda: client.xlen("pulse:stream:out") == 50, 30, "the events handled")
        write_renamed(config, CONFIG.format(streams="in, more"))  # one whole change
        wait_until(lambda: "generation 2 running" in log_path.read_text(), 30, "the reload")
        text = log_path.read_text()
        assert text.count("reload (") == 1 and "reload (file changed)" in text
        assert "detected" not in text  # no "N changes detected" from watchfiles
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
