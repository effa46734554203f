"""`ponos-topology run` on the embedded default, as a newcomer runs it: no Redis URL at all.

The server lives in ``.ponos-data`` beside the config, keeps what it was given
across runs (append-only file), and never outlives a `run` killed with -9.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import redis

from tests.helpers import process_alive, wait_until
from topology.runtime.embedded import EmbeddedServer

CONFIG = """\
version: 1
name: embedded
redis:
  url: ${REDIS_URL:-}
streams:
  in: {}
  out: {}
sinks:
  fwd:
    streams: [in]
    handler: emb_handlers:forward
    outputs: [out]
    start: oldest
"""

HANDLERS = """\
from topology import Emit


def forward(event):
    return Emit(event.name, event.payload)
"""


def _start_run(config: Path, binary: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PONOS_REDIS_SERVER"] = binary  # the binary the tests use
    cmd = [sys.executable, "-m", "topology.cli", "run", str(config), "--no-watch", "--quiet"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _outputs(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.xlen("pulse:stream:out"))
    finally:
        client.close()


def test_run_killed_9_takes_its_embedded_server_down_and_a_restart_loses_nothing(
    tmp_path: Path, server_binary: str
) -> None:
    (tmp_path / "emb_handlers.py").write_text(textwrap.dedent(HANDLERS))
    config = tmp_path / "embedded.yaml"
    config.write_text(CONFIG)
    data = tmp_path / ".ponos-data"

    run = _start_run(config, server_binary)
    try:
        wait_until(lambda: EmbeddedServer.running_info(data) is not None, 30, "the embedded server")
        info = EmbeddedServer.running_info(data)
        assert info is not None
        server_pid, url = int(info["pid"]), EmbeddedServer.running(data)
        assert url is not None and process_alive(server_pid)
        client = redis.Redis.from_url(url)
        try:
            wait_until(lambda: client.exists("pulse:stream:in") == 1, 30, "the sink's group")
            for i in range(100):
                client.xadd("pulse:stream:in", {"n": "e", "p": str(i)})
        finally:
            client.close()
        wait_until(lambda: _outputs(url) == 100, 30, "100 events forwarded")
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    wait_until(lambda: not process_alive(server_pid), 5, "the server to die with its parent")

    # A new run finds the data the killed one left: the AOF kept the events and outputs.
    again = _start_run(config, server_binary)
    try:
        wait_until(lambda: EmbeddedServer.running(data) is not None, 30, "the restarted server")
        url = EmbeddedServer.running(data)
        assert url is not None
        assert _outputs(url) == 100
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(30) == 0, again.stderr.read() if again.stderr else ""
