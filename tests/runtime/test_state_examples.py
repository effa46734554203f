"""The keyed-state examples run: configs/aggregator.yaml with two consumers (also across
``kill -9`` of two worker processes, totals exact), configs/totals.yaml (duplicates dropped,
totals per customer exact)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from tests.helpers import wait_until
from tests.runtime.test_run_cli import start_run
from topology.runtime.keys import EngineKeys

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def start(config: Path, url: str, log: Path, *extra: str) -> subprocess.Popen[str]:
    with log.open("ab") as err:
        return start_run(config, url, *extra, stderr=err)


def finish(config: Path, url: str, log: Path, workers: int = 1) -> None:
    procs = [start(config, url, log, "--stop-when-idle", "1") for _ in range(workers)]
    for proc in procs:
        assert proc.wait(180) == 0, log.read_text()[-3000:]


def payloads(client: redis.Redis, stream: str) -> list[dict[str, Any]]:
    return [json.loads(f[b"p"]) for _, f in client.xrange(f"pulse:stream:{stream}")]


def check_aggregator(client: redis.Redis) -> int:
    """Per user: the clicks its summaries counted plus its open session's clicks are
    exactly its clicks in the stream; one summary per purchase. Returns the clicks."""
    clicks = Counter(p["user"] for p in payloads(client, "clicks"))
    purchases = Counter(p["user"] for p in payloads(client, "purchases"))
    summaries = payloads(client, "summaries")
    counted: Counter[str] = Counter()
    for s in summaries:
        counted[s["user"]] += s["clicks"]
    prefix = EngineKeys("aggregator").state_prefix("sessions", None)
    for user in clicks:
        text = client.hget(prefix + user, "s")
        if text is not None:
            counted[user] += json.loads(text)["clicks"]
    assert counted == clicks
    assert Counter(s["user"] for s in summaries) == purchases
    for group, stream in (("sessions", "clicks"), ("sessions", "purchases")):
        assert client.xpending(f"pulse:stream:{stream}", group)["pending"] == 0
    return sum(clicks.values())


def test_the_aggregator_example_runs_with_two_consumers(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        finish(CONFIGS / "aggregator.yaml", redis_url, tmp_path / "run.log")
        assert check_aggregator(client) == 200
    finally:
        client.close()


def test_the_aggregator_example_survives_kill_9_with_exact_totals(
    redis_url: str, tmp_path: Path
) -> None:
    for name in ("aggregator.yaml", "aggregator.py"):
        shutil.copy(CONFIGS / name, tmp_path / name)
    config = tmp_path / "aggregator.yaml"
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)  # a backlog beside what the sources add
        for i in range(6000):
            pipe.xadd("pulse:stream:clicks", {"n": "c", "p": json.dumps({"user": f"u{i % 20}"})})
            if i % 25 == 0:
                user = f"u{(i // 25) % 20}"
                payload = json.dumps({"user": user, "amount": i})
                pipe.xadd("pulse:stream:purchases", {"n": "o", "p": payload})
        pipe.execute()
        log = tmp_path / "run.log"
        for round_ in range(3):
            procs = [start(config, redis_url, log) for _ in range(2)]
            start_len = client.xlen("pulse:stream:summaries")
            try:
                wait_until(
                    lambda s=start_len, ps=procs: (
                        client.xlen("pulse:stream:summaries") >= min(s + 40, 240)
                        or any(p.poll() is not None for p in ps)
                    ),
                    90,
                    f"progress in round {round_}",
                )
                assert all(p.poll() is None for p in procs), log.read_text()[-3000:]
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGKILL)
                for proc in procs:
                    proc.wait(10)
        finish(config, redis_url, log, workers=2)
        assert check_aggregator(client) >= 6200  # a source killed before it ended runs again
    finally:
        client.close()


def test_the_totals_example_drops_duplicates_and_totals_exactly(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        finish(CONFIGS / "totals.yaml", redis_url, tmp_path / "run.log")
        unique = payloads(client, "unique")
        assert sorted(p["id"] for p in unique) == sorted(f"pay-{i}" for i in range(50))
        prefix = EngineKeys("totals").state_prefix("totals", None)
        for c in range(5):
            total = json.loads(client.hget(prefix + f"c{c}", "s"))
            assert total == {"total": sum(range(c, 50, 5)), "count": 10}
        last = {p["customer"]: p for p in payloads(client, "customer_totals")}
        assert {k: v["count"] for k, v in last.items()} == {f"c{c}": 10 for c in range(5)}
    finally:
        client.close()
