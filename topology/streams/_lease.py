"""Leases: a key holding its holder's id with a TTL, so one instance does a job at a time."""

from __future__ import annotations

__all__ = ["RELEASE_LEASE_SCRIPT"]

#: Delete the lease (KEYS[1]) only if ARGV[1] still holds it: a holder that paused
#: past its TTL must not delete the lease its successor now holds.
RELEASE_LEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
