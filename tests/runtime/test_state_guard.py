"""Until the commit carries keyed state, a stateful sink is refused, never run stateless
(its handler(event, state) would fail on every event and dead-letter it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.runtime.test_supervisor import HANDLERS, sink, topo
from topology.config.model import StateSpec
from topology.runtime import ApplyError, Runtime
from topology.streams import Connection


@pytest.fixture
async def runtime(r: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Runtime]:
    (tmp_path / "sup_handlers.py").write_text(HANDLERS)
    rt = Runtime(Connection(r), deployment="sup", worker_id="w1", base_dir=tmp_path)
    yield rt
    await rt.close()


async def test_a_stateful_sink_is_refused_and_nothing_changes(
    runtime: Runtime, tmp_path: Path
) -> None:
    await runtime.apply(topo(tmp_path, sink()))
    stateful = sink("totals", key="user", state=StateSpec())
    with pytest.raises(ApplyError, match=r"sink 'totals' has keyed state .* cannot run yet"):
        await runtime.apply(topo(tmp_path, sink(), stateful))
    assert runtime.generation == 1 and runtime.actors("totals") == []
    assert [a.running for a in runtime.actors("fwd")] == [True]
