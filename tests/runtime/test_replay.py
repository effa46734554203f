"""``replay``: dead letters back to their origin stream, each exactly once, against real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import wait_until
from topology.cli import main
from topology.server import ServerCluster

CONFIG = """\
version: 1
name: rp
redis: {{prefix: "{prefix}"}}
streams:
  orders: {{}}
  payments: {{}}
  retry: {{}}
  orders-dlq: {{}}
sinks:
  enrich:
    streams: [orders, payments]
    handler: handlers:enrich
    dead_letter: orders-dlq
"""


def write_config(folder: Path, prefix: str = "pulse") -> Path:
    (folder / "handlers.py").write_text("def enrich(event):\n    return None\n")
    path = folder / "rp.yaml"
    path.write_text(CONFIG.format(prefix=prefix))
    return path


def dead_letter(
    client: redis.Redis,
    i: int,
    origin: str = "orders",
    error: str = "ValueError",
    prefix: str = "pulse",
) -> None:
    """A dead letter with the fields the actor writes."""
    client.xadd(
        f"{prefix}:stream:orders-dlq",
        {
            "n": "created",
            "p": json.dumps({"i": i}),
            "t": "eu",
            "origin_stream": origin,
            "origin_id": f"{i + 1}-0",
            "sink": "enrich",
            "attempts": 3,
            "error_type": error,
            "error": "boom",
        },
    )


def payloads(client: redis.Redis, stream: str, prefix: str = "pulse") -> list[int]:
    return [json.loads(f[b"p"])["i"] for _, f in client.xrange(f"{prefix}:stream:{stream}")]


@pytest.fixture
def sync_r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_replay_moves_dead_letters_to_their_origin_with_a_count(
    tmp_path: Path, redis_url: str, sync_r: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(write_config(tmp_path))
    url = ("--redis-url", redis_url)
    for i in range(4):
        dead_letter(
            sync_r,
            i,
            origin="orders" if i < 3 else "payments",
            error="KeyError" if i == 1 else "ValueError",
        )
    dead_letter(sync_r, 9, origin="gone")  # its stream left the config: stays
    sync_r.xadd("pulse:stream:orders-dlq", {"n": "by-hand", "p": '{"i": 8}'})  # no origin

    code, out, _ = cli(capsys, "replay", config, "orders-dlq", "--dry-run", *url)
    assert code == 0
    assert (
        out.splitlines()[0] == "would replay 4 dead letters from orders-dlq: orders 3, payments 1"
    )
    assert sync_r.xlen("pulse:stream:orders-dlq") == 6 and sync_r.xlen("pulse:stream:orders") == 0

    code, out, _ = cli(capsys, "replay", config, "orders-dlq", "--filter-error", "KeyError", *url)
    assert code == 0 and out.splitlines()[:2] == [
        "replayed 1 dead letter from orders-dlq: orders 1",
        "left 5: error_type is not KeyError",
    ]
    assert payloads(sync_r, "orders") == [1]

    code, out, _ = cli(capsys, "replay", config, "orders-dlq", *url)
    assert code == 0
    assert out.splitlines() == [
        "replayed 3 dead letters from orders-dlq: orders 2, payments 1",
        "left 1: no origin_stream (give --to)",
        "left 1: origin stream 'gone' is not in the config",
    ]
    assert payloads(sync_r, "orders") == [1, 0, 2] and payloads(sync_r, "payments") == [3]
    # The event's own fields only: no dead-letter fields ride along.
    assert sync_r.xrange("pulse:stream:orders")[0][1] == {
        b"n": b"created",
        b"p": b'{"i": 1}',
        b"t": b"eu",
    }
    assert sync_r.xlen("pulse:stream:orders-dlq") == 2

    code, out, _ = cli(capsys, "replay", config, "orders-dlq", "--to", "retry", *url)
    assert code == 0 and out.splitlines()[0] == "replayed 2 dead letters from orders-dlq: retry 2"
    assert payloads(sync_r, "retry") == [9, 8] and sync_r.xlen("pulse:stream:orders-dlq") == 0

    code, _, err = cli(capsys, "replay", config, "orders-dlq", "--to", "orders-dlq", *url)
    assert code == 2 and "another stream" in err
    code, _, err = cli(capsys, "replay", config, "ordrs-dlq", *url)
    assert code == 2 and "did you mean 'orders-dlq'?" in err


def _replay_process(config: str, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "topology.cli", "replay", config, "orders-dlq", "--redis-url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_replay_run_again_and_concurrent_replays_never_duplicate(
    tmp_path: Path, redis_url: str, sync_r: redis.Redis
) -> None:
    config = str(write_config(tmp_path))
    total = 30_000
    pipe = sync_r.pipeline(transaction=False)
    for i in range(total):
        pipe.xadd(
            "pulse:stream:orders-dlq",
            {"n": "e", "p": json.dumps({"i": i}), "origin_stream": "orders", "error_type": "E"},
        )
    pipe.execute()
    first = _replay_process(config, redis_url)
    wait_until(lambda: sync_r.xlen("pulse:stream:orders-dlq") < total, 30, "the replay to start")
    os.kill(first.pid, signal.SIGKILL)  # mid-way, most likely: whatever it did is whole
    first.communicate()
    moved = sync_r.xlen("pulse:stream:orders")
    assert moved + sync_r.xlen("pulse:stream:orders-dlq") == total  # nothing half-moved
    # Two replays at once finish the job; each dead letter lands once.
    rest = [_replay_process(config, redis_url) for _ in range(2)]
    for proc in rest:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    got = payloads(sync_r, "orders")
    assert sorted(got) == list(range(total))  # each exactly once
    assert sync_r.xlen("pulse:stream:orders-dlq") == 0


@pytest.fixture
def cluster_url(redis_cluster: ServerCluster) -> str:
    for node in redis_cluster.nodes:
        client = redis.Redis.from_url(node.url)
        try:
            client.flushall()
        finally:
            client.close()
    return redis_cluster.nodes[0].url


def test_on_a_cluster_a_target_in_another_slot_is_refused_and_a_shared_tag_replays(
    tmp_path: Path, cluster_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.RedisCluster.from_url(cluster_url)
    try:
        plain = write_config(tmp_path)
        assert client.keyslot("pulse:stream:orders") != client.keyslot("pulse:stream:orders-dlq")
        dead_letter(client, 1)
        code, out, _ = cli(capsys, "replay", str(plain), "orders-dlq", "--redis-url", cluster_url)
        assert code == 1
        assert "refused orders: orders-dlq and orders are in different cluster hash slots" in out
        assert client.xlen("pulse:stream:orders-dlq") == 1 and not client.exists(
            "pulse:stream:orders"
        )

        tagged = tmp_path / "tagged"
        tagged.mkdir()
        config = write_config(tagged, prefix="{rp}")
        dead_letter(client, 2, prefix="{rp}")
        code, out, _ = cli(capsys, "replay", str(config), "orders-dlq", "--redis-url", cluster_url)
        assert code == 0 and out.startswith("replayed 1 dead letter from orders-dlq: orders 1")
        assert payloads(client, "orders", prefix="{rp}") == [2]
    finally:
        client.close()
