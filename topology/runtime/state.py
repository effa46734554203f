"""Keyed state of a stateful sink: its keys, reading them, applying the handler, committing.

A sink with ``key`` and ``state`` calls ``handler(event, state)``. ``state`` is
the event's key's JSON object, kept in Redis as one hash per key (see
:meth:`EngineKeys.state`): ``v`` a version, ``s`` the JSON. A key never written
reads as version 0 and ``{}``. Versions come from one counter per sink (see
:meth:`EngineKeys.state_versions`), not per key: a key deleted or expired and
then written again gets a version it never had, so a reader holding the old
one cannot mistake the new state for the one it read.

The flow for a batch: compute each event's key (:func:`event_keys`), read the
distinct keys in one round trip (:func:`read_states`), apply the handler event
by event in stream order (:func:`apply_batch`: each event of a key sees the
state the previous one left), then commit. The commit runs :data:`STATE_LUA`
inside the same script as the outputs and the acks: it checks that each key's
version is the one read and only then writes the new states (version + 1,
``PEXPIRE`` for a ttl, ``DEL`` for a state left empty). A key whose version
moved was changed by another actor meanwhile: its events are not committed —
no state, no outputs, no ack — and are handled again from the current state.
No update is lost and a discarded attempt's outputs are never written.

Why a version per key and not ``WATCH``: the check runs inside the commit
script, so it costs no extra round trip and holds across actors in several
processes, and a conflict on one key does not discard the rest of the batch.

A handler that raises, or leaves a state that is not JSON, changes nothing:
it works on a copy, and the copy becomes the key's state only once the handler
returned and its outputs and its state both passed the contract.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from topology.callables import REF_PATTERN, import_callable
from topology.config.model import SinkSpec
from topology.runtime.handlers import ContractError, Failure, Outcome, route_result
from topology.runtime.keys import EngineKeys, glob_escape, shared_hash_tag
from topology.streams import Event

__all__ = [
    "STATE_LUA",
    "STATE_SCRIPT",
    "Applied",
    "KeyState",
    "StateContractError",
    "StateLayout",
    "apply_batch",
    "apply_batch_async",
    "commit_states",
    "count_states",
    "dump_state",
    "event_keys",
    "key_function",
    "load_state",
    "read_states",
    "scan_states",
    "state_args",
    "state_layout",
]


class StateContractError(ContractError):
    """An event's key cannot be computed, or the state it left is not a JSON object.

    A contract error: dead-lettered at once, never retried, and no state changes.
    """


# -- keys -------------------------------------------------------------------------------


def _key_text(value: Any, what: str) -> str:
    """A key as text: a non-empty string, or an integer (ids often are)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise StateContractError(f"{what} is {value!r}: a state key is a non-empty string or an int")


def _path_key(path: str) -> Callable[[Event], str]:
    parts = path.split(".")

    def key(event: Event) -> str:
        try:
            value: Any = json.loads(event.payload)
        except ValueError as exc:  # UnicodeDecodeError is one too
            raise StateContractError(f"key {path!r}: the payload is not JSON: {exc}") from None
        for i, part in enumerate(parts):
            if not isinstance(value, dict) or part not in value:
                where = ".".join(parts[: i + 1])
                raise StateContractError(f"key {path!r}: the payload has no field {where!r}")
            value = value[part]
        return _key_text(value, f"key {path!r}")

    return key


def _function_key(ref: str, fn: Callable[[Event], Any]) -> Callable[[Event], str]:
    def key(event: Event) -> str:
        try:
            value = fn(event)
        except Exception as exc:  # the user's function: whatever it raises is the event's
            raise StateContractError(f"key {ref} raised {type(exc).__name__}: {exc}") from None
        return _key_text(value, f"key {ref} returned a value that")

    return key


def key_function(key: str, base_dir: Path | None) -> Callable[[Event], str]:
    """The sink's ``key`` as a function Event -> str raising :class:`StateContractError`.

    ``module:function`` is imported (the config was validated, so it imports);
    anything else is a field, or a dotted path of fields, of the JSON payload.
    """
    if re.match(REF_PATTERN, key):
        return _function_key(key, import_callable(key, base_dir))
    return _path_key(key)


def event_keys(events: Sequence[Event], key_of: Callable[[Event], str]) -> list[str | Failure]:
    """Each event's state key, or the contract failure that dead-letters it."""
    out: list[str | Failure] = []
    for event in events:
        try:
            out.append(key_of(event))
        except StateContractError as exc:
            out.append(Failure(exc, retryable=False))
    return out


# -- layout and reads ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateLayout:
    """Where one sink's state lives (its keys, its version counter) and how long it is kept."""

    prefix: str
    versions: str
    ttl_ms: int | None

    def name(self, key: str) -> str:
        """The Redis key of state key ``key``."""
        return self.prefix + key


def state_layout(deployment: str, sink: SinkSpec, stream_key: Callable[[str], str]) -> StateLayout:
    """The layout of ``sink``'s state: in the slot its input streams' hash tag names.

    Only the inputs count: the acks are on them, so with a shared tag a state
    change commits with its ack even when the outputs are elsewhere; and a
    reload changing the outputs does not move the state.
    """
    tag = shared_hash_tag(stream_key(name) for name in sink.stream_names)
    ttl = sink.state.ttl if sink.state is not None else None
    keys = EngineKeys(deployment)
    return StateLayout(
        keys.state_prefix(sink.name, tag),
        keys.state_versions(sink.name, tag),
        None if ttl is None else max(1, int(ttl * 1000)),
    )


@dataclass(slots=True)
class KeyState:
    """One key during a batch: its Redis key, the version read, its JSON now."""

    name: str
    version: int
    text: str | None  # None: empty (a new key, or one to delete)
    changed: bool = False


def _stored(name: str, reply: Sequence[Any]) -> KeyState:
    version, text = reply
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return KeyState(name, int(version or 0), text or None)


async def read_states(redis: Any, names: Iterable[str]) -> dict[str, KeyState]:
    """The current state of each Redis key in ``names``, in one round trip."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hmget(name, "v", "s")
    replies = await pipe.execute()
    return {name: _stored(name, reply) for name, reply in zip(names, replies, strict=True)}


async def scan_states(
    redis: Any, layout: StateLayout, *, count: int = 500
) -> AsyncIterator[list[tuple[str, KeyState]]]:
    """Every state key of a sink with its state, a batch at a time (``SCAN``, never ``KEYS``).

    A key changed during the scan may show its old or its new state; one added
    or deleted during it may be missed (``SCAN``'s own guarantee).
    """
    names: list[str] = []
    async for raw in redis.scan_iter(match=glob_escape(layout.prefix) + "*", count=count):
        names.append(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        if len(names) >= count:
            yield await _named(redis, layout, names)
            names = []
    if names:
        yield await _named(redis, layout, names)


async def count_states(redis: Any, layout: StateLayout, *, count: int = 1000) -> int:
    """How many state keys a sink has (a ``SCAN``: proportional to the keyspace)."""
    n = 0
    async for _ in redis.scan_iter(match=glob_escape(layout.prefix) + "*", count=count):
        n += 1
    return n


async def _named(redis: Any, layout: StateLayout, names: list[str]) -> list[tuple[str, KeyState]]:
    stored = await read_states(redis, names)
    start = len(layout.prefix)
    return [(name[start:], ks) for name, ks in stored.items() if ks.version]


# -- applying the handler ---------------------------------------------------------------


#: One encoder for every state: ``json.dumps`` with options builds a new one per call,
#: a good part of what keyed state costs per event. ``allow_nan=False``: NaN is not JSON.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def load_state(text: str | None) -> dict[str, Any]:
    """A fresh dict of a stored state: the handler's copy, so a failure changes nothing."""
    return json.loads(text) if text else {}


def dump_state(state: Any) -> str | None:
    """The JSON of a state after the handler; None when it is empty (delete the key)."""
    if not isinstance(state, dict):
        raise StateContractError(f"the state is a {type(state).__name__}, not a JSON object")
    if not state:
        return None
    try:
        return _ENCODER.encode(state)
    except (TypeError, ValueError) as exc:
        raise StateContractError(f"the state is not JSON-serialisable: {exc}") from None


def _failed(exc: BaseException) -> Failure:
    """A handler call that raised: retried, unless it broke the contract."""
    return Failure(exc, retryable=not isinstance(exc, ContractError))


def _settle(ks: KeyState, state: dict[str, Any], result: Any, outputs: tuple[str, ...]) -> Outcome:
    """The event's outputs, and the key's new state, once both pass the contract."""
    try:
        adds = route_result(result, outputs)
        text = dump_state(state)
    except ContractError as exc:
        return _failed(exc)
    if text != ks.text:
        ks.text = text
        ks.changed = True
    return adds


class Applied(NamedTuple):
    """A batch handled with state: what to commit.

    ``outcomes`` and ``keys`` are per event (``keys[i]`` None: its key could not
    be computed, its outcome is the failure); ``states`` per state key, with
    the version read — the commit checks it — and the JSON to write.
    """

    outcomes: list[Outcome]
    keys: list[str | None]
    states: dict[str, KeyState]


def _prepare(
    keys: Sequence[str | Failure], stored: Mapping[str, KeyState], layout: StateLayout
) -> tuple[list[Outcome | None], list[str | None], dict[str, KeyState]]:
    outcomes: list[Outcome | None] = []
    plain: list[str | None] = []
    states: dict[str, KeyState] = {}
    for key in keys:
        if isinstance(key, Failure):
            outcomes.append(key)
            plain.append(None)
            continue
        if key not in states:
            name = layout.name(key)
            read = stored.get(name) or KeyState(name, 0, None)
            states[key] = KeyState(name, read.version, read.text)
        outcomes.append(None)
        plain.append(key)
    return outcomes, plain, states


def apply_batch(
    fn: Callable[[Event, dict[str, Any]], Any],
    events: Sequence[Event],
    keys: Sequence[str | Failure],
    stored: Mapping[str, KeyState],
    layout: StateLayout,
    outputs: tuple[str, ...],
) -> Applied:
    """Handle ``events`` in order with a sync handler; ``stored`` is what :func:`read_states` read.

    ``stored`` is not changed: re-applying after a conflict starts from a new read.
    """
    outcomes, plain, states = _prepare(keys, stored, layout)
    for i, event in enumerate(events):
        key = plain[i]
        if key is None:
            continue
        ks = states[key]
        state = load_state(ks.text)
        try:
            result = fn(event, state)
        except (Exception, SystemExit) as exc:  # sys.exit() in a handler is its failure
            outcomes[i] = _failed(exc)
        else:
            outcomes[i] = _settle(ks, state, result, outputs)
    return Applied(outcomes, plain, states)  # type: ignore[arg-type]


async def apply_batch_async(
    fn: Callable[[Event, dict[str, Any]], Any],
    events: Sequence[Event],
    keys: Sequence[str | Failure],
    stored: Mapping[str, KeyState],
    layout: StateLayout,
    outputs: tuple[str, ...],
    *,
    concurrency: int = 64,
) -> Applied:
    """:func:`apply_batch` for an async handler: keys run concurrently, a key's events in order."""
    outcomes, plain, states = _prepare(keys, stored, layout)
    chains: dict[str, list[int]] = {}
    for i, key in enumerate(plain):
        if key is not None:
            chains.setdefault(key, []).append(i)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def chain(key: str, indexes: list[int]) -> None:
        ks = states[key]
        async with gate:
            for i in indexes:
                state = load_state(ks.text)
                try:
                    result = fn(events[i], state)
                    if inspect.isawaitable(result):
                        result = await result
                except (Exception, SystemExit) as exc:
                    outcomes[i] = _failed(exc)
                else:
                    outcomes[i] = _settle(ks, state, result, outputs)

    await asyncio.gather(*(chain(key, indexes) for key, indexes in chains.items()))
    return Applied(outcomes, plain, states)  # type: ignore[arg-type]


# -- the commit's state section ---------------------------------------------------------

#: The state section of a commit script: Lua functions a script defines and calls.
#: ``state_args(kbase, a)`` reads, from ARGV[a]: the number of state keys n, the
#: ttl in ms (or ""), then per key: the version read, an op (``k`` keep: check
#: only; ``s`` set to the JSON that follows; ``d`` delete) and the JSON (or "").
#: KEYS[kbase + 1] is the sink's version counter, KEYS[kbase + 2 .. kbase + n + 1]
#: the state keys. It returns the parsed section and the next ARGV index.
#: ``state_check(st, blocked)`` marks ``blocked[k]`` for every key whose version
#: moved and returns an error text for a key that is not a state hash (or a
#: counter that is not one) — it writes nothing, so it runs before the script's
#: first write, and nothing after it can fail. ``state_write(st, blocked)`` writes
#: every key not blocked: the counter's next value as its version and the JSON,
#: then ``PEXPIRE`` (ttl) or ``PERSIST`` (no ttl: one set before is dropped); or
#: ``DEL``. A script that skips a key's events for another reason (an event
#: claimed by another consumer) blocks that key too before writing.
STATE_LUA = r"""
local function state_args(kbase, a)
  local n = tonumber(ARGV[a])
  local st = {n = n, kbase = kbase + 1, seq = KEYS[kbase + 1], ttl = ARGV[a + 1],
              expect = {}, op = {}, json = {}}
  a = a + 2
  for k = 1, n do
    st.expect[k] = ARGV[a]; st.op[k] = ARGV[a + 1]; st.json[k] = ARGV[a + 2]
    a = a + 3
  end
  return st, a
end
local function state_check(st, blocked)
  local seq = redis.pcall('GET', st.seq)
  if (type(seq) == 'table' and seq.err) or (seq and not tonumber(seq)) then
    return 'WRONGTYPE ' .. st.seq .. ' is not a version counter'
  end
  for k = 1, st.n do
    local key = KEYS[st.kbase + k]
    local v = redis.pcall('HGET', key, 'v')
    if type(v) == 'table' and v.err then
      return 'WRONGTYPE ' .. key .. ' is not a state hash'
    end
    if (v or '0') ~= st.expect[k] then blocked[k] = true end
  end
  return nil
end
local function state_write(st, blocked)
  local version = nil
  for k = 1, st.n do
    local op = st.op[k]
    if not blocked[k] and op ~= 'k' then
      local key = KEYS[st.kbase + k]
      if op == 'd' then
        redis.call('DEL', key)
      else
        if version == nil then version = redis.call('INCR', st.seq) end
        redis.call('HSET', key, 'v', version, 's', st.json[k])
        if st.ttl ~= '' then
          redis.call('PEXPIRE', key, st.ttl)
        else
          redis.call('PERSIST', key)
        end
      end
    end
  end
end
"""

#: The state section on its own: KEYS = the version counter then the state keys,
#: ARGV = the section (see :data:`STATE_LUA`). Returns the 0-based indexes of the
#: keys whose version moved (nothing of theirs written). For a commit that cannot
#: hold the state in its script (streams in another cluster slot): the states
#: still commit together, checked, but not atomically with the outputs and acks.
STATE_SCRIPT = (
    STATE_LUA
    + r"""
local st = state_args(0, 1)
local blocked = {}
local err = state_check(st, blocked)
if err then return redis.error_reply(err) end
state_write(st, blocked)
local moved = {}
for k = 1, st.n do
  if blocked[k] then moved[#moved + 1] = k - 1 end
end
return moved
"""
)


def state_args(states: Iterable[KeyState], layout: StateLayout) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the state section for ``states`` (in that order)."""
    keys: list[str] = [layout.versions]
    args: list[Any] = []
    for ks in states:
        keys.append(ks.name)
        if not ks.changed:
            args += [ks.version, "k", ""]
        elif ks.text is None:
            args += [ks.version, "d", ""]
        else:
            args += [ks.version, "s", ks.text]
    ttl = "" if layout.ttl_ms is None else layout.ttl_ms
    return keys, [len(keys) - 1, ttl, *args]


async def commit_states(redis: Any, states: Iterable[KeyState], layout: StateLayout) -> list[int]:
    """Run :data:`STATE_SCRIPT` for ``states``: the 0-based indexes of those whose version moved.

    The state step of a commit that cannot carry it in its own script (its streams
    are in other cluster slots); a commit on one slot runs :data:`STATE_LUA` inside.
    """
    keys, args = state_args(states, layout)
    if len(keys) == 1:
        return []
    return [int(i) for i in await redis.register_script(STATE_SCRIPT)(keys=keys, args=args)]
