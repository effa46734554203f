"""``ponos-topology run`` as a subprocess: kill -9 rounds, shared work, SIGTERM drain."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import wait_until

CONFIG = """
version: 1
name: {name}
defaults:
  batch: {batch}
  start: oldest
  ack_grace: {ack_grace}
streams:
  in: {{}}
  mid: {{}}
  out: {{}}
sinks:
  first:
    streams: [in]
    handler: {module}:first
    consumers: 2
    outputs: [mid]
  second:
    streams: [mid]
    handler: {module}:second
    outputs: [out]
"""

HANDLERS = """
import time
from topology import Emit

DELAY = {delay}

def first(event):
    if DELAY:
        time.sleep(DELAY)
    return Emit("mid", event.payload)

async def second(event):
    return Emit("out", event.payload)
"""


def write_config(
    tmp_path: Path, *, name: str, delay: float, ack_grace: str = "1s", batch: int = 64
) -> Path:
    module = f"{name}_handlers"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(HANDLERS.format(delay=delay)))
    path = tmp_path / f"{name}.yaml"
    path.write_text(CONFIG.format(name=name, module=module, ack_grace=ack_grace, batch=batch))
    return path


def start_run(
    config: Path, url: str, *extra: str, watch: bool = False, stderr: Any = subprocess.PIPE
) -> subprocess.Popen[str]:
    flags = ["--quiet"] + ([] if watch else ["--no-watch"])
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "topology.cli",
            "run",
            str(config),
            "--redis-url",
            url,
            *flags,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def with_third_sink(config: Path) -> str:
    """The config of ``write_config`` plus a sink copying ``out`` to ``copy``."""
    text = config.read_text().replace("  out: {}", "  out: {}\n  copy: {}")
    text += f"  third:\n    streams: [out]\n    handler: {config.stem}_handlers:second\n"
    return text + "    outputs: [copy]\n"


def fill(client: redis.Redis, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd("pulse:stream:in", {"n": "e", "p": str(i)})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def pending(client: redis.Redis, stream: str, group: str) -> int:
    try:
        return int(client.xpending(f"pulse:stream:{stream}", group)["pending"])
    except redis.ResponseError as exc:  # the run has not created its group yet
        if "NOGROUP" in str(exc):
            return 0
        raise


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def test_kill_9_rounds_lose_nothing_and_duplicate_nothing(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    n = 6000
    config = write_config(tmp_path, name="kill9", delay=0.0003)
    fill(client, n)
    rounds = 6
    for k in range(1, rounds):
        proc = start_run(config, redis_url)
        target = min(n - 1, client.xlen("pulse:stream:out") + n // (rounds + 2))
        try:
            wait_until(
                lambda t=target, p=proc: (
                    client.xlen("pulse:stream:out") >= t or p.poll() is not None
                ),
                60,
                f"progress in round {k}",
            )
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    final = start_run(config, redis_url, "--stop-when-idle", "1")
    _, err = final.communicate(timeout=90)
    assert final.returncode == 0, err
    rows = client.xrange("pulse:stream:out")
    payloads = sorted(int(f[b"p"]) for _, f in rows)
    assert len(payloads) == n, f"{len(payloads) - len(set(payloads))} duplicates"
    assert payloads == list(range(n))
    mids = sorted(int(f[b"p"]) for _, f in client.xrange("pulse:stream:mid"))
    assert mids == list(range(n))  # the middle stream is exactly-once too
    assert pending(client, "in", "first") == 0 and pending(client, "mid", "second") == 0


def test_two_processes_share_the_work(tmp_path: Path, redis_url: str, client: redis.Redis) -> None:
    n = 3000
    config = write_config(tmp_path, name="shared", delay=0.001, ack_grace="20s", batch=32)
    fill(client, n)
    procs = [start_run(config, redis_url, "--stop-when-idle", "1.5") for _ in range(2)]
    handled = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        match = re.search(r"first (\d+)", out)
        assert match, out
        handled.append(int(match.group(1)))
    assert sum(handled) == n
    assert min(handled) > 0.2 * n, handled
    payloads = sorted(int(f[b"p"]) for _, f in client.xrange("pulse:stream:out"))
    assert payloads == list(range(n))


def test_sigterm_drains_the_batch_in_hand_and_exits_0(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    config = write_config(tmp_path, name="term", delay=0.02, ack_grace="60s", batch=16)
    fill(client, 2000)
    proc = start_run(config, redis_url)
    wait_until(lambda: client.xlen("pulse:stream:mid") >= 32, 30, "some progress")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "handled: first" in out
    # nothing left half-done: whatever was read was committed (ack_grace is 60 s, so
    # a pending event here could only be one the drain abandoned)
    assert pending(client, "in", "first") == 0
    done = int(re.search(r"first (\d+)", out).group(1))
    assert client.xlen("pulse:stream:mid") == done


def test_a_second_signal_stops_at_once_leaving_events_pending(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    config = write_config(tmp_path, name="twice", delay=0.5, ack_grace="60s", batch=16)
    fill(client, 100)
    proc = start_run(config, redis_url, "--drain-timeout", "60")
    wait_until(lambda: pending(client, "in", "first") > 0, 30, "a batch in hand")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # drain: the batches in hand would take 8 s...
    assert proc.stderr is not None
    for line in proc.stderr:  # two signals sent at once would merge into one
        if "draining" in line:
            break
    proc.send_signal(signal.SIGTERM)  # ...but a second signal stops at once
    proc.communicate(timeout=30)
    assert time.monotonic() - started < 5  # not the 8 s the batches in hand would take
    assert proc.returncode != 0
    assert pending(client, "in", "first") > 0  # left for redelivery


def test_invalid_config_exits_2_with_located_errors(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nname: bad\nsinks:\n  s: {streams: [nope], handler: 'x:y'}\n")
    proc = start_run(path, redis_url)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "bad.yaml:" in err


def test_unreachable_redis_exits_1_naming_the_url_without_password(tmp_path: Path) -> None:
    config = write_config(tmp_path, name="nored", delay=0)
    proc = start_run(config, "redis://user:s3cret@127.0.0.1:1/0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "s3cret" not in err
    assert "127.0.0.1:1" in err


if os.name != "posix":  # pragma: no cover
    pytest.skip("signals", allow_module_level=True)


def test_sighup_reloads_the_config_and_metrics_are_served(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    import urllib.request

    from topology.server import free_port

    config = write_config(tmp_path, name="hup", delay=0, ack_grace="20s")
    fill(client, 50)
    port = free_port()
    proc = start_run(config, redis_url, "--metrics-port", str(port))
    try:
        wait_until(lambda: client.xlen("pulse:stream:out") == 50, 30, "the first generation")
        text = with_third_sink(config)
        config.write_text(text)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: client.xlen("pulse:stream:copy") == 50, 30, "the reloaded sink")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert 'ponos_events_handled_total{sink="first"} 50.0' in metrics
        assert 'ponos_reloads_total{result="applied"} 2.0' in metrics
        assert "ponos_generation 2.0" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "third 50" in out, err


def test_a_rename_style_write_of_the_config_reloads_a_running_process(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    config = write_config(tmp_path, name="watch", delay=0, ack_grace="20s")
    fill(client, 20)
    proc = start_run(config, redis_url, watch=True)
    try:
        wait_until(lambda: client.xlen("pulse:stream:out") == 20, 30, "the first generation")
        text = with_third_sink(config)
        assert proc.stderr is not None
        for line in proc.stderr:  # a write before the watch is armed would go unseen
            if "watching" in line:
                break
        tmp = tmp_path / "watch.yaml.new"
        tmp.write_text(text)
        os.replace(tmp, config)  # how editors save: write aside, rename over
        wait_until(lambda: client.xlen("pulse:stream:copy") == 20, 10, "the reload")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "third 20" in out, err


SOURCE_CONFIG = """
version: 1
name: onesource
defaults: {start: oldest, batch: 32}
streams: {in: {}, out: {}}
sources:
  gen: {handler: "onesource_handlers:numbers", stream: in}
sinks:
  fwd: {streams: [in], handler: "onesource_handlers:forward", outputs: [out]}
"""

SOURCE_HANDLERS = """
import time
from topology import Emit

def numbers():
    for i in range(2000):
        yield Emit("n", str(i))

def forward(event):
    time.sleep(0.001)
    return Emit("out", event.payload)
"""


def write_source_config(tmp_path: Path) -> Path:
    """A source of 2000 numbers and a sink forwarding them, written in ``tmp_path``."""
    (tmp_path / "onesource_handlers.py").write_text(SOURCE_HANDLERS)
    config = tmp_path / "onesource.yaml"
    config.write_text(SOURCE_CONFIG)
    return config


def test_two_processes_run_a_source_once_and_share_its_events(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    config = write_source_config(tmp_path)
    procs = [start_run(config, redis_url, "--stop-when-idle", "1.5") for _ in range(2)]
    handled = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        handled.append(int(re.search(r"fwd (\d+)", out).group(1)))
    assert client.xlen("pulse:stream:in") == 2000  # the source ran in one process only
    payloads = sorted(int(f[b"p"]) for _, f in client.xrange("pulse:stream:out"))
    assert payloads == list(range(2000))
    assert sum(handled) == 2000 and min(handled) > 400, handled


def test_a_failed_source_makes_stop_when_idle_exit_1(tmp_path: Path, redis_url: str) -> None:
    (tmp_path / "failing_src.py").write_text(
        "from topology import Emit\n"
        "def gen():\n    yield Emit('a', '1')\n    raise RuntimeError('boom')\n"
    )
    config = tmp_path / "failing.yaml"
    config.write_text(
        "version: 1\nname: failing\nstreams:\n  s: {}\n"
        "sources:\n  gen:\n    handler: failing_src:gen\n    stream: s\n"
    )
    proc = start_run(config, redis_url, "--stop-when-idle", "0.5")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "ERROR" in err and "boom" in err and "failed source(s): gen" in err
