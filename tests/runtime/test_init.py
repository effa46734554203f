"""``init``: what it writes validates, runs, and its test file holds against a real server."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from tests.helpers import wait_for
from tests.runtime.test_run_cli import start_run
from topology.cli import main
from topology.config import load
from topology.runtime import Runtime
from topology.streams import Connection


def test_init_writes_a_config_that_validates_strictly_and_runs(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "my-app"
    assert main(["init", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "my_app.yaml",
        "my_app_handlers.py",
        "my_app_test.yaml",
    ]
    capsys.readouterr()
    config = folder / "my_app.yaml"
    assert main(["validate", "--strict", str(config)]) == 0
    assert capsys.readouterr().out.startswith("ok: 3 streams, 2 sinks")
    proc = start_run(config, redis_url, "--stop-when-idle", "0.5")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.startswith("handled: enrich 3, review 0")

    assert main(["init", str(folder)]) == 2  # never overwrites by surprise
    assert "my_app.yaml, my_app_handlers.py, my_app_test.yaml already in" in capsys.readouterr().err
    assert main(["init", str(folder), "--force"]) == 0
    assert main(["init", str(folder), "--name", "9 lives"]) == 2


def _matches(expected: dict[str, Any], got: dict[bytes, bytes]) -> bool:
    """The test format's matching: name exact, payload equal as JSON, payload_contains a subset."""
    payload = json.loads(got[b"p"])
    if "name" in expected and got[b"n"].decode() != expected["name"]:
        return False
    if "payload" in expected and payload != expected["payload"]:
        return False
    contains = expected.get("payload_contains", {})
    return all(payload.get(k) == v for k, v in contains.items())


async def test_the_test_file_init_writes_holds(tmp_path: Path, r: aioredis.Redis) -> None:
    """Each test of the file, run the way the format says: given events, sources off, idle."""
    assert main(["init", str(tmp_path), "--name", "demo"]) == 0
    spec = yaml.safe_load((tmp_path / "demo_test.yaml").read_text())
    topology = load(tmp_path / spec["config"])
    assert spec["tests"]
    for case in spec["tests"]:
        await r.flushdb()
        conn = Connection(r)
        for stream, events in case["given"].items():
            for event in events:
                await conn.stream(stream).add(event["name"], json.dumps(event["payload"]))
        runtime = Runtime(conn, deployment="demo", worker_id="t", base_dir=tmp_path)
        await runtime.apply(replace(topology, sources={}))
        try:
            expected = case["expect"]

            async def settled(rt: Runtime = runtime, want: dict[str, Any] = expected) -> bool:
                """Every expected event there, nothing pending or undelivered: with no
                source running, nothing can be written any more."""
                for stream, events in want.items():
                    if await r.xlen(f"pulse:stream:{stream}") < len(events):
                        return False
                return await rt.pending() == 0 and not any((await rt.lag()).values())

            await wait_for(settled, 20, case["name"])
            for stream, events in expected.items():
                got = [f for _, f in await r.xrange(f"pulse:stream:{stream}")]
                assert len(got) == len(events), (case["name"], stream, got)
                assert all(_matches(e, g) for e, g in zip(events, got, strict=True)), (
                    case["name"],
                    stream,
                    got,
                )
        finally:
            await runtime.drain(5)
            await runtime.close()


@pytest.mark.skipif(
    importlib.util.find_spec("topology.cli.test") is None, reason="`ponos-topology test` not here"
)
def test_ponos_topology_test_passes_the_file_init_writes(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path), "--name", "demo"]) == 0
    assert main(["test", str(tmp_path / "demo_test.yaml")]) == 0
