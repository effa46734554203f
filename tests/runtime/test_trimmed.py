"""Trimming that overtakes a sink: reported (one WARNING, a metric), never shown as lag."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.helpers import wait_for
from topology.config.model import SinkSpec, StreamRef, StreamSpec, Topology
from topology.runtime import Runtime
from topology.streams import Connection

HANDLERS = "def fwd(e):\n    return None\n"


async def test_entries_trimmed_before_the_sink_read_them_are_reported(
    r: aioredis.Redis, conn: Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "tr_handlers.py").write_text(HANDLERS)
    key = conn.stream_key("capped")
    await r.xgroup_create(key, "s", id="0", mkstream=True)  # the sink was here before
    for i in range(200):  # a burst the cap trims before the sink reads
        await r.xadd(key, {"n": "e", "p": str(i)}, maxlen=50, approximate=False)
    topology = Topology(
        name="tr",
        streams={"capped": StreamSpec("capped", max_len=50)},
        sinks={"s": SinkSpec("s", (StreamRef("capped"),), "tr_handlers:fwd", start="oldest")},
        path=tmp_path / "tr.yaml",
    )
    runtime = Runtime(conn, deployment="tr", worker_id="w", base_dir=tmp_path)
    caplog.set_level(logging.WARNING, "topology")
    await runtime.apply(topology)
    try:
        await wait_for(lambda: runtime.handled().get("s", 0) >= 50, what="the 50 left handled")
        assert await runtime.lag() == {"s": 0}
        lines = [rec.getMessage() for rec in caplog.records if "trimmed away" in rec.getMessage()]
        assert len(lines) == 1, lines
        assert "150 entries of stream capped" in lines[0] and "max_len 50" in lines[0]
        value = runtime.metrics.registry.get_sample_value(
            "ponos_events_trimmed_unread_total", {"sink": "s", "stream": "capped"}
        )
        assert value == 150
    finally:
        await runtime.drain(5)
        await runtime.close()
