"""A worker whose start, or a reload, meets Redis refusing writes for now (a restart,
a failover, no replica in sight) tries again instead of exiting or giving up."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import wait_until
from tests.runtime.test_run_cli import fill, start_run, with_third_sink, write_config
from topology.server import ServerProcess


@pytest.fixture
def client(fresh_server: ServerProcess) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(fresh_server.url)
    yield c
    c.close()


def _refuse_writes(client: redis.Redis, refuse: bool) -> None:
    """``NOREPLICAS``: the server refuses every write until a replica it has not got
    answers (what a master sees while its replicas are away)."""
    client.config_set("min-replicas-to-write", 1 if refuse else 0)


def _await_line(proc: subprocess.Popen[str], needle: str) -> list[str]:
    """The run's log lines up to the first with ``needle`` (all of them if it exits first)."""
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if needle in line:
            break
    return seen


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=30)


def test_a_start_refused_for_now_is_tried_again_until_it_runs(
    tmp_path: Path, fresh_server: ServerProcess, client: redis.Redis
) -> None:
    config = write_config(tmp_path, name="refused", delay=0, ack_grace="20s")
    fill(client, 20)
    _refuse_writes(client, True)
    proc = start_run(config, fresh_server.url)
    try:
        seen = _await_line(proc, "cannot start yet")
        assert "cannot start yet" in seen[-1], "".join(seen)
        assert "NOREPLICAS" in seen[-1]
        _refuse_writes(client, False)
        wait_until(lambda: client.xlen("pulse:stream:out") == 20, 30, "the late start")
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, err
    assert "second 20" in out, err


def test_a_reload_rolled_back_by_an_outage_is_applied_once_redis_accepts(
    tmp_path: Path, fresh_server: ServerProcess, client: redis.Redis
) -> None:
    config = write_config(tmp_path, name="relapse", delay=0, ack_grace="20s")
    fill(client, 20)
    proc = start_run(config, fresh_server.url)
    try:
        wait_until(lambda: client.xlen("pulse:stream:out") == 20, 30, "the first generation")
        _refuse_writes(client, True)
        config.write_text(with_third_sink(config))
        proc.send_signal(signal.SIGHUP)
        seen = _await_line(proc, "reload: trying again")
        assert "reload: trying again" in seen[-1], "".join(seen)
        seen = _await_line(proc, "reload: trying again")  # refused again: tried again
        assert "reload: trying again" in seen[-1], "".join(seen)
        _refuse_writes(client, False)
        wait_until(lambda: client.xlen("pulse:stream:copy") == 20, 30, "the retried reload")
    finally:
        out, err = _stop(proc)
    assert proc.returncode == 0, err
    assert "third 20" in out, err
