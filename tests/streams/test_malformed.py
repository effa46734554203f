"""Semantic 8: malformed entries are delivered with what decodes, logged, never fatal."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis

from tests.streams.conftest import read_n
from topology import streams


async def _add_malformed(r: aioredis.Redis, key: str) -> list[bytes]:
    return [
        await r.xadd(key, {"p": b"no name"}),
        await r.xadd(key, {"n": "no-payload"}),
        await r.xadd(key, {"n": b"bad\xffname", "p": b"x"}),
        await r.xadd(key, {"n": "badtopic", "p": b"y", "t": b"\xfe"}),
        await r.xadd(key, {"something": "else"}),
        await r.xadd(key, {"n": "fine", "p": b"ok"}),
    ]


@pytest.mark.parametrize("kind", ["sink", "reader"])
async def test_malformed_entries_are_delivered_and_logged(
    r: aioredis.Redis, conn: streams.Connection, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    stream = conn.stream("mal")
    consumer = (
        await stream.new_sink("s", start="oldest")
        if kind == "sink"
        else await stream.new_reader(start="oldest")
    )
    async with consumer:
        with caplog.at_level(logging.WARNING, logger="topology.streams"):
            ids = await _add_malformed(r, stream.key)
            got = await read_n(consumer, 6)
        assert [e.id.encode() for e in got] == ids
        assert [(e.name, e.payload, e.topic) for e in got] == [
            ("", b"no name", None),
            ("no-payload", b"", None),
            ("bad\ufffdname", b"x", None),
            ("badtopic", b"y", "\ufffd"),
            ("", b"", None),
            ("fine", b"ok", None),
        ]
        assert got[4].fields == {b"something": b"else"}
        warnings = [m for m in caplog.messages if "malformed entry" in m]
        assert len(warnings) == 5
        # The sink is alive: the next event still arrives.
        later = await stream.add("later", b"")
        assert [e.id for e in await read_n(consumer, 1)] == [later]
