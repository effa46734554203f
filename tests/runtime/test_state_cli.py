"""``state`` prints a stateful sink's keys (scanned, streamed); ``status`` counts them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from topology.cli import main
from topology.config import load
from topology.runtime.state import STATE_SCRIPT, KeyState, state_args, state_layout
from topology.streams import StreamKeys

CONFIG = """\
version: 1
name: st
streams:
  orders: {}
  totals: {}
sinks:
  "by*customer":
    streams: [orders]
    key: customer.id
    state: {ttl: 1h}
    handler: handlers:total
    outputs: [totals]
  byXcustomer:
    streams: [orders]
    key: customer.id
    state: {}
    handler: handlers:total
  plain:
    streams: [orders]
    handler: handlers:forward
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "handlers.py").write_text(
        "def total(event, state):\n    pass\n\ndef forward(event):\n    return None\n"
    )
    path = tmp_path / "pipeline.yaml"
    path.write_text(CONFIG)
    return path


def _seed(client: redis.Redis, config: Path, sink: str, states: dict[str, dict]) -> None:
    """Write states the way a commit does (the state section of the script)."""
    topology = load(config)
    layout = state_layout("st", topology.sinks[sink], StreamKeys("pulse").stream)
    rows = [KeyState(layout.name(k), 0, json.dumps(v), changed=True) for k, v in states.items()]
    keys, args = state_args(rows, layout)
    assert client.register_script(STATE_SCRIPT)(keys=keys, args=args) == []


@pytest.fixture
def seeded(config: Path, redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    _seed(client, config, "by*customer", {f"c{i}": {"total": i} for i in range(1200)})
    _seed(client, config, "byXcustomer", {"other": {"total": -1}})
    yield client
    client.close()


def test_state_prints_every_key_of_the_sink_and_no_other(
    config: Path, redis_url: str, seeded: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--redis-url", redis_url]
    assert main(["state", str(config), "by*customer", *url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1200
    assert 'c7 {"total": 7}' in lines
    assert main(["state", str(config), "by*customer", "--format", "json", *url]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {f"c{i}": {"total": i} for i in range(1200)}  # not byXcustomer's "other"


def test_state_of_one_key_and_of_a_key_without_state(
    config: Path, redis_url: str, seeded: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--redis-url", redis_url]
    assert main(["state", str(config), "byXcustomer", "other", *url]) == 0
    assert json.loads(capsys.readouterr().out) == {"total": -1}
    assert main(["state", str(config), "byXcustomer", "other", "--format", "json", *url]) == 0
    assert json.loads(capsys.readouterr().out) == {"other": {"total": -1}}
    assert main(["state", str(config), "byXcustomer", "nobody", *url]) == 0
    assert json.loads(capsys.readouterr().out) == {}
    assert main(["state", str(config), "byXcustomer", "--format", "json", *url]) == 0
    assert json.loads(capsys.readouterr().out) == {"other": {"total": -1}}


def test_state_of_an_empty_sink_is_an_empty_object(
    config: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["state", str(config), "byXcustomer", "--format", "json", "--redis-url", redis_url])
        == 0
    )
    assert json.loads(capsys.readouterr().out) == {}


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ("plain", "sink 'plain' has no state; sinks with state: by*customer, byXcustomer"),
        ("byXcustomr", "unknown sink 'byXcustomr' (did you mean 'byXcustomer'?)"),
    ],
)
def test_state_of_a_sink_without_state_is_a_usage_error(
    config: Path, redis_url: str, sink: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["state", str(config), sink, "--redis-url", redis_url]) == 2
    assert message in capsys.readouterr().err


def test_status_counts_the_keys_of_each_stateful_sink(
    config: Path, redis_url: str, seeded: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", str(config), "--format", "json", "--redis-url", redis_url]) == 0
    sinks = json.loads(capsys.readouterr().out)["sinks"]
    assert sinks["by*customer"]["state_keys"] == 1200
    assert sinks["byXcustomer"]["state_keys"] == 1
    assert "state_keys" not in sinks["plain"]
    assert main(["status", str(config), "--redis-url", redis_url]) == 0
    assert "byXcustomer  pending 0  state keys 1" in capsys.readouterr().out
