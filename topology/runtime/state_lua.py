"""The Lua text of keyed state, shared by two scripts.

Its own module because both :mod:`topology.runtime.state` (the state step on its
own) and :mod:`topology.runtime.commit` (the commit script that carries it)
need it, and ``state`` imports ``commit`` through the handlers.
"""

from __future__ import annotations

__all__ = ["STATE_LUA", "STATE_SCRIPT"]

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
#: ``DEL``; it returns the version written (0 if none). A script that skips a
#: key's events for another reason (an event claimed by another consumer) blocks
#: that key too before writing.
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
  return version or 0
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
