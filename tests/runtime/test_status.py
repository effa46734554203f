"""``status``: pending, lag and dead letters per sink, heartbeats per worker, no secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import wait_until
from tests.runtime.test_run_cli import start_run
from topology import observe
from topology.cli import main

CONFIG = """\
version: 1
name: st
streams:
  orders: {}
  orders-dlq: {}
sources:
  gen:
    handler: handlers:gen
    stream: orders
sinks:
  enrich:
    streams: [orders]
    handler: handlers:enrich
    dead_letter: orders-dlq
  dlq:
    streams: [orders-dlq]
    handler: handlers:enrich
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "handlers.py").write_text(
        "def enrich(event):\n    return None\n\ndef gen():\n    yield from ()\n"
    )
    path = tmp_path / "pipeline.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def busy(redis_url: str) -> Iterator[redis.Redis]:
    """5 events on ``orders``, 3 delivered to sink ``enrich`` and not acked, 1 dead letter,
    a worker heartbeat and a source lease."""
    client = redis.Redis.from_url(redis_url)
    for i in range(5):
        client.xadd("pulse:stream:orders", {"n": "e", "p": str(i)})
    client.xgroup_create("pulse:stream:orders", "enrich", id="0")
    client.xreadgroup("enrich", "host-1-abc", {"pulse:stream:orders": ">"}, count=3)
    client.xadd("pulse:stream:orders-dlq", {"n": "dead", "p": "", "sink": "enrich"})
    client.xadd("pulse:stream:orders-dlq", {"n": "dead", "p": "", "sink": "other"})
    now = client.time()[0]
    beat = {
        "version": "0.1.0",
        "generation": 4,
        "deployment_version": 7,
        "host": "elsewhere",
        "pid": 1,
        "interval": 2.0,
        "beat": now,
        "note": "redis://app:leaked@db:6379",
    }
    client.hset("ponos:{st}:workers", "host-1-abc", json.dumps(beat))
    client.set("ponos:{st}:lease:source:gen", "host-1-abc")
    yield client
    client.close()


def test_status_shows_pending_lag_dead_letters_and_workers(
    config: Path, redis_url: str, busy: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", str(config), "--format", "json", "--redis-url", redis_url]) == 0
    data = json.loads(capsys.readouterr().out)
    enrich = data["sinks"]["enrich"]
    orders = enrich["streams"]["orders"]
    assert orders["pending"] == 3 and orders["lag"] == 2 and orders["length"] == 5
    assert [c["name"] for c in orders["consumers"]] == ["host-1-abc"]
    assert orders["consumers"][0]["live"] is True  # it just read
    assert enrich["dead_letter"] == {
        "stream": "orders-dlq",
        "count": 1,
        "length": 2,
        "counted": 2,
    }
    assert data["sinks"]["dlq"]["streams"]["orders-dlq"]["group"] is False
    assert data["sources"]["gen"]["state"] == "running on host-1-abc"
    worker = data["workers"]["host-1-abc"]
    assert worker["generation"] == 4 and worker["live"] is True

    assert main(["status", str(config), "--redis-url", redis_url]) == 0
    text = capsys.readouterr().out
    assert "orders: consumers 1 live, 0 dead  pending 3  lag 2  length 5" in text
    assert "dead letters 1 (of 2 in orders-dlq)" in text
    assert "host-1-abc  version 0.1.0  generation 4  config v7" in text and "live" in text


def test_status_never_prints_a_password(
    config: Path, redis_url: str, busy: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    busy.execute_command("ACL", "SETUSER", "ops", "on", ">s3cr3t-pw", "~*", "&*", "+@all")
    try:
        url = redis_url.replace("redis://", "redis://ops:s3cr3t-pw@")
        for fmt in ("text", "json"):
            assert main(["status", str(config), "--format", fmt, "--redis-url", url]) == 0
            out, err = capsys.readouterr()
            assert "s3cr3t-pw" not in out + err and "leaked" not in out + err
            assert "ops:***@" in out
    finally:
        busy.execute_command("ACL", "DELUSER", "ops")


def test_status_of_an_untouched_deployment(
    config: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", str(config), "--redis-url", redis_url]) == 0
    text = capsys.readouterr().out
    assert "orders: no such stream yet" in text
    assert "gen  not running" in text and "workers:\n  (none)" in text


def test_status_shows_trimmed_unread_entries_instead_of_lag(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A burst trimmed by ``max_len`` before the sink read it: 5 wait, 15 are lost to it."""
    (tmp_path / "handlers.py").write_text("def enrich(event):\n    return None\n")
    path = tmp_path / "capped.yaml"
    path.write_text(
        "version: 1\nname: cap\nstreams:\n  capped: {max_len: 5}\n"
        "sinks:\n  s:\n    streams: [capped]\n    handler: handlers:enrich\n"
    )
    client = redis.Redis.from_url(redis_url)
    try:
        client.xgroup_create("pulse:stream:capped", "s", id="0", mkstream=True)
        for i in range(20):
            client.xadd("pulse:stream:capped", {"n": "e", "p": str(i)}, maxlen=5, approximate=False)
    finally:
        client.close()
    assert main(["status", str(path), "--format", "json", "--redis-url", redis_url]) == 0
    info = json.loads(capsys.readouterr().out)["sinks"]["s"]["streams"]["capped"]
    assert info["lag"] == 5 and info["trimmed_unread"] == 15
    assert info["trimmed_by"] == "max_len 5"
    assert main(["status", str(path), "--redis-url", redis_url]) == 0
    assert "lag 5 " in (out := capsys.readouterr().out) and "trimmed unread 15 (max_len 5)" in out


SHARED_DLQ = """\
version: 1
name: sh
defaults:
  start: oldest
  retry: {max_attempts: 1}
streams:
  a: {}
  b: {}
  dlq: {}
sinks:
  sa:
    streams: [a]
    handler: handlers:fail_odd
    dead_letter: dlq
  sb:
    streams: [b]
    handler: handlers:fail_odd
    dead_letter: dlq
"""


def test_status_counts_dead_letters_per_sink_and_parts_live_from_dead_consumers(
    tmp_path: Path,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "handlers.py").write_text(
        "def fail_odd(event):\n    if int(event.payload) % 2:\n        raise ValueError('odd')\n"
    )
    config = tmp_path / "shared.yaml"
    config.write_text(SHARED_DLQ)
    client = redis.Redis.from_url(redis_url)
    try:
        for i in range(6):  # sa: 3 odd events dead-lettered
            client.xadd("pulse:stream:a", {"n": "e", "p": str(i)})
        client.xadd("pulse:stream:b", {"n": "e", "p": "1"})  # sb: 1
        proc = start_run(config, redis_url, "--stop-when-idle", "0.5")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        # A crashed worker's consumer: events delivered to it, then silence.
        client.xadd("pulse:stream:a", {"n": "e", "p": "10"})
        client.xreadgroup("sa", "gone-1-dead", {"pulse:stream:a": ">"}, count=1)
        assert main(["status", str(config), "--format", "json", "--redis-url", redis_url]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["sinks"]["sa"]["dead_letter"]["count"] == 3
        assert data["sinks"]["sb"]["dead_letter"]["count"] == 1
        assert data["sinks"]["sb"]["dead_letter"]["length"] == 4
        consumers = data["sinks"]["sa"]["streams"]["a"]["consumers"]
        assert any(c["name"] == "gone-1-dead" and c["live"] for c in consumers)
        # Past the live window (the sink's ack grace, at least two blocking reads;
        # shortened here so the test need not sit idle that long): dead.
        monkeypatch.setattr(observe, "_live_after_ms", lambda ack_grace: 300)

        def idle_ms() -> int:
            rows = client.xinfo_consumers("pulse:stream:a", "sa")
            return next(int(c["idle"]) for c in rows if c["name"] == b"gone-1-dead")

        wait_until(lambda: idle_ms() > 400, 10, "the consumer to idle")
        assert main(["status", str(config), "--redis-url", redis_url]) == 0
        text = capsys.readouterr().out
        assert "sa  pending 1  dead letters 3 (of 4 in dlq)" in text
        assert "dead consumer gone-1-dead: pending 1" in text
    finally:
        client.close()


def test_status_counts_dead_letters_of_a_long_stream_from_its_newest_entries(
    config: Path,
    redis_url: str,
    busy: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(observe, "DEAD_SCAN_LIMIT", 3)
    for _ in range(3):  # newer than the fixture's two
        busy.xadd("pulse:stream:orders-dlq", {"n": "dead", "p": "", "sink": "enrich"})
    assert main(["status", str(config), "--format", "json", "--redis-url", redis_url]) == 0
    dead = json.loads(capsys.readouterr().out)["sinks"]["enrich"]["dead_letter"]
    assert dead == {"stream": "orders-dlq", "count": 3, "length": 5, "counted": 3}
    assert main(["status", str(config), "--redis-url", redis_url]) == 0
    assert "dead letters 3+ (of 5 in orders-dlq)" in capsys.readouterr().out
