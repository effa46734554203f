"""Forward + ack in one server-side step: the heart of the exactly-once effect.

One Lua script per batch does, for every input event the actor handled:

1. check that the event is still pending on *this* consumer (``XPENDING key
   group id id 1 consumer``). If the ack grace passed and another consumer
   claimed it, this actor's outputs for it must not land: the other consumer
   will write them. Such events are returned as conflicts and left alone;
2. ``XADD`` its outputs (pulse's fields ``n``/``p``/``t``, ``MAXLEN ~`` and
   ``MINID ~`` trimming per the output stream's options) — or its dead letter;
3. ``XACK`` it and ``HDEL`` its failed-attempts counter.

Redis runs a script without interleaving other commands, and the client dying
does not stop a script that started. So a ``kill -9`` of the worker at any
moment leaves each event either fully committed or still pending with none of
its outputs written; its redelivery then writes them once. Retrying a commit
whose reply was lost is safe for the same reason: the already-acked events are
no longer pending, so the retry treats them as conflicts and writes nothing.

A script that fails half-way does not roll back what it already wrote, so
everything that can fail (wrong key types) is checked before the first write.

On Redis Cluster a script may only touch keys of one hash slot. When a sink's
keys span slots (``CROSSSLOT``), the committer says so once and falls back to
a fenced but non-atomic commit (ownership check, then the adds, then the
acks once every add is confirmed, and replicated when the node has a replica):
at-least-once on the outputs, never a loss. Exactly-once across streams needs
one node — or one slot.

The :class:`Committer` runs one of three commit modes (:class:`ScriptCommit`,
:class:`ScriptBesideAttempts`, :class:`SplitCommit`), moving down that list when
the keys turn out to span cluster slots. The script goes out two ways:
:meth:`Committer.commit` on the event loop, and :meth:`Committer.commit_blocking`
from the actor's handler thread on a plain (non-cluster) client, which lets a
sync handler's chunk be handled and committed without going back through the
event loop in between (a loop pass, two futures and a self-pipe wake-up fewer
per chunk; see ``tools/profile_light.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import redis.connection as sync_connection
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from topology.config.model import StreamSpec
from topology.runtime.state_lua import STATE_LUA, STATE_SCRIPT
from topology.streams import (
    Backoff,
    Connection,
    Event,
    describe_error,
    is_plain,
    is_transient,
    missed,
    opened_before_a_stall,
    packed_or_none,
)
from topology.streams._consumer import is_nogroup

__all__ = ["COMMIT_SCRIPT", "Add", "CommitResult", "Committer", "Entry", "KeyedBatch"]

log = logging.getLogger("topology.runtime")


#: First delay after a Redis error in the commit path (the retry doubles it).
ERROR_BACKOFF_FIRST = 0.1
#: Commit modes: one script with the attempts hash; one script for the streams and
#: the counters cleared beside it (cluster, streams in one slot); a fenced but
#: non-atomic pipeline (cluster, streams in several slots).
FULL, NO_ATTEMPTS, SPLIT = "full", "no-attempts", "split"
#: How long a cross-slot commit waits for a replica to have its outputs before acking.
REPLICA_WAIT_MS = 2000
#: Tries of clearing committed events' attempt counters beside the commit, and their
#: backoff (the first delay is the commit retry's).
CLEANUP_TRIES = 4
CLEANUP_BACKOFF_CAP = 1.0


def _is_cross_slot(exc: Exception) -> bool:
    """The server's CROSSSLOT, or redis-py's cluster client refusing the same up front."""
    text = str(exc)
    return (
        text.startswith("CROSSSLOT")
        or "hash to the same slot" in text
        or "map to the same key slot" in text
    )


#: KEYS = the attempts hash (when ARGV[3] is "1"), then every stream key touched
#: (inputs, outputs, dead letter). ARGV = group, consumer, use_attempts, nstreams,
#: then per stream key (name, maxlen or "", minid or ""), then nentries, then a
#: shape: "g" then per entry (stream index, id, nadds, then per add (stream index,
#: nfields, fields...)); or "u" (uniform: see ``Committer._uniform_body``) then the
#: input and output stream indexes and per entry (id, name, payload).
#: Keyed batches ("k", "ku") carry their state section after the shape (see the script).
#: Stream indexes are 1-based among the stream keys. Returns the 0-based indexes
#: of the entries not owned by this consumer (conflicts), whose adds were skipped.
COMMIT_SCRIPT = (
    STATE_LUA
    + r"""
local group, consumer = ARGV[1], ARGV[2]
local base = 0
if ARGV[3] == '1' then base = 1 end
local nstreams = tonumber(ARGV[4])
local names, maxlens, minids = {}, {}, {}
local a = 5
for i = 1, nstreams do
  local t = redis.call('TYPE', KEYS[i + base])['ok']
  if t ~= 'stream' and t ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i + base] .. ' is a ' .. t .. ', not a stream')
  end
  names[i] = ARGV[a]; maxlens[i] = ARGV[a + 1]; minids[i] = ARGV[a + 2]
  a = a + 3
end
local has_attempts = base == 1 and redis.call('EXISTS', KEYS[1]) == 1
local nentries = tonumber(ARGV[a]); a = a + 1
-- Ownership: one XPENDING over this consumer's whole PEL per input stream (the
-- actor holds at most a batch, so it is short) instead of one per event. When the
-- reply is cut at the count, an id not in it is checked on its own.
local window = nentries * 2 + 64
local owned, cut = {}, {}
local function load(si)
  local set = owned[si]
  if set == nil then
    set = {}
    local ok, rows = pcall(redis.call, 'XPENDING', KEYS[si + base], group, '-', '+', window,
                           consumer)
    if ok then
      for i = 1, #rows do set[rows[i][1]] = true end
      cut[si] = #rows >= window
    else
      cut[si] = false  -- NOGROUP: nothing is ours
    end
    owned[si] = set
  end
  return set
end
local function owns(si, id)
  if load(si)[id] then return true end
  if cut[si] then
    local ok, rows = pcall(redis.call, 'XPENDING', KEYS[si + base], group, id, id, 1, consumer)
    return ok and #rows > 0
  end
  return false
end
-- One output of a uniform shape: name and payload only, capped when maxlen is set.
local function add_np(okey, maxlen, name, payload)
  if maxlen == '' then
    redis.call('XADD', okey, '*', 'n', name, 'p', payload)
  else
    redis.call('XADD', okey, 'MAXLEN', '~', maxlen, '*', 'n', name, 'p', payload)
  end
end
local conflicts = {}
local acks = {}
local trim = {}
local cleared = {}
local shape = ARGV[a]; a = a + 1
if shape == 'u' then
  -- Uniform batch (a map stage): one input, one output, per event: id, name, payload.
  local si, oi = tonumber(ARGV[a]), tonumber(ARGV[a + 1]); a = a + 2
  local okey, maxlen = KEYS[oi + base], maxlens[oi]
  local ids = {}
  acks[si] = ids
  local set = load(si)
  local isCut = cut[si]
  local prefix = names[si] .. '/'
  for e = 1, nentries do
    local id = ARGV[a]
    if set[id] or (isCut and owns(si, id)) then
      add_np(okey, maxlen, ARGV[a + 1], ARGV[a + 2])
      ids[#ids + 1] = id
      if has_attempts then cleared[#cleared + 1] = prefix .. id end
    else
      conflicts[#conflicts + 1] = e - 1
    end
    a = a + 3
  end
  if minids[oi] ~= '' and #ids > 0 then trim[oi] = true end
  nentries = 0  -- the general loop below has nothing left to do
end
-- Keyed ('k'): the general shape with each entry's state key index (0: none) after
-- its id, and the state section first. A key is written only if its version is the
-- one read and every event of it in the batch is still ours; otherwise its owned
-- events are "moved" (nothing of theirs written, not acked: handled again).
-- Keyed uniform ('ku'): the state section, the input and output stream indexes, then
-- per entry (id, state key index, name, payload): the keyed shape of a map stage.
local keyed = shape == 'k' or shape == 'ku'
local st
local blocked = {}
local moved = {}
if keyed then
  st, a = state_args(base + nstreams, a)
  local err = state_check(st, blocked)
  if err then return redis.error_reply(err) end
end
if shape == 'ku' then
  local si, oi = tonumber(ARGV[a]), tonumber(ARGV[a + 1]); a = a + 2
  for p = a, a + 4 * (nentries - 1), 4 do
    local k = tonumber(ARGV[p + 1])
    if k > 0 and not owns(si, ARGV[p]) then blocked[k] = true end
  end
  local okey, maxlen = KEYS[oi + base], maxlens[oi]
  local ids = {}
  acks[si] = ids
  local prefix = names[si] .. '/'
  for e = 1, nentries do
    local id, k = ARGV[a], tonumber(ARGV[a + 1])
    local mine = owns(si, id)
    if mine and (k == 0 or not blocked[k]) then
      add_np(okey, maxlen, ARGV[a + 2], ARGV[a + 3])
      ids[#ids + 1] = id
      if has_attempts then cleared[#cleared + 1] = prefix .. id end
    elseif mine then
      moved[#moved + 1] = e - 1
    else
      conflicts[#conflicts + 1] = e - 1
    end
    a = a + 4
  end
  if minids[oi] ~= '' and #ids > 0 then trim[oi] = true end
  nentries = 0  -- the general loop below has nothing left to do
elseif keyed then
  local p = a
  for e = 1, nentries do
    local k = tonumber(ARGV[p + 2]); local nadds = tonumber(ARGV[p + 3])
    if k > 0 and not owns(tonumber(ARGV[p]), ARGV[p + 1]) then blocked[k] = true end
    p = p + 4
    for j = 1, nadds do p = p + 2 + tonumber(ARGV[p + 1]) end
  end
end
for e = 1, nentries do
  local si = tonumber(ARGV[a]); local id = ARGV[a + 1]; local k = 0
  if keyed then k = tonumber(ARGV[a + 2]); a = a + 1 end
  local nadds = tonumber(ARGV[a + 2])
  a = a + 3
  local mine = owns(si, id)
  if mine and (k == 0 or not blocked[k]) then
    for j = 1, nadds do
      local oi = tonumber(ARGV[a]); local nf = tonumber(ARGV[a + 1]); a = a + 2
      local okey = KEYS[oi + base]
      if maxlens[oi] == '' and nf == 4 then
        redis.call('XADD', okey, '*', ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
      elseif maxlens[oi] == '' and nf == 6 then
        redis.call('XADD', okey, '*', ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
                   ARGV[a + 4], ARGV[a + 5])
      else
        local args = {'XADD', okey}
        if maxlens[oi] ~= '' then
          args[3] = 'MAXLEN'; args[4] = '~'; args[5] = maxlens[oi]
        end
        args[#args + 1] = '*'
        for f = 0, nf - 1 do args[#args + 1] = ARGV[a + f] end
        redis.call(unpack(args))
      end
      a = a + nf
      if minids[oi] ~= '' then trim[oi] = true end
    end
    local ids = acks[si]
    if ids == nil then ids = {}; acks[si] = ids end
    ids[#ids + 1] = id
    if has_attempts then cleared[#cleared + 1] = names[si] .. '/' .. id end
  else
    for j = 1, nadds do a = a + 2 + tonumber(ARGV[a + 1]) end
    if mine then moved[#moved + 1] = e - 1 else conflicts[#conflicts + 1] = e - 1 end
  end
end
for si, ids in pairs(acks) do
  for i = 1, #ids, 1000 do
    redis.call('XACK', KEYS[si + base], group, unpack(ids, i, math.min(i + 999, #ids)))
  end
end
for i = 1, #cleared, 1000 do
  redis.call('HDEL', KEYS[1], unpack(cleared, i, math.min(i + 999, #cleared)))
end
for oi, _ in pairs(trim) do
  redis.call('XTRIM', KEYS[oi + base], 'MINID', '~', minids[oi])
end
if keyed then
  return {conflicts, moved, state_write(st, blocked)}
end
return conflicts
"""
)


class Add(NamedTuple):
    """One entry to add to ``stream`` in the commit: flat ``fields`` (``n``, name, ``p``, ...).

    A NamedTuple rather than a frozen dataclass: one is built per output event
    on the hot path, and a tuple is much cheaper than a frozen dataclass to create.
    """

    stream: str
    fields: Sequence[Any]


class Entry(NamedTuple):
    """An input event and what its commit writes (its outputs, or its dead letter)."""

    event: Event
    adds: Sequence[Add] = ()


class KeyedBatch(NamedTuple):
    """A stateful sink's batch: its entries and the state section the commit checks and writes.

    ``keys`` and ``args`` are the section's KEYS (the version counter, then the
    state keys) and ARGV, as :func:`topology.runtime.state.state_args` builds them;
    ``key_index[i]`` is entry i's state key, 1-based among the state keys (0: none, e.g.
    a dead letter, which changes no state); ``states`` the state keys' own records, in
    the section's order (what the commit reports on is the caller's business).
    """

    entries: Sequence[Entry]
    keys: list[str]
    args: list[Any]
    key_index: Sequence[int]
    states: Sequence[Any] = ()


class CommitResult(NamedTuple):
    """What a keyed commit left out: entries claimed away (``conflicts``), and entries
    still ours whose key's state moved since it was read (``moved``: handled again);
    ``version``: the version the changed states got (0: none, or not known)."""

    conflicts: list[int]
    moved: list[int]
    version: int = 0


def _pack(conn: Any, command: tuple[Any, ...]) -> bytes:
    """One command in RESP: hiredis's C packer, else the connection's own encoder."""
    packed = packed_or_none(command)
    return b"".join(conn.pack_command(*command)) if packed is None else packed


#: The async connection classes a blocking twin is made for, by class name.
_SYNC_TWINS = {
    "Connection": sync_connection.Connection,
    "SSLConnection": sync_connection.SSLConnection,
    "UnixDomainSocketConnection": sync_connection.UnixDomainSocketConnection,
}
#: Connection options carried over to the twin: where, who, how securely.
_SYNC_OPTIONS = (
    "host",
    "port",
    "path",
    "db",
    "username",
    "password",
    "credential_provider",
    "client_name",
    "protocol",
    "socket_connect_timeout",
    "socket_keepalive",
    "socket_keepalive_options",
)


def _sync_connection_kwargs(redis: Any) -> tuple[type, dict[str, Any]] | None:
    """The sync connection class and options that reach the same server as ``redis``.

    None for a client whose connections are of an unknown kind (the caller
    stays on the event loop). Replies stay bytes, and a reply has the deadline
    of the async client's commands (its socket timeout): a commit unanswered by
    then drops the connection and is retried, fenced, on a new one.
    """
    pool = getattr(redis, "connection_pool", None)
    if pool is None:
        return None
    cls = _SYNC_TWINS.get(pool.connection_class.__name__)
    if cls is None:
        return None
    given = pool.connection_kwargs
    options = {k: given[k] for k in _SYNC_OPTIONS if k in given}
    options.update({k: v for k, v in given.items() if k.startswith("ssl_")})
    options.update(decode_responses=False, socket_timeout=given.get("socket_timeout"))
    return cls, options


def attempts_field(stream: str, entry_id: str) -> str:
    """Field of the attempts hash for one event: ``<stream>/<entry id>``."""
    return f"{stream}/{entry_id}"


class PackedSender:
    """Sends an already packed command from the loop, on a connection of its own.

    An actor commits one batch at a time, so a connection of its own is almost
    always free: taking one from the pool and giving it back costs more Python
    than the script's round trip (the pool's lock, its connection checks and its
    observability hooks). The pool serves the rare overlapping call. It skips
    redis-py's own retry: the actor retries a failed commit itself, which the
    fencing makes safe.
    """

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._own: Any = None
        self._own_busy = False
        self._opened = 0.0  # when the own connection connected (monotonic)

    async def send(self, packed: bytes) -> Any:
        if self._own_busy:
            return await self._send_pooled(packed)
        conn = self._own
        if conn is None:
            conn = self._own = self.redis.connection_pool.make_connection()
        self._own_busy = True
        try:
            if conn.is_connected and opened_before_a_stall(conn, self._opened):
                await conn.disconnect(nowait=True)
            if not conn.is_connected:
                await conn.connect()
                self._opened = time.monotonic()
            return await _round_trip(conn, packed, check_health=False)
        finally:
            self._own_busy = False

    async def _send_pooled(self, packed: bytes) -> Any:
        pool = self.redis.connection_pool
        conn = await pool.get_connection()
        try:
            return await _round_trip(conn, packed, check_health=True)
        finally:
            await pool.release(conn)

    async def close(self) -> None:
        """Drop the own connection (idempotent; the next send makes a new one)."""
        conn, self._own = self._own, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)


async def _round_trip(conn: Any, packed: bytes, *, check_health: bool) -> Any:
    try:
        await conn.send_packed_command(packed, check_health=check_health)
        return await conn.read_response()
    except ResponseError:
        raise  # a complete error reply: the connection is in a clean state
    except RedisTimeoutError:
        await conn.disconnect(nowait=True)  # done by redis-py already; never reused
        raise missed(conn, conn.socket_timeout, "a commit") from None
    except BaseException:
        # Cancelled or failed half-way: a reply may still be on its way, so the
        # connection cannot be reused as is (the next call reconnects).
        await conn.disconnect(nowait=True)
        raise


class BlockingLink:
    """A sync connection to the server of an async client, for one thread's commands.

    Commands are sent pipelined and their replies read in order; a Redis error
    half-way leaves the connection closed (the next send reconnects).
    """

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        self._cls = cls
        self._options = options
        self._conn: Any = None
        self._opened = 0.0  # when the connection was made (monotonic)
        self.awaiting = 0  # replies sent for and not read yet

    @classmethod
    def twin_of(cls, redis: Any) -> BlockingLink | None:
        """A link to where ``redis`` connects; None for connections of an unknown kind."""
        via = _sync_connection_kwargs(redis)
        return None if via is None else cls(*via)

    def send(self, *commands: tuple[Any, ...]) -> None:
        """Send ``commands`` pipelined; :meth:`read` reads their replies in order."""
        assert not self.awaiting, "a reply of the blocking connection is still unread"
        conn = self._conn
        if conn is not None and opened_before_a_stall(conn, self._opened):
            conn.disconnect()
            conn = None
        if conn is None:
            conn = self._conn = self._cls(**self._options)
            self._opened = time.monotonic()
        try:
            conn.send_packed_command([_pack(conn, c) for c in commands], check_health=False)
        except RedisTimeoutError:
            conn.disconnect()
            raise missed(conn, conn.socket_timeout, "a commit") from None
        except BaseException:
            conn.disconnect()  # part of it may have gone: never reuse it as is
            raise
        self.awaiting = len(commands)

    def read(self) -> Any:
        conn = self._conn
        try:
            reply = conn.read_response()
        except ResponseError:
            self.awaiting -= 1
            if self.awaiting:  # replies of later commands are still to come
                self.awaiting = 0
                conn.disconnect()
            raise  # the last reply being an error leaves the connection clean
        except RedisTimeoutError:
            self.awaiting = 0
            conn.disconnect()
            raise missed(conn, conn.socket_timeout, "a commit") from None
        except BaseException:
            self.awaiting = 0
            conn.disconnect()  # a reply may be on its way: never reuse it as is
            raise
        self.awaiting -= 1
        return reply

    def call(self, command: tuple[Any, ...]) -> Any:
        self.send(command)
        return self.read()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self.awaiting = 0
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.disconnect()


class CommitMode:
    """One way of committing a batch; the :class:`Committer` runs one at a time."""

    name: ClassVar[str]
    #: The attempts hash is a key of the script (it shares the streams' slot).
    with_attempts: ClassVar[bool] = False

    def __init__(self, committer: Committer) -> None:
        self.committer = committer

    async def commit(self, entries: Sequence[Entry]) -> list[int]:
        """Commit ``entries``; the indexes of the conflicting ones."""
        raise NotImplementedError

    async def commit_keyed(self, batch: KeyedBatch) -> CommitResult:
        """Commit a stateful sink's batch with its states."""
        raise NotImplementedError


class ScriptCommit(CommitMode):
    """:data:`COMMIT_SCRIPT` with the attempts hash: all of a batch's effects at once."""

    name = FULL
    with_attempts = True

    async def commit(self, entries: Sequence[Entry]) -> list[int]:
        keys, args = self.committer.build(entries)
        return [int(i) for i in await self.committer.evalsha(keys, args) or ()]

    async def commit_keyed(self, batch: KeyedBatch) -> CommitResult:
        keys, args = self.committer.build(batch.entries, batch)
        return keyed_result(await self.committer.evalsha(keys, args))


class ScriptBesideAttempts(ScriptCommit):
    """The script on the streams (one cluster slot), the attempt counters cleared beside.

    On a cluster the attempts hash (slot of the deployment's tag) is never in
    the streams' slot. A crash in between only leaves a stale counter of an
    acked event.
    """

    name = NO_ATTEMPTS
    with_attempts = False

    async def commit(self, entries: Sequence[Entry]) -> list[int]:
        conflicts = await super().commit(entries)
        await self._clear_attempts(entries, conflicts)
        return conflicts

    async def commit_keyed(self, batch: KeyedBatch) -> CommitResult:
        result = await super().commit_keyed(batch)
        await self._clear_attempts(batch.entries, result.conflicts + result.moved)
        return result

    async def _clear_attempts(self, entries: Sequence[Entry], conflicts: list[int]) -> None:
        skip = set(conflicts)
        await self.committer.clear_attempts(
            [
                attempts_field(e.event.stream_name, e.event.id)
                for i, e in enumerate(entries)
                if i not in skip
            ]
        )


class SplitCommit(CommitMode):
    """The cross-slot fallback: ownership check, then the adds, then (every add
    confirmed) the acks, then the counters.

    Still fenced (an event claimed away writes nothing), but not atomic:
    at-least-once on the output streams.
    """

    name = SPLIT

    def __init__(self, committer: Committer) -> None:
        super().__init__(committer)
        self._replicas: dict[str, bool] = {}  # node -> has a replica, as its last ROLE said

    async def commit(self, entries: Sequence[Entry]) -> list[int]:
        owned = await self._owned(entries)
        await self._write(entries, owned)
        return [i for i, mine in enumerate(owned) if not mine]

    async def commit_keyed(self, batch: KeyedBatch) -> CommitResult:
        """Ownership check, then the states (checked and written in their own script),
        then the outputs and acks of the entries whose state was written.

        A crash between the states and the acks applies those events again on
        redelivery: keyed state is at-least-once in this mode.
        """
        entries, index = batch.entries, batch.key_index
        owned = await self._owned(entries)
        blocked = {index[i] for i, mine in enumerate(owned) if not mine and index[i]}
        args = list(batch.args)
        for k in blocked:  # keep (check only): a key of an event claimed away is not written
            args[2 + 3 * (k - 1) + 1] = "k"
            args[2 + 3 * (k - 1) + 2] = ""
        moved_keys = await self.committer.run_state_script(batch.keys, args)
        blocked.update(k + 1 for k in moved_keys)
        write = [mine and index[i] not in blocked for i, mine in enumerate(owned)]
        await self._write(entries, write)
        return CommitResult(
            [i for i, mine in enumerate(owned) if not mine],
            [i for i, mine in enumerate(owned) if mine and not write[i]],
        )

    async def _write(self, entries: Sequence[Entry], owned: Sequence[bool]) -> None:
        """Add and wait for every add, then ack, then clear the attempt counters, for
        the entries marked in ``owned``: the acks are only sent once every output is
        confirmed, so a node failing half-way leaves its events pending (their
        outputs may then be written twice, never lost)."""
        c = self.committer
        key_of = c._stream_key
        specs = c._streams()
        adds: list[tuple[Any, ...]] = []
        acks: dict[str, list[str]] = {}
        trim: set[str] = set()
        fields: list[str] = []
        for entry, mine in zip(entries, owned, strict=True):
            if not mine:
                continue
            for add in entry.adds:
                spec = specs.get(add.stream)
                args: list[Any] = ["XADD", key_of(add.stream)]
                if spec is not None and spec.max_len is not None:
                    args += ["MAXLEN", "~", spec.max_len]
                if spec is not None and spec.ttl is not None:
                    trim.add(add.stream)
                adds.append((*args, "*", *add.fields))
            acks.setdefault(entry.event.stream_name, []).append(entry.event.id)
            fields.append(attempts_field(entry.event.stream_name, entry.event.id))
        if not acks:
            return
        now_ms = int(time.time() * 1000)
        for stream in trim:
            ttl = specs[stream].ttl or 0
            adds.append(("XTRIM", key_of(stream), "MINID", "~", max(0, now_ms - int(ttl * 1000))))
        if adds:
            await self._add_all(adds)  # raises if any add failed: nothing is acked then
        ack = c.redis.pipeline(transaction=False)
        for stream, ids in acks.items():
            ack.execute_command("XACK", key_of(stream), c.group, *ids)
        await ack.execute()
        await c.clear_attempts(fields)

    async def _add_all(self, adds: list[tuple[Any, ...]]) -> None:
        """Run the adds; on a cluster, per node on one connection each, followed by
        ``WAIT`` when the node has a replica.

        Redis Cluster replicates asynchronously: an add a master confirmed, then
        lost with it before its replica had it, would be gone while the input's
        ack (on another node) survives. Waiting for one replica before acking
        closes that window; no replica answering in time fails the commit
        (retried: a duplicate, never a loss).
        """
        redis = self.committer.redis
        if not hasattr(redis, "nodes_manager"):
            pipe = redis.pipeline(transaction=False)
            for command in adds:
                pipe.execute_command(*command)
            await pipe.execute()
            return
        by_node: dict[str, list[tuple[Any, ...]]] = {}
        for command in adds:
            by_node.setdefault(redis.get_node_from_key(command[1]).name, []).append(command)
        await asyncio.gather(*(self._add_on_node(commands) for commands in by_node.values()))

    async def _add_on_node(self, commands: list[tuple[Any, ...]]) -> None:
        """One node's adds, then ``WAIT`` and ``ROLE`` in the same round trip.

        ``ROLE`` keeps what is known of the node's replicas current at every
        commit: a replica that attached since the last commit (the old master
        back after a failover) makes unconfirmed adds fail the commit, to be
        retried, rather than be acked on the word of a node that may be the
        next one to die. A node without a replica cannot fail over: its adds
        are as safe as its own persistence, and are not waited for.
        """
        redis = self.committer.redis
        key = commands[0][1]
        node = redis.get_node_from_key(key)
        known = self._replicas.get(node.name)
        if known is None:
            known = self._replicas[node.name] = (
                _replica_count(await node.execute_command("ROLE")) > 0
            )
        wait = ("WAIT", 1, REPLICA_WAIT_MS) if known else ("WAIT", 0, 0)  # 0 0: at once
        replies = await self.committer.sender_for_cluster.send_once(
            key, [*commands, wait, ("ROLE",)]
        )
        replicas = _replica_count(replies[-1])
        self._replicas[node.name] = replicas > 0
        if replicas and int(replies[-2]) < 1:
            why = f"within {REPLICA_WAIT_MS} ms" if known else "(it attached since the last commit)"
            raise RedisTimeoutError(
                f"outputs on {node.name} not confirmed by its replica {why}: "
                "not acking their inputs yet"
            )

    async def _owned(self, entries: Sequence[Entry]) -> list[bool]:
        """Whether each entry is still pending on this consumer. A check that errors
        (a node away) raises, to be retried: only a clear answer counts as not owned."""
        c = self.committer
        check = c.redis.pipeline(transaction=False)
        for entry in entries:
            ev = entry.event
            check.xpending_range(
                c._stream_key(ev.stream_name), c.group, ev.id, ev.id, 1, consumername=c.consumer
            )
        owned: list[bool] = []
        for reply in await check.execute(raise_on_error=False):
            if isinstance(reply, Exception):
                if not is_nogroup(reply):  # NOGROUP: the group is gone, nothing is ours
                    raise reply
                owned.append(False)
            else:
                owned.append(isinstance(reply, list) and bool(reply))
        return owned


def _replica_count(role: Any) -> int:
    """Connected replicas in a ``ROLE`` reply (0 from a node that is not a master)."""
    if not role or role[0] not in (b"master", "master"):
        return 0
    return len(role[2])


def keyed_result(reply: Any) -> CommitResult:
    """The keyed script's reply ``{conflicts, moved, version}``."""
    conflicts, moved, version = reply
    return CommitResult(
        [int(i) for i in conflicts or ()], [int(i) for i in moved or ()], int(version)
    )


_MODES: dict[str, type[CommitMode]] = {
    m.name: m for m in (ScriptCommit, ScriptBesideAttempts, SplitCommit)
}


class Committer:
    """Commits batches for one consumer of one sink, in the best mode its keys allow.

    ``streams`` is looked up at each commit (a callable), so a reload that
    changes an output's ``max_len``/``ttl`` applies to the next batch.
    """

    def __init__(
        self,
        redis: Any,
        *,
        group: str,
        consumer: str,
        attempts_key: str,
        stream_key: Callable[[str], str],
        streams: Callable[[], Mapping[str, StreamSpec]],
    ) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.attempts_key = attempts_key
        self._stream_key = stream_key
        self._streams = streams
        # register_script: EVALSHA, and SCRIPT LOAD on NOSCRIPT (a restarted server).
        self._script = redis.register_script(COMMIT_SCRIPT)
        self._mode: CommitMode = ScriptCommit(self)
        plain = isinstance(redis, AsyncRedis) and not getattr(
            redis, "single_connection_client", True
        )
        #: A plain client's commits are packed by hiredis and sent on a connection of
        #: the committer's own; cluster and single-connection clients go through redis-py.
        self._packer = packed_or_none if plain else None
        self._sender = PackedSender(redis)
        #: The blocking side (the actor's handler thread): plain clients of a known kind.
        self._blocking = BlockingLink.twin_of(redis) if plain else None
        self._sent_keys_args: tuple[list[str], list[Any]] | None = None
        self._state_script: Any = None
        #: Sends a node's adds on one connection, never re-sent (the cross-slot commit).
        self.sender_for_cluster = Connection(redis)

    @property
    def mode(self) -> str:
        """FULL, then NO_ATTEMPTS / SPLIT once keys turn out to span cluster slots."""
        return self._mode.name

    @mode.setter
    def mode(self, name: str) -> None:
        self._mode = _MODES[name](self)

    @property
    def can_block(self) -> bool:
        """True when :meth:`commit_blocking` can be used: a plain client of a known kind."""
        return self._blocking is not None

    def build(
        self, entries: Sequence[Entry], keyed: KeyedBatch | None = None
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of the script for ``entries`` (separate for tests and for reuse);
        with ``keyed``, the keyed shape carrying its state section."""
        index: dict[str, int] = {}
        order: list[str] = []

        def idx(stream: str) -> int:
            i = index.get(stream)
            if i is None:
                order.append(stream)
                i = index[stream] = len(order)
            return i

        if keyed is not None:
            body = self._keyed_body(keyed, index, idx)
        else:
            body = self._uniform_body(entries, idx) or self._general_body(entries, index, idx)
        specs = self._streams()
        head: list[Any] = [
            self.group,
            self.consumer,
            "1" if self._mode.with_attempts else "0",
            len(order),
        ]
        now_ms: int | None = None
        for name in order:
            spec = specs.get(name)
            maxlen = "" if spec is None or spec.max_len is None else spec.max_len
            minid: Any = ""
            if spec is not None and spec.ttl is not None:
                if now_ms is None:
                    now_ms = int(time.time() * 1000)
                minid = max(0, now_ms - int(spec.ttl * 1000))
            head += [name, maxlen, minid]
        keys = [self._stream_key(name) for name in order]
        if self._mode.with_attempts:
            keys.insert(0, self.attempts_key)
        if keyed is not None:
            keys += keyed.keys
        return keys, head + body

    @staticmethod
    def _uniform_body(entries: Sequence[Entry], idx: Callable[[str], int]) -> list[Any] | None:
        """The compact ARGV of a map stage's batch, or None when the batch is not one.

        Uniform: every entry from one input stream with exactly one output, all
        to one stream, each with plain fields (a name and a payload: ``is_plain``). Then
        the script needs only ``id name payload`` per event (3 arguments instead
        of 9): less to pack, send and walk in Lua, the same effects.
        """
        first = entries[0]
        if len(first.adds) != 1:
            return None
        source = first.event.stream_name
        output = first.adds[0].stream
        body: list[Any] = [len(entries), "u", 0, 0]
        extend = body.extend
        for event, adds in entries:
            if len(adds) != 1 or event.stream_name != source:
                return None
            stream, fields = adds[0]
            if stream != output or not is_plain(fields):
                return None
            extend((event.id, fields[1], fields[3]))
        body[2] = idx(source)
        body[3] = idx(output)
        return body

    @staticmethod
    def _general_body(
        entries: Sequence[Entry], index: dict[str, int], idx: Callable[[str], int]
    ) -> list[Any]:
        body: list[Any] = [len(entries), "g"]
        append, extend, known = body.append, body.extend, index.get
        for event, adds in entries:
            si = known(event.stream_name) or idx(event.stream_name)
            extend((si, event.id, len(adds)))
            for stream, fields in adds:
                append(known(stream) or idx(stream))
                append(len(fields))
                extend(fields)
        return body

    @staticmethod
    def _keyed_body(
        keyed: KeyedBatch, index: dict[str, int], idx: Callable[[str], int]
    ) -> list[Any]:
        uniform = Committer._keyed_uniform_body(keyed, idx)
        if uniform is not None:
            return uniform
        body: list[Any] = [len(keyed.entries), "k", *keyed.args]
        append, extend, known = body.append, body.extend, index.get
        for (event, adds), k in zip(keyed.entries, keyed.key_index, strict=True):
            extend((known(event.stream_name) or idx(event.stream_name), event.id, k, len(adds)))
            for stream, fields in adds:
                append(known(stream) or idx(stream))
                append(len(fields))
                extend(fields)
        return body

    @staticmethod
    def _keyed_uniform_body(keyed: KeyedBatch, idx: Callable[[str], int]) -> list[Any] | None:
        """The compact ARGV of a keyed map stage's batch (``ku``: ``id key name payload``
        per event, as :meth:`_uniform_body` for a stateless one), or None when the batch
        is not one (see there; a dead letter's entry is never plain)."""
        entries = keyed.entries
        first = entries[0]
        if len(first.adds) != 1:
            return None
        source = first.event.stream_name
        output = first.adds[0].stream
        body: list[Any] = [len(entries), "ku", *keyed.args, 0, 0]
        extend = body.extend
        for (event, adds), k in zip(entries, keyed.key_index, strict=True):
            if len(adds) != 1 or event.stream_name != source:
                return None
            stream, fields = adds[0]
            if stream != output or not is_plain(fields):
                return None
            extend((event.id, k, fields[1], fields[3]))
        at = 2 + len(keyed.args)
        body[at] = idx(source)
        body[at + 1] = idx(output)
        return body

    async def commit_keyed(self, batch: KeyedBatch) -> CommitResult:
        """:meth:`commit` for a stateful sink: the states checked and written with the
        outputs and acks; entries whose key's state moved come back in ``moved``."""
        if not batch.entries:
            return CommitResult([], [])
        while True:
            try:
                return await self._mode.commit_keyed(batch)
            except (ResponseError, RedisClusterException) as exc:
                if self.mode == SPLIT or not _is_cross_slot(exc):
                    raise
                self._downgrade(keyed=True)

    async def run_state_script(self, keys: list[str], args: list[Any]) -> list[int]:
        """The state section alone (:data:`STATE_SCRIPT`): 0-based indexes of the keys
        whose version moved."""
        if self._state_script is None:
            self._state_script = self.redis.register_script(STATE_SCRIPT)
        if len(keys) == 1:
            return []
        return [int(i) for i in await self._state_script(keys=keys, args=args) or ()]

    async def commit(self, entries: Sequence[Entry]) -> list[int]:
        """Commit ``entries`` in one round trip; returns indexes of conflicting entries."""
        if not entries:
            return []
        while True:
            try:
                return await self._mode.commit(entries)
            except (ResponseError, RedisClusterException) as exc:
                if self.mode == SPLIT or not _is_cross_slot(exc):
                    raise
                self._downgrade()

    async def evalsha(self, keys: list[str], args: list[Any]) -> Any:
        """Run the script: packed by hiredis and sent directly when the client allows."""
        packer = self._packer
        packed = (
            None
            if packer is None
            else packer(("EVALSHA", self._script.sha, len(keys), *keys, *args))
        )
        if packer is None or packed is None:
            return await self._script(keys=keys, args=args)
        try:
            return await self._sender.send(packed)
        except NoScriptError:  # a restarted or flushed server: load, run again
            self._script.sha = await self.redis.script_load(COMMIT_SCRIPT)
            return await self._script(keys=keys, args=args)

    async def clear_attempts(self, fields: Sequence[str]) -> None:
        """Delete the attempt counters of committed events, beside the commit.

        The commit went through: a failure here must not make the batch look
        uncommitted (a retried commit would count its events as conflicts). It is
        tried again while the server is away for a moment, then left: a counter of
        an acked event is never read again, only kept until this is retried.
        """
        if not fields:
            return
        backoff = Backoff(ERROR_BACKOFF_FIRST, CLEANUP_BACKOFF_CAP)
        for _ in range(CLEANUP_TRIES):
            try:
                await self.redis.hdel(self.attempts_key, *fields)
                return
            except Exception as exc:
                if not is_transient(exc):
                    log.warning(
                        "sink %s: the commit went through but its %d attempt counter(s) "
                        "were not cleared (%s); they stay in %s",
                        self.group,
                        len(fields),
                        describe_error(exc),
                        self.attempts_key,
                    )
                    return
                await asyncio.sleep(backoff.next())  # a backoff, not a synchronisation
        log.warning(
            "sink %s: %d attempt counter(s) of committed events not cleared: Redis away",
            self.group,
            len(fields),
        )

    async def count_attempts(self, events: Sequence[Event]) -> list[int]:
        """``HINCRBY`` each event's failed-attempts counter; the new counts."""
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            pipe.hincrby(self.attempts_key, attempts_field(event.stream_name, event.id), 1)
        return [int(n) for n in await pipe.execute()]

    async def close(self) -> None:
        """Drop the committer's own connection (idempotent; the next commit makes a new one)."""
        await self._sender.close()

    # -- the blocking side: the actor's handler thread ---------------------------------

    def _link(self) -> BlockingLink:
        assert self._blocking is not None, "a plain client only (see can_block)"
        return self._blocking

    def commit_blocking(self, entries: Sequence[Entry]) -> list[int]:
        """:meth:`commit` from a thread, on a connection of its own (plain clients only).

        Same script, same arguments, same fencing; a Redis error leaves the
        connection closed (the next call reconnects) and is the caller's to retry.
        """
        if not entries:
            return []
        self.send_commit_blocking(entries)
        return self.finish_commit_blocking()

    def send_commit_blocking(
        self, entries: Sequence[Entry], keyed: KeyedBatch | None = None
    ) -> None:
        """The first half of :meth:`commit_blocking`: send, do not wait for the reply.

        :meth:`finish_commit_blocking` reads it (:meth:`finish_commit_keyed_blocking`
        with ``keyed``, a stateful sink's batch of ``entries``); nothing else may use the
        blocking connection in between. If sending fails, finishing raises ``ConnectionError``.
        """
        keys, args = self.build(entries, keyed)
        self._sent_keys_args = (keys, args)
        self._link().send(("EVALSHA", self._script.sha, len(keys), *keys, *args))

    def finish_commit_blocking(self) -> list[int]:
        """The reply of the commit :meth:`send_commit_blocking` sent: the conflicts."""
        return [int(i) for i in self._finish_blocking() or ()]

    def finish_commit_keyed_blocking(self) -> CommitResult:
        """The reply of the keyed commit :meth:`send_commit_blocking` sent."""
        return keyed_result(self._finish_blocking())

    def commit_keyed_blocking(self, batch: KeyedBatch) -> CommitResult:
        """:meth:`commit_keyed` from a thread (see :meth:`commit_blocking`)."""
        if not batch.entries:
            return CommitResult([], [])
        self.send_commit_blocking(batch.entries, batch)
        return self.finish_commit_keyed_blocking()

    def call_blocking(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``commands`` pipelined on the blocking connection; their replies."""
        link = self._link()
        link.send(*commands)
        return [link.read() for _ in commands]

    def _finish_blocking(self) -> Any:
        sent, self._sent_keys_args = self._sent_keys_args, None
        link = self._link()
        if sent is None or not link.awaiting:
            raise RedisConnectionError("the commit was not sent")
        try:
            reply = link.read()
        except NoScriptError:  # a restarted or flushed server: load, run again
            keys, args = sent
            self._script.sha = link.call(("SCRIPT", "LOAD", COMMIT_SCRIPT)).decode()
            reply = link.call(("EVALSHA", self._script.sha, len(keys), *keys, *args))
        return reply

    def count_attempts_blocking(self, events: Sequence[Event]) -> list[int]:
        """:meth:`count_attempts` from the thread."""
        commands = [
            ("HINCRBY", self.attempts_key, attempts_field(e.stream_name, e.id), 1) for e in events
        ]
        link = self._link()
        link.send(*commands)
        return [int(link.read()) for _ in commands]

    def close_blocking(self) -> None:
        """Drop the blocking side's connection (from the thread that uses it)."""
        if self._blocking is not None:
            self._blocking.close()

    def _downgrade(self, *, keyed: bool = False) -> None:
        if self.mode == FULL:  # see ScriptBesideAttempts
            self.mode = NO_ATTEMPTS
            log.info(
                "sink %s: Redis Cluster: attempt counters are cleared beside the commit",
                self.group,
            )
            return
        self.mode = SPLIT
        log.warning(
            "sink %s: its input, output and dead-letter streams are in different Redis "
            "Cluster slots, so a batch cannot be committed in one script: forwarding is "
            "at-least-once from now on (a crash between the adds and the acks may duplicate "
            "outputs). Give the streams of one flow a common hash tag, e.g. '{orders}in' and "
            "'{orders}out', to keep exactly-once.",
            self.group,
        )
        if keyed:
            log.warning(
                "sink %s: its keyed state is not in the Redis Cluster slot of its streams: "
                "keyed state is at-least-once from now on (a crash between the state write "
                "and the acks applies those events again). Give the sink's streams (and its "
                "outputs) a common hash tag to keep exactly-once.",
                self.group,
            )
