"""``graph --live``: the diagram annotated with what Redis says now (real server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from topology.cli import main
from topology.server import ServerProcess

CONFIG = """\
version: 1
name: live
streams:
  orders: {}
  extra: {}
  out: {}
sinks:
  copy:
    streams: [orders, extra]
    handler: live_handlers:copy
    outputs: [out]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "live_handlers.py").write_text("def copy(event):\n    return None\n")
    path = tmp_path / "live.yaml"
    path.write_text(CONFIG)
    return path


def load_pending(client: redis.Redis) -> None:
    """``orders``: 5 entries, 3 delivered to ``copy`` and not acked, 2 not delivered."""
    for i in range(5):
        client.xadd("pulse:stream:orders", {"n": "e", "p": str(i)})
    client.xgroup_create("pulse:stream:orders", "copy", id="0")
    client.xreadgroup("copy", "c1", {"pulse:stream:orders": ">"}, count=3)


def test_live_json_pending_and_lag_match_xpending(
    config: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        load_pending(client)
        xpending = client.xpending("pulse:stream:orders", "copy")["pending"]
    finally:
        client.close()
    assert main(["graph", str(config), "--live", "-f", "json", "--redis-url", redis_url]) == 0
    data = json.loads(capsys.readouterr().out)
    nodes = {n["id"]: n for n in data["nodes"]}
    assert nodes["stream:orders"]["live"] == {"length": 5}
    assert nodes["stream:extra"]["live"] == {"length": 0}
    assert nodes["sink:copy"]["live"] == {"pending": xpending, "lag": None}  # extra: no group
    edges = {(e["source"], e["target"]): e for e in data["edges"]}
    assert edges["stream:orders", "sink:copy"]["live"] == {"pending": 3, "lag": 2, "group": True}
    assert edges["stream:extra", "sink:copy"]["live"]["group"] is False
    assert xpending == 3


def test_live_mermaid_and_dot_show_the_numbers(
    config: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        load_pending(client)
        client.xgroup_create("pulse:stream:extra", "copy", id="0", mkstream=True)
    finally:
        client.close()
    assert main(["graph", str(config), "--live", "--redis-url", redis_url]) == 0
    mermaid = capsys.readouterr().out
    assert "pending 3, lag 2" in mermaid  # the orders read edge
    assert "live_handlers#58;copy, pending 3, lag 2" in mermaid  # the sink's title (sum)
    assert "length 5" in mermaid
    assert main(["graph", str(config), "--live", "-f", "dot", "--redis-url", redis_url]) == 0
    dot = capsys.readouterr().out
    assert "pending 3, lag 2" in dot and "length 5" in dot


def test_graph_without_live_needs_no_redis(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["graph", str(config), "-f", "json", "--redis-url", "redis://127.0.0.1:1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert all("live" not in n for n in data["nodes"])


def test_live_unreachable_redis_exits_1_without_password(
    config: Path, server_binary: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ServerProcess(tmp_path / "srv", binary=server_binary, password="live-pw-9")
    server.start()
    try:
        wrong = f"redis://:not-the-pw-7@127.0.0.1:{server.port}/0"
        assert main(["graph", str(config), "--live", "--redis-url", wrong]) == 1
        right = f"redis://:live-pw-9@127.0.0.1:{server.port}/0"
        assert main(["graph", str(config), "--live", "-f", "json", "--redis-url", right]) == 0
    finally:
        server.stop()
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "not-the-pw-7" not in text and "live-pw-9" not in text
    assert "***" in captured.err
