"""``status``: pending, lag and dead letters per sink, heartbeats per worker, no secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

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
    client.xadd("pulse:stream:orders-dlq", {"n": "dead", "p": ""})
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
    assert enrich["dead_letter"] == {"stream": "orders-dlq", "length": 1}
    assert data["sinks"]["dlq"]["streams"]["orders-dlq"]["group"] is False
    assert data["sources"]["gen"]["state"] == "running on host-1-abc"
    worker = data["workers"]["host-1-abc"]
    assert worker["generation"] == 4 and worker["live"] is True

    assert main(["status", str(config), "--redis-url", redis_url]) == 0
    text = capsys.readouterr().out
    assert "orders: consumers 1  pending 3  lag 2  length 5" in text
    assert "dead letters 1 (orders-dlq)" in text
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
