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
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from topology._emit import Emit
from topology.callables import REF_PATTERN, import_callable
from topology.config.model import SinkSpec
from topology.runtime.commit import Entry, KeyedBatch
from topology.runtime.handlers import (
    YIELD_MASK,
    ContractError,
    Failure,
    HandlerRunner,
    HandlerThread,
    Outcome,
    ThreadOwner,
    _is_async,
    route_result,
    within,
)
from topology.runtime.keys import EngineKeys, glob_escape, shared_hash_tag
from topology.runtime.state_lua import STATE_LUA, STATE_SCRIPT
from topology.runtime.timeouts import TimedBatches
from topology.streams import Event
from topology.streams._payload import compact_json

__all__ = [
    "STATE_LUA",
    "STATE_SCRIPT",
    "AheadStates",
    "Applied",
    "KeyState",
    "KnownStates",
    "StateContractError",
    "StateLayout",
    "StateWiring",
    "StatefulRunner",
    "apply_batch",
    "apply_batch_async",
    "commit_states",
    "count_states",
    "dump_state",
    "event_keys",
    "key_function",
    "keyed_batch",
    "load_state",
    "log_state_change",
    "read_states",
    "read_states_blocking",
    "scan_states",
    "state_args",
    "state_layout",
]


log = logging.getLogger("topology.runtime")


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
            value: Any = event.peek_json()  # kept for the handler's event.json()
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


def key_function(
    key: str,
    base_dir: Path | None,
    load: Callable[[str], Callable[..., Any]] | None = None,
) -> Callable[[Event], str]:
    """The sink's ``key`` as a function Event -> str raising :class:`StateContractError`.

    ``module:function`` is imported (the config was validated, so it imports) —
    by ``load`` when given, so a reload imports the key's module afresh like the
    handler's; anything else is a field, or a dotted path of fields, of the JSON payload.
    """
    if re.match(REF_PATTERN, key):
        fn = load(key) if load is not None else import_callable(key, base_dir)
        return _function_key(key, fn)
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


def read_states_blocking(
    call: Callable[[Sequence[tuple[Any, ...]]], list[Any]], names: Iterable[str]
) -> dict[str, KeyState]:
    """:func:`read_states` from a thread: ``call`` sends commands pipelined, returns replies."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    replies = call([("HMGET", name, "v", "s") for name in names])
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


#: One encoder for every state (see :func:`compact_json`). ``allow_nan=False``: NaN is
#: not JSON.
_encode_state = compact_json(allow_nan=False)


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
        return _encode_state(state)
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


class _KeyedCalls:
    """One batch's calls of a sync stateful handler: call i, then record (settle) it.

    Split in two so a call bounded by the sink's ``timeout`` can be abandoned between
    them (:meth:`TimedBatches.run`): the call works on its own copy of the state, and
    only :meth:`record` makes that copy the key's state, so an abandoned or failed
    call changes no state, and the key's next event starts from the state before it.
    """

    def __init__(
        self,
        fn: Callable[[Event, dict[str, Any]], Any],
        events: Sequence[Event],
        keys: Sequence[str | Failure],
        stored: Mapping[str, KeyState],
        layout: StateLayout,
        outputs: tuple[str, ...],
    ) -> None:
        self.fn, self.events, self.outputs = fn, events, outputs
        self.outcomes, self.keys, self.states = _prepare(keys, stored, layout)

    def call(self, i: int) -> Any:
        """Call ``fn`` for event i: a Failure, else what :meth:`record` settles."""
        key = self.keys[i]
        if key is None:  # no key: its outcome is the failure already
            return self.outcomes[i]
        ks = self.states[key]
        state = load_state(ks.text)
        try:
            result = self.fn(self.events[i], state)
        except (Exception, SystemExit) as exc:  # sys.exit() in a handler is its failure
            return _failed(exc)
        if type(result) not in _PLAIN and inspect.isawaitable(result):
            return _awaitable_returned(result)
        return ks, state, result

    def record(self, i: int, value: Any) -> None:
        if isinstance(value, Failure):
            self.outcomes[i] = value
        else:
            ks, state, result = value
            self.outcomes[i] = _settle(ks, state, result, self.outputs)

    def run(self) -> None:
        call, record = self.call, self.record
        for i in range(len(self.events)):
            if i & YIELD_MASK == YIELD_MASK:
                time.sleep(0)  # let the event loop's thread take the GIL: see YIELD_EVERY
            record(i, call(i))

    def applied(self) -> Applied:
        return Applied(self.outcomes, self.keys, self.states)  # type: ignore[arg-type]


def apply_batch(
    fn: Callable[[Event, dict[str, Any]], Any],
    events: Sequence[Event],
    keys: Sequence[str | Failure],
    stored: Mapping[str, KeyState],
    layout: StateLayout,
    outputs: tuple[str, ...],
    timed: TimedBatches | None = None,
) -> Applied:
    """Handle ``events`` in order with a sync handler; ``stored`` is what :func:`read_states` read.

    ``stored`` is not changed: re-applying after a conflict starts from a new read.
    With ``timed`` each call is bounded by the sink's ``timeout``.
    """
    calls = _KeyedCalls(fn, events, keys, stored, layout, outputs)
    if timed is None:
        calls.run()
    else:
        timed.run(events, calls.call, calls.record)
    return calls.applied()


#: What a handler returns most often: not awaitables (``isawaitable`` is not free).
_PLAIN = (Emit, list, tuple, type(None))


def _awaitable_returned(result: Any) -> Failure:
    """A sync stateful handler returned an awaitable: its state would change after the
    commit, so it is a contract error (never awaited: closed)."""
    close = getattr(result, "close", None)
    if callable(close):
        close()
    error = StateContractError(
        f"a sync handler with state returned {type(result).__name__}: write it async"
    )
    return Failure(error, retryable=False)


async def apply_batch_async(
    fn: Callable[[Event, dict[str, Any]], Any],
    events: Sequence[Event],
    keys: Sequence[str | Failure],
    stored: Mapping[str, KeyState],
    layout: StateLayout,
    outputs: tuple[str, ...],
    *,
    concurrency: int = 64,
    timeout: float | None = None,
) -> Applied:
    """:func:`apply_batch` for an async handler: keys run concurrently, a key's events in
    order; a call past ``timeout`` is cancelled (a :class:`HandlerTimeout` failure)."""
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
                        result = await (result if timeout is None else within(result, timeout))
                except (Exception, SystemExit) as exc:
                    outcomes[i] = _failed(exc)
                else:
                    outcomes[i] = _settle(ks, state, result, outputs)

    await asyncio.gather(*(chain(key, indexes) for key, indexes in chains.items()))
    return Applied(outcomes, plain, states)  # type: ignore[arg-type]


# -- the commit's state section ---------------------------------------------------------


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


# -- wiring into the actor ------------------------------------------------------------------


def keyed_batch(
    entries: Sequence[Entry], keys: Sequence[str | None], applied: Applied, layout: StateLayout
) -> KeyedBatch:
    """The commit of ``entries`` (``keys[i]``: entry i's state key, None for a dead letter)
    with the states of the keys they touch, in first-seen order."""
    order: dict[str, int] = {}
    index: list[int] = []
    for key in keys:
        if key is None:
            index.append(0)
            continue
        k = order.get(key)
        if k is None:
            k = order[key] = len(order) + 1
        index.append(k)
    states = [applied.states[key] for key in order]
    section_keys, section_args = state_args(states, layout)
    return KeyedBatch(entries, section_keys, section_args, index, states)


class StateWiring(NamedTuple):
    """What an actor of a stateful sink needs beside its handler: its key and layout."""

    key_of: Callable[[Event], str]
    layout: StateLayout


class StatefulRunner(ThreadOwner, HandlerRunner):
    """A stateful sink's handler: ``handler(event, state)`` over a batch and its read states.

    :meth:`run` takes ``(events, keys, stored)`` and returns an :class:`Applied`. A
    sync handler runs the whole batch as one job on a thread of its own (or on
    ``executor``); an async one on the loop, keys concurrently, a key's events in
    order. An awaitable returned by a sync handler is a contract error (its state
    would change after the batch was committed).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        outputs: tuple[str, ...],
        layout: StateLayout,
        *,
        executor: Executor | None = None,
    ) -> None:
        super().__init__(fn, outputs)
        self.handler: Callable[[Event, dict[str, Any]], Any] = fn
        self.layout = layout
        self.executor = executor
        self._async = _is_async(fn)
        self._thread = HandlerThread() if executor is None and not self._async else None
        self._timed: TimedBatches | None = None

    def limit(self, seconds: float | None, name: str = "handler") -> HandlerRunner:
        """Bound each call to ``seconds``: an async call is cancelled, a sync one abandoned
        on its thread (see :mod:`topology.runtime.timeouts`); either changes no state."""
        super().limit(seconds, name)
        self._timed = None if seconds is None or self._async else TimedBatches(seconds, name)
        return self

    def run_blocking(self, batch: Any, loop: asyncio.AbstractEventLoop) -> Applied:
        """:meth:`run` of a sync handler, from this handler's own thread."""
        events, keys, stored = batch
        return apply_batch(
            self.handler, events, keys, stored, self.layout, self.outputs, self._timed
        )

    async def run(self, batch: Any) -> Any:
        events, keys, stored = batch
        if self._async:
            return await apply_batch_async(
                self.handler, events, keys, stored, self.layout, self.outputs, timeout=self.timeout
            )
        args = (self.handler, events, keys, stored, self.layout, self.outputs, self._timed)
        if self._thread is not None:
            return await self._thread.submit(apply_batch, *args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, apply_batch, *args)


def log_state_change(
    deployment: str, old: SinkSpec | None, new: SinkSpec | None, stream_key: Callable[[str], str]
) -> None:
    """Say what a reload does to a sink's state: a reload never deletes nor migrates it."""
    if old is None or old.state is None or old.key is None:
        return
    name = old.name
    if new is None or new.state is None:
        what = "removed" if new is None else "no longer stateful"
        log.info("sink %s %s: its state keys are kept in Redis, not deleted", name, what)
        return
    if new.key != old.key:
        log.warning(
            "sink %s: key changed from %r to %r: state under the old keys is kept, not migrated",
            name,
            old.key,
            new.key,
        )
    before = state_layout(deployment, old, stream_key).prefix
    if state_layout(deployment, new, stream_key).prefix != before:
        log.warning(
            "sink %s: its input streams' hash tag changed, so its state moves to another "
            "slot and starts afresh (the old keys are kept)",
            name,
        )


class KnownStates:
    """The states this actor last committed, per Redis key: its next chunks start from
    them instead of reading Redis, which saves a round trip per chunk for hot keys.

    An entry goes stale when another actor changes the key, or it expires: the commit's
    version check catches that like any conflict, and the key is read again.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._known: dict[str, KeyState] = {}

    def split(self, names: Iterable[str]) -> tuple[dict[str, KeyState], list[str]]:
        """The states known for ``names``, and the names to read from Redis."""
        known, misses = {}, []
        get = self._known.get
        for name in names:
            ks = get(name)
            if ks is None:
                misses.append(name)
            else:
                known[name] = ks
        return known, misses

    def get(self, name: str) -> KeyState | None:
        """The state known for ``name`` (not a copy: only look at it)."""
        return self._known.get(name)

    def forget(self, names: Iterable[str]) -> None:
        for name in names:
            self._known.pop(name, None)

    def committed(self, batch: KeyedBatch, left_out: Iterable[int], version: int) -> None:
        """Learn what a commit wrote: every key with an entry committed (a key whose
        entries were all left out was blocked: forgotten, to be read again).

        The batch's own records are kept, updated in place: its chunk is done with them
        (a later chunk starting from them takes a copy)."""
        skip = set(left_out)
        if skip:
            written = {k for i, k in enumerate(batch.key_index) if k and i not in skip}
        else:
            written = set(batch.key_index)
        known = self._known
        if len(known) > self.limit:
            known.clear()
        for k, ks in enumerate(batch.states, 1):
            if k not in written or (ks.changed and ks.text is not None and not version):
                # blocked, or the version is not known (the cluster fallback): read it again
                known.pop(ks.name, None)
                continue
            if ks.changed:
                ks.version = 0 if ks.text is None else version  # deleted: absent reads as 0
                ks.changed = False
            known[ks.name] = ks


class AheadStates:
    """The states a chunk's handler left, from then until the chunk is done (committed or
    given up), per Redis key: the next chunk sharing a key starts from them instead of
    waiting for that commit, so one chunk is handled while the one before it commits
    even when they share keys (few keys, or hot ones).

    Such a start is a guess until the earlier commit lands: :meth:`stale` then keeps it
    only where the state it started from is what got committed (the known state, which
    also gives the version the commit checks). Where it is not (that commit moved the
    key, or failed), the key's events are handled again from the current state, their
    first outcomes dropped unwritten.
    """

    def __init__(self) -> None:
        self._ahead: dict[str, KeyState] = {}

    def get(self, name: str) -> KeyState | None:
        """The state the latest chunk not done yet left for ``name``, if any."""
        ks = self._ahead.get(name)
        return None if ks is None else KeyState(name, ks.version, ks.text)

    def publish(self, applied: Applied) -> list[KeyState]:
        """A chunk was handled: its states are the ones to start from; returns them."""
        states = list(applied.states.values())
        for ks in states:
            self._ahead[ks.name] = ks
        return states

    def retire(self, published: Iterable[KeyState]) -> None:
        """The chunk is done: its states go, unless a later chunk's replaced them."""
        ahead = self._ahead
        for ks in published:
            if ahead.get(ks.name) is ks:
                del ahead[ks.name]

    @staticmethod
    def stale(based: Mapping[str, str | None], applied: Applied, known: KnownStates) -> set[str]:
        """The Redis keys of ``based`` (name -> the JSON the handler started from) whose
        start was not what the earlier chunks committed; the others get the version
        their commit wrote (what this chunk's commit checks)."""
        by_name = {ks.name: ks for ks in applied.states.values()}
        stale = set()
        for name, text in based.items():
            committed = known.get(name)
            if committed is None or committed.text != text:
                stale.add(name)
            elif name in by_name:
                by_name[name].version = committed.version
        return stale


def drop_keys(applied: Applied, names: set[str]) -> tuple[list[int], Applied]:
    """The indexes of the events whose state key is one of ``names`` (Redis keys), and
    ``applied`` without them (the other events, in order, and the other states)."""
    keys = applied.keys
    states = applied.states
    out = [i for i, k in enumerate(keys) if k is not None and states[k].name in names]
    gone = set(out)
    kept = [i for i in range(len(keys)) if i not in gone]
    return out, Applied(
        [applied.outcomes[i] for i in kept],
        [keys[i] for i in kept],
        {k: ks for k, ks in states.items() if ks.name not in names},
    )
