"""``group_lag``: "caught up" from ids when Redis's lag cannot be trusted, and entries
trimmed away before a group read them told apart from entries still waiting."""

from __future__ import annotations

import redis.asyncio as aioredis

from topology import streams
from topology.streams import group_lag, read_group_lag


def test_reported_lag_of_a_group_at_the_last_entry_is_not_believed() -> None:
    """Redis 7.0 after a restart: ``lag`` 35316 for a group whose last-delivered id is
    the stream's last entry. It is caught up."""
    stream = {
        "length": 10,
        "last-generated-id": b"1700000000010-0",
        "first-entry": [b"1700000000001-0", [b"n", b"e"]],
        "entries-added": 10,
    }
    group = {"name": b"g", "last-delivered-id": b"1700000000010-0", "lag": 35316}
    state = group_lag(stream, group)
    assert state.caught_up and state.lag == 0


def test_a_group_behind_the_first_entry_waits_for_the_whole_stream() -> None:
    stream = {
        "length": 5,
        "last-generated-id": "20-0",
        "first-entry": ["16-0", []],
        "entries-added": 20,
    }
    state = group_lag(stream, {"last-delivered-id": "0-0", "lag": 20, "entries-read": None})
    assert not state.caught_up and state.lag == 5
    assert state.trimmed_unread == 15
    behind = group_lag(stream, {"last-delivered-id": "3-0", "lag": 20, "entries-read": 3})
    assert behind.lag == 5 and behind.trimmed_unread == 12


async def test_trimmed_unread_entries_are_told_apart_from_lag(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    """20 events into a stream capped at 5 before the group reads: 5 wait, 15 were
    trimmed unread; once read, the group is caught up."""
    key = conn.stream_key("capped")
    await r.xgroup_create(key, "g", id="0", mkstream=True)
    for i in range(20):
        await r.xadd(key, {"n": "e", "p": str(i)}, maxlen=5, approximate=False)
    before = await read_group_lag(conn, key, "g")
    assert before is not None and before.lag == 5 and before.trimmed_unread == 15
    await r.xreadgroup("g", "c", {key: ">"}, count=100)
    after = await read_group_lag(conn, key, "g")
    assert after is not None and after.caught_up and after.lag == 0
    assert await read_group_lag(conn, key, "nobody") is None
    assert await read_group_lag(conn, conn.stream_key("none"), "g") is None


def test_a_gap_of_unknown_size_is_reported_with_its_bound() -> None:
    """A group created at an explicit id has no read count. An entry past its position
    deleted (``max-deleted-entry-id``): at least one lost; only trimming: up to what
    the stream lost, none of it counted as certain."""
    stream = {
        "length": 5,
        "last-generated-id": "20-0",
        "first-entry": ["16-0", []],
        "entries-added": 20,
        "max-deleted-entry-id": "15-0",
    }
    state = group_lag(stream, {"last-delivered-id": "3-0", "lag": None, "entries-read": None})
    assert state.trimmed_text == "at least 1" and state.trimmed_surely == 1
    only_trimmed = group_lag(
        {**stream, "max-deleted-entry-id": "2-0"},
        {"last-delivered-id": "3-0", "lag": None, "entries-read": None},
    )
    assert only_trimmed.trimmed_text == "up to 15" and only_trimmed.trimmed_surely == 0


async def test_a_group_without_a_read_count_reports_what_may_be_trimmed(
    r: aioredis.Redis, conn: streams.Connection
) -> None:
    """Against the server: a group created at an entry's id, then the stream trimmed
    past it before the group read anything; then an entry past it deleted."""
    key = conn.stream_key("capped_at_id")
    first = await r.xadd(key, {"n": "e", "p": "0"})
    await r.xgroup_create(key, "g", id=first)
    for i in range(20):
        await r.xadd(key, {"n": "e", "p": str(i)}, maxlen=5, approximate=False)
    state = await read_group_lag(conn, key, "g")
    assert state is not None and state.lag == 5
    assert state.trimmed_text == "up to 16" and state.trimmed_surely == 0
    entries = await r.xrange(key)
    await r.xdel(key, entries[0][0])
    deleted = await read_group_lag(conn, key, "g")
    assert deleted is not None and deleted.trimmed_text == "at least 1"
