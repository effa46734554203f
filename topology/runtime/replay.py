"""Dead letters back to a stream, each exactly once: the move is one server-side step.

A dead letter (``Actor._dead_letter``) carries the event's own fields (pulse's
``n``, ``p`` and ``t``) and the engine's: ``origin_stream``, ``origin_id``,
``sink``, ``attempts``, ``error_type``, ``error``. Replaying one adds a new
entry with the event's own fields only to its origin stream (or to the stream
asked for) and deletes it from the dead-letter stream, both in :data:`REPLAY_SCRIPT`.

Redis runs a script without interleaving other commands and finishes a
script the client stopped waiting for, so a replay killed at any moment leaves
every dead letter either moved (added once, gone from the dead-letter stream)
or untouched; running it again moves the rest and never adds one twice. Two
replays running at once cannot both move an entry: the script re-reads it by
id and skips it when it is gone.

On Redis Cluster a script only touches keys of one hash slot. When the
dead-letter stream and a target stream hash to different slots (the default:
stream keys carry no hash tag) that target is refused, nothing of it moves,
and the result says why: a move across slots would be two separate commands,
and a failure between them would duplicate or lose the event. Streams that
share a hash tag (``redis.prefix: "{orders}"``) replay exactly once there too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from topology.streams import Connection

__all__ = ["REPLAY_SCRIPT", "ReplayResult", "replay"]

#: KEYS = the dead-letter stream, the target stream. ARGV = error type to match
#: ("" = any), origin stream required ("" = any), MAXLEN of the target ("" = none),
#: then the dead letters' entry ids. Per id still present and matching: XADD its
#: n/p/t fields to the target, then XDEL it. Returns [old id, new id, ...] of the moved.
REPLAY_SCRIPT = r"""
local error_type, origin, maxlen = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TYPE', KEYS[2])['ok']
if t ~= 'stream' and t ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' is a ' .. t .. ', not a stream')
end
local moved = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local rows = redis.call('XRANGE', KEYS[1], id, id)
  if #rows == 1 then
    local f, own = rows[1][2], {}
    for j = 1, #f, 2 do own[f[j]] = f[j + 1] end
    if own['n'] ~= nil and (error_type == '' or own['error_type'] == error_type)
       and (origin == '' or own['origin_stream'] == origin) then
      local add = {'XADD', KEYS[2]}
      if maxlen ~= '' then
        add[#add + 1] = 'MAXLEN'; add[#add + 1] = '~'; add[#add + 1] = maxlen
      end
      add[#add + 1] = '*'
      add[#add + 1] = 'n'; add[#add + 1] = own['n']
      add[#add + 1] = 'p'; add[#add + 1] = own['p'] or ''
      if own['t'] ~= nil then add[#add + 1] = 't'; add[#add + 1] = own['t'] end
      local new_id = redis.call(unpack(add))
      redis.call('XDEL', KEYS[1], id)
      moved[#moved + 1] = id
      moved[#moved + 1] = new_id
    end
  end
end
return moved
"""

#: Dead letters read per XRANGE, and ids per script call.
PAGE = 500


@dataclass
class ReplayResult:
    """What a replay moved (or, dry, would move) per target stream, and what it left."""

    moved: dict[str, int] = field(default_factory=dict)
    #: reason -> count of dead letters left in place (no origin, unknown stream...).
    skipped: dict[str, int] = field(default_factory=dict)
    #: target -> why it was refused (cross-slot on a cluster).
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.moved.values())

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        _text(k): _text(v)
        for k, v in raw.items()
        if _text(k) in ("n", "origin_stream", "error_type")
    }


@dataclass
class _Replay:
    conn: Connection
    dead_letter: str
    streams: Mapping[str, Any]  # the config's stream specs (targets must be among them)
    to: str | None
    error_type: str | None
    dry_run: bool
    result: ReplayResult = field(default_factory=ReplayResult)

    def target_of(self, fields: dict[str, str]) -> str | None:
        """Where a dead letter goes, or None (counted as skipped) when it stays."""
        if "n" not in fields:
            self.result.skip("not an event (no name field)")
            return None
        if self.error_type is not None and fields.get("error_type") != self.error_type:
            self.result.skip(f"error_type is not {self.error_type}")
            return None
        target = self.to or fields.get("origin_stream")
        if not target:
            self.result.skip("no origin_stream (give --to)")
            return None
        if target not in self.streams:
            self.result.skip(f"origin stream {target!r} is not in the config")
            return None
        if target in self.result.refused:
            return None
        if (
            len(
                self.conn.slot_groups(
                    [self.conn.stream_key(self.dead_letter), self.conn.stream_key(target)]
                )
            )
            > 1
        ):
            self.result.refused[target] = (
                f"{self.dead_letter} and {target} are in different cluster hash slots: "
                "a move would not be one atomic step; give the streams a common hash tag "
                "(redis.prefix: '{<tag>}')"
            )
            return None
        return target

    async def move(self, script: Any, target: str, ids: list[str]) -> None:
        if self.dry_run:
            self.result.moved[target] = self.result.moved.get(target, 0) + len(ids)
            return
        max_len = getattr(self.streams[target], "max_len", None)
        keys = [self.conn.stream_key(self.dead_letter), self.conn.stream_key(target)]
        args = [self.error_type or "", "" if self.to else target, max_len or "", *ids]
        reply = await script(keys=keys, args=args)
        self.result.moved[target] = self.result.moved.get(target, 0) + len(reply) // 2


async def replay(
    conn: Connection,
    dead_letter: str,
    streams: Mapping[str, Any],
    *,
    to: str | None = None,
    error_type: str | None = None,
    dry_run: bool = False,
    progress: Callable[[ReplayResult], None] | None = None,
) -> ReplayResult:
    """Move the dead letters of ``dead_letter`` back, each exactly once (see the module)."""
    run = _Replay(conn, dead_letter, streams, to, error_type, dry_run)
    script = conn.redis.register_script(REPLAY_SCRIPT)
    key = conn.stream_key(dead_letter)
    lower = "-"
    while True:
        page = await conn.redis.xrange(key, min=lower, max="+", count=PAGE)
        batches: dict[str, list[str]] = {}
        for raw_id, raw_fields in page:
            target = run.target_of(_fields(raw_fields))
            if target is not None:
                batches.setdefault(target, []).append(_text(raw_id))
        for target, ids in batches.items():
            await run.move(script, target, ids)
        if progress is not None:
            progress(run.result)
        if len(page) < PAGE:
            return run.result
        lower = f"({_text(page[-1][0])}"
