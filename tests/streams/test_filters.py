"""Semantic 4: events a sink does not match are acked at once (XPENDING stays 0)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.streams.conftest import read_n
from topology import streams


async def _pending(r: aioredis.Redis, key: str, group: str) -> int:
    return int((await r.xpending(key, group))["pending"])


@pytest.mark.parametrize(
    "options",
    [
        {"topic": "eu"},
        {"topic_pattern": r"e[u]"},
        {"matcher": lambda event: event.topic == "eu"},
    ],
    ids=["topic", "topic_pattern", "matcher"],
)
async def test_unmatched_events_are_acked(
    r: aioredis.Redis, conn: streams.Connection, options: dict[str, Any]
) -> None:
    stream = conn.stream("filtered")
    async with await stream.new_sink("s", **options) as sink:
        await stream.add_many(
            [("a", b"1", "us"), ("b", b"2", None), ("c", b"3", "eu"), ("d", b"4", "eu.fr")]
        )
        wanted = await stream.topic("eu").add("e", b"5")
        got = await read_n(sink, 2)
        assert [(e.name, e.topic) for e in got] == [("c", "eu"), ("e", "eu")]
        assert got[1].id == wanted
        # Only the two delivered (not yet acked) events are pending.
        assert await _pending(r, stream.key, "s") == 2
        await sink.ack_many(got)
        assert await _pending(r, stream.key, "s") == 0


async def test_topic_pattern_is_a_full_match(conn: streams.Connection) -> None:
    stream = conn.stream("pattern")
    async with await stream.new_sink("s", topic_pattern=r"eu\..*") as sink:
        await stream.add_many([("no", b"", "eu"), ("no2", b"", "xeu.fr"), ("yes", b"", "eu.fr")])
        assert [e.name for e in await read_n(sink, 1)] == ["yes"]


async def test_reader_skips_unmatched_events(conn: streams.Connection) -> None:
    stream = conn.stream("rfilter")
    async with await stream.new_reader(topic="b") as reader:
        await stream.add_many([("x", b"", "a"), ("y", b"", "b"), ("z", b"", None)])
        assert [e.name for e in await read_n(reader, 1)] == ["y"]


async def test_matcher_that_raises_delivers_the_event_and_logs(
    r: aioredis.Redis, conn: streams.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    def matcher(event: streams.Event) -> bool:
        if event.name == "boom":
            raise RuntimeError("bad matcher")
        return False

    stream = conn.stream("raising")
    async with await stream.new_sink("s", matcher=matcher) as sink:
        with caplog.at_level(logging.ERROR, logger="topology.streams"):
            await stream.add_many([("skip", b"", None), ("boom", b"", None)])
            assert [e.name for e in await read_n(sink, 1)] == ["boom"]
        assert "bad matcher" in caplog.text
        assert await _pending(r, stream.key, "s") == 1


async def test_invalid_filters_fail_at_creation(conn: streams.Connection) -> None:
    stream = conn.stream("bad")
    with pytest.raises(ValueError, match="invalid topic_pattern"):
        await stream.new_sink("s", topic_pattern="(unclosed")
    with pytest.raises(ValueError, match="at most one"):
        await stream.new_sink("s", topic="a", topic_pattern="a")
    with pytest.raises(ValueError, match="invalid topic_pattern"):
        await stream.new_reader(topic_pattern="[")
