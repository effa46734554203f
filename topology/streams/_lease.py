"""Leases: a key holding its holder's id with a TTL, so one instance does a job at a time."""

from __future__ import annotations

__all__ = ["EXTEND_LEASE_SCRIPT", "RELEASE_LEASE_SCRIPT"]

#: Delete the lease (KEYS[1]) only if ARGV[1] still holds it: a holder that paused
#: past its TTL must not delete the lease its successor now holds.
RELEASE_LEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: Renew the lease (KEYS[1]) for ARGV[2] ms only if ARGV[1] still holds it; 1 if renewed.
EXTEND_LEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
