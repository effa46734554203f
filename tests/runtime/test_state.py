"""Keyed state: keys, layout, applying a handler in stream order, and the commit's state
section run on its own against a real server (versions, conflicts, ttl, deletes)."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.helpers import wait_for
from topology import Emit
from topology.config.model import SinkSpec, StateSpec, StreamRef
from topology.runtime.commit import Entry
from topology.runtime.handlers import Failure
from topology.runtime.keys import EngineKeys, hash_tag, shared_hash_tag
from topology.runtime.state import (
    AheadStates,
    KeyState,
    KnownStates,
    StateContractError,
    StateLayout,
    apply_batch,
    apply_batch_async,
    commit_states,
    drop_keys,
    event_keys,
    key_function,
    keyed_batch,
    read_states,
    state_args,
    state_layout,
)
from topology.streams import Event

LAYOUT = StateLayout("ponos:{t}:state:t:s:", "ponos:{t}:state-versions:t:s", None)


def ev(payload: Any, i: int = 1) -> Event:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Event(f"{i}-0", "e", raw, stream_name="clicks")


def count(event: Event, state: dict[str, Any]) -> Emit:
    state["n"] = state.get("n", 0) + 1
    state.setdefault("seen", []).append(event.json()["i"])
    return Emit("count", {"user": event.json()["user"], "n": state["n"]})


# -- keys ------------------------------------------------------------------------------


def test_a_key_is_a_field_or_a_dotted_path_of_the_payload() -> None:
    assert key_function("user", None)(ev({"user": "ann"})) == "ann"
    assert key_function("customer.id", None)(ev({"customer": {"id": 42}})) == "42"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"customer": {}}, "has no field 'customer.id'"),
        ({"customer": 3}, "has no field 'customer.id'"),
        ({"customer": {"id": None}}, "is None"),
        ({"customer": {"id": True}}, "is True"),
        ({"customer": {"id": ""}}, "is ''"),
        (b"not json", "the payload is not JSON"),
    ],
)
def test_a_key_that_cannot_be_computed_is_a_contract_error(payload: Any, reason: str) -> None:
    with pytest.raises(StateContractError, match=reason):
        key_function("customer.id", None)(ev(payload))


def test_a_key_function_is_imported_and_its_failures_are_contract_errors(tmp_path: Path) -> None:
    (tmp_path / "st_keys.py").write_text(
        "def user(e):\n    return e.json()['user']\ndef nothing(e):\n    return None\n"
    )
    assert key_function("st_keys:user", tmp_path)(ev({"user": "bo"})) == "bo"
    with pytest.raises(StateContractError, match="st_keys:user raised KeyError"):
        key_function("st_keys:user", tmp_path)(ev({}))
    with pytest.raises(StateContractError, match="returned a value that is None"):
        key_function("st_keys:nothing", tmp_path)(ev({}))


def test_event_keys_turns_contract_errors_into_failures_that_are_not_retried() -> None:
    keys = event_keys([ev({"user": "a"}), ev({})], key_function("user", None))
    assert keys[0] == "a"
    assert isinstance(keys[1], Failure) and not keys[1].retryable


# -- layout -------------------------------------------------------------------------------


def _sink(*streams: str, name: str = "s", ttl: float | None = None) -> SinkSpec:
    refs = tuple(StreamRef(s) for s in streams)
    return SinkSpec(name, refs, "h:f", key="user", state=StateSpec(ttl=ttl))


def stream_key(name: str) -> str:
    return f"pulse:stream:{name}"


def test_hash_tags_follow_the_cluster_rule() -> None:
    assert hash_tag("pulse:stream:{orders}in") == "orders"
    assert hash_tag("a{}b{c}") is None  # an empty first tag: the whole key is hashed
    assert hash_tag("a{b") is None
    assert shared_hash_tag(["x{o}1", "y{o}2"]) == "o"
    assert shared_hash_tag(["x{o}1", "y2"]) is None


def test_state_lives_in_the_input_streams_slot_when_they_share_a_tag() -> None:
    layout = state_layout("dep", _sink("{orders}in", "{orders}more", ttl=1.5), stream_key)
    assert layout.name("ann") == "ponos:{orders}:state:dep:s:ann"
    assert layout.ttl_ms == 1500
    untagged = state_layout("dep", _sink("{orders}in", "clicks"), stream_key)
    assert untagged.name("ann") == "ponos:{dep}:state:dep:s:ann"
    assert untagged.ttl_ms is None


def test_state_names_of_two_sinks_never_collide() -> None:
    keys = EngineKeys("dep")
    assert keys.state("a:b", "c") != keys.state("a", "b:c")
    assert keys.state("a", "b:c").startswith(keys.state_prefix("a"))


# -- applying ------------------------------------------------------------------------------


def _apply(fn: Any, events: list[Event], stored: dict[str, KeyState] | None = None) -> Any:
    keys = event_keys(events, key_function("user", None))
    return apply_batch(fn, events, keys, stored or {}, LAYOUT, ("counts",))


def test_each_event_sees_the_state_the_previous_event_of_its_key_left() -> None:
    events = [ev({"user": u, "i": i}, i) for i, u in enumerate("abab", 1)]
    stored = {LAYOUT.name("a"): KeyState(LAYOUT.name("a"), 7, '{"n":10,"seen":[0]}')}
    applied = _apply(count, events, stored)
    assert [json.loads(o[0].fields[3])["n"] for o in applied.outcomes] == [11, 1, 12, 2]
    a, b = applied.states["a"], applied.states["b"]
    assert (a.version, json.loads(a.text or "")) == (7, {"n": 12, "seen": [0, 1, 3]})
    assert (b.version, json.loads(b.text or "")) == (0, {"n": 2, "seen": [2, 4]})
    assert a.changed and b.changed
    assert stored[LAYOUT.name("a")].text == '{"n":10,"seen":[0]}'  # the read is not changed


def test_the_key_s_parse_of_the_payload_is_the_handler_s_own() -> None:
    event = ev({"user": "a", "i": 1})
    assert key_function("user", None)(event) == "a"
    first = event.json()  # the key's parse, handed over: not parsed again
    assert first is not event.json() and first == event.json()
    first["user"] = "changed"  # the handler's to change: the key never sees it
    assert key_function("user", None)(event) == "a" and event.json()["user"] == "a"


def test_a_start_from_an_earlier_chunk_s_states_holds_only_where_they_were_committed() -> None:
    events = [ev({"user": u, "i": i}, i) for i, u in enumerate("abab", 1)]
    ahead = AheadStates()
    earlier = _apply(count, events[:2])
    published = ahead.publish(earlier)
    started = {LAYOUT.name(k): ahead.get(LAYOUT.name(k)) for k in "ab"}
    based = {name: ks.text for name, ks in started.items() if ks is not None}
    later = _apply(count, events[2:], started)  # type: ignore[arg-type]
    assert [json.loads(o[0].fields[3])["n"] for o in later.outcomes] == [2, 2]
    known = KnownStates()  # the earlier commit wrote "a" (version 9), "b"'s event moved
    entries = [Entry(e, o) for e, o in zip(events[:2], earlier.outcomes, strict=True)]
    batch = keyed_batch(entries, earlier.keys, earlier, LAYOUT)  # type: ignore[arg-type]
    known.committed(batch, [1], 9)
    stale = AheadStates.stale(based, later, known)
    assert stale == {LAYOUT.name("b")} and later.states["a"].version == 9
    redo, kept = drop_keys(later, stale)
    assert redo == [1] and kept.keys == ["a"] and list(kept.states) == ["a"]
    ahead.retire(published)
    assert ahead.get(LAYOUT.name("a")) is None


def test_a_failing_handler_changes_no_state() -> None:
    def flaky(event: Event, state: dict[str, Any]) -> None:
        state["n"] = state.get("n", 0) + 1
        if event.json()["i"] == 2:
            raise RuntimeError("boom")

    applied = _apply(flaky, [ev({"user": "a", "i": i}, i) for i in (1, 2, 3)])
    assert isinstance(applied.outcomes[1], Failure) and applied.outcomes[1].retryable
    assert json.loads(applied.states["a"].text or "") == {"n": 2}


@pytest.mark.parametrize("value", [object(), float("nan"), {1, 2}])
def test_a_state_that_is_not_json_is_a_contract_error_and_changes_nothing(value: Any) -> None:
    def bad(event: Event, state: dict[str, Any]) -> None:
        state["n"] = state.get("n", 0) + 1
        if event.json()["i"] == 2:
            state["when"] = value

    applied = _apply(bad, [ev({"user": "a", "i": i}, i) for i in (1, 2, 3)])
    failure = applied.outcomes[1]
    assert isinstance(failure, Failure) and not failure.retryable
    assert isinstance(failure.error, StateContractError)
    assert json.loads(applied.states["a"].text or "") == {"n": 2}


def test_an_event_without_a_key_is_dead_lettered_unhandled() -> None:
    seen: list[Event] = []
    applied = _apply(lambda e, s: seen.append(e), [ev({"i": 1}), ev({"user": "a", "i": 2}, 2)])
    assert isinstance(applied.outcomes[0], Failure) and not applied.outcomes[0].retryable
    assert applied.keys == [None, "a"] and len(seen) == 1


def test_a_state_left_empty_deletes_the_key_and_an_untouched_one_is_only_checked() -> None:
    def clear(event: Event, state: dict[str, Any]) -> None:
        if event.json()["user"] == "a":
            state.clear()

    stored = {LAYOUT.name(k): KeyState(LAYOUT.name(k), 3, '{"n":1}') for k in ("a", "b")}
    applied = _apply(clear, [ev({"user": "a", "i": 1}), ev({"user": "b", "i": 2}, 2)], stored)
    assert applied.states["a"].text is None and applied.states["a"].changed
    assert not applied.states["b"].changed
    keys, args = state_args(applied.states.values(), replace(LAYOUT, ttl_ms=5000))
    assert keys == [LAYOUT.versions, LAYOUT.name("a"), LAYOUT.name("b")]
    assert args == [2, 5000, 3, "d", "", 3, "k", ""]


async def test_async_handlers_keep_stream_order_per_key() -> None:
    async def slow_count(event: Event, state: dict[str, Any]) -> Emit:
        await asyncio.sleep(0.001 * (5 - event.json()["i"]))  # later events finish sooner
        return count(event, state)

    events = [ev({"user": u, "i": i}, i) for i, u in enumerate("aabab", 1)]
    keys = event_keys(events, key_function("user", None))
    applied = await apply_batch_async(slow_count, events, keys, {}, LAYOUT, ("counts",))
    assert json.loads(applied.states["a"].text or "")["seen"] == [1, 2, 4]
    assert json.loads(applied.states["b"].text or "")["seen"] == [3, 5]


# -- the state section against a real server ----------------------------------------------


async def _commit(r: aioredis.Redis, states: list[KeyState], ttl_ms: int | None) -> list[int]:
    return await commit_states(r, states, replace(LAYOUT, ttl_ms=ttl_ms))


def changed(name: str, version: int, text: str | None) -> KeyState:
    return KeyState(name, version, text, changed=True)


async def version(r: aioredis.Redis, name: str) -> int:
    return (await read_states(r, [name]))[name].version


async def test_versions_are_checked_and_each_write_takes_the_next_one(r: aioredis.Redis) -> None:
    assert await _commit(r, [changed("k1", 0, '{"n":1}')], None) == []
    stored = await read_states(r, ["k1", "k2"])
    assert (stored["k1"].version, stored["k1"].text) == (1, '{"n":1}')
    assert (stored["k2"].version, stored["k2"].text) == (0, None)
    assert await _commit(r, [changed("k2", 0, '{"n":1}'), changed("k3", 0, '{"n":1}')], None) == []
    assert [await version(r, k) for k in ("k2", "k3")] == [2, 2]  # one commit, one version
    assert await _commit(r, [changed("k1", 1, '{"n":2}')], None) == []
    assert await version(r, "k1") == 3


async def test_a_moved_version_is_a_conflict_and_nothing_of_that_key_is_written(
    r: aioredis.Redis,
) -> None:
    await _commit(r, [changed("k1", 0, '{"n":1}'), changed("k2", 0, '{"n":1}')], None)
    # Another actor read k1 at version 0 (before the commit above): its write is refused,
    # the other keys of its batch still commit.
    moved = await _commit(r, [changed("k1", 0, '{"n":9}'), changed("k3", 0, '{"n":1}')], None)
    assert moved == [0]
    stored = await read_states(r, ["k1", "k3"])
    assert (stored["k1"].version, stored["k1"].text) == (1, '{"n":1}')
    assert stored["k3"].version == 2
    # A key only read (unchanged) is checked too: what the handler emitted depended on it.
    assert await _commit(r, [KeyState("k2", 0, '{"n":1}')], None) == [0]
    assert await _commit(r, [KeyState("k2", 1, '{"n":1}')], None) == []
    assert await version(r, "k2") == 1  # a check writes nothing


async def test_a_key_deleted_and_written_again_never_gets_an_old_version_back(
    r: aioredis.Redis,
) -> None:
    await _commit(r, [changed("k1", 0, '{"n":1}')], None)
    await _commit(r, [changed("k1", 1, '{"n":2}')], None)  # a slow reader holds version 2
    await _commit(r, [changed("k1", 2, None)], None)  # deleted
    await _commit(r, [changed("k1", 0, '{"n":1}')], None)  # and written again, from {}
    await _commit(r, [changed("k1", 3, '{"n":2}')], None)
    assert await version(r, "k1") == 4
    assert await _commit(r, [changed("k1", 2, '{"n":3}')], None) == [0]


async def test_a_ttl_is_set_at_each_change_and_dropped_when_the_ttl_is(r: aioredis.Redis) -> None:
    await _commit(r, [changed("k1", 0, '{"n":1}')], 60_000)
    assert 0 < await r.pttl("k1") <= 60_000
    await _commit(r, [changed("k1", 1, '{"n":2}')], None)
    assert await r.pttl("k1") == -1


async def test_a_key_expired_by_its_ttl_reads_as_new(r: aioredis.Redis) -> None:
    await _commit(r, [changed("k1", 0, '{"n":1}')], 1)

    async def expired() -> bool:
        return not await r.exists("k1")

    await wait_for(expired, what="k1 expired")
    assert await version(r, "k1") == 0
    assert await _commit(r, [changed("k1", 1, '{"n":2}')], None) == [0]  # read before expiry
    assert await _commit(r, [changed("k1", 0, '{"n":1}')], None) == []
    assert await version(r, "k1") == 2


async def test_nothing_to_commit_sends_nothing(r: aioredis.Redis) -> None:
    assert await _commit(r, [], None) == []
    assert await r.dbsize() == 0


async def test_an_empty_state_deletes_the_key(r: aioredis.Redis) -> None:
    await _commit(r, [changed("k1", 0, '{"n":1}')], None)
    assert await _commit(r, [changed("k1", 1, None)], None) == []
    assert not await r.exists("k1")


@pytest.mark.parametrize("bad", ["k2", LAYOUT.versions])
async def test_a_key_of_another_type_fails_before_any_write(r: aioredis.Redis, bad: str) -> None:
    await r.set(LAYOUT.versions, 7)
    await r.delete(bad)
    await r.lpush(bad, "x")
    with pytest.raises(aioredis.ResponseError, match=f"WRONGTYPE {re.escape(bad)} is not"):
        await _commit(r, [changed("k1", 0, '{"n":1}'), changed("k2", 0, '{"n":1}')], None)
    assert not await r.exists("k1")
