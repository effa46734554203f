"""Keyed state is exactly-once across ``kill -9``: two ``run`` processes share a stateful
sink, both are killed at arbitrary points several times, and in the end every key's
count equals its events and its outputs are exactly 1..n."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
import redis

from tests.helpers import wait_until
from tests.runtime.test_run_cli import pending, start_run
from topology.runtime.keys import EngineKeys

CONFIG = """
version: 1
name: kst
defaults:
  batch: 32
  start: oldest
  ack_grace: 1s
streams:
  in: {}
  out: {}
sinks:
  counter:
    streams: [in]
    key: k
    state: {}
    handler: kst_handlers:count
    outputs: [out]
    consumers: 2
"""

HANDLERS = """
import time
from topology import Emit

def count(event, state):
    time.sleep(0.0002)
    state["n"] = state.get("n", 0) + 1
    return Emit("count", {"k": event.json()["k"], "n": state["n"]})
"""

KEYS = 10


def fill(client: redis.Redis, n: int) -> dict[str, int]:
    expected: dict[str, int] = {}
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        k = f"k{i % KEYS}"
        expected[k] = expected.get(k, 0) + 1
        pipe.xadd("pulse:stream:in", {"n": "e", "p": json.dumps({"k": k, "i": i})})
    pipe.execute()
    return expected


def kill(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
    for proc in procs:
        proc.wait(10)


@pytest.mark.parametrize("seed", [1])
def test_state_exactly_once_across_kill_9(
    tmp_path: Path,
    redis_url: str,
    seed: int,
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        run_rounds(tmp_path, redis_url, client, random.Random(seed))
    finally:
        client.close()


def run_rounds(tmp_path: Path, redis_url: str, client: redis.Redis, rng: random.Random) -> None:
    (tmp_path / "kst_handlers.py").write_text(textwrap.dedent(HANDLERS))
    config = tmp_path / "kst.yaml"
    config.write_text(CONFIG)
    n = 5000
    expected = fill(client, n)
    rounds = 4
    for k in range(rounds):
        procs = [start_run(config, redis_url) for _ in range(2)]
        target = min(n - 1, client.xlen("pulse:stream:out") + rng.randint(n // 12, n // 6))
        try:
            wait_until(
                lambda t=target, ps=procs: (
                    client.xlen("pulse:stream:out") >= t or any(p.poll() is not None for p in ps)
                ),
                90,
                f"progress in round {k}",
            )
            assert all(p.poll() is None for p in procs), [
                p.stderr.read() if p.stderr else "" for p in procs if p.poll() is not None
            ]
        finally:
            kill(procs)
    finals = [start_run(config, redis_url, "--stop-when-idle", "1") for _ in range(2)]
    for final in finals:
        _, err = final.communicate(timeout=180)
        assert final.returncode == 0, err
    prefix = EngineKeys("kst").state_prefix("counter", None)
    counts = {k: json.loads(client.hget(prefix + k, "s"))["n"] for k in expected}
    assert counts == expected
    seen: dict[str, list[int]] = {}
    for _, fields in client.xrange("pulse:stream:out"):
        out = json.loads(fields[b"p"])
        seen.setdefault(out["k"], []).append(out["n"])
    for key, count in expected.items():
        assert sorted(seen[key]) == list(range(1, count + 1)), key  # no gap, no repeat
    assert pending(client, "in", "counter") == 0
