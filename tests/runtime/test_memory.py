"""A worker's memory is bounded in bytes: large events are read a few at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from topology.server import ServerProcess

CONFIG = """\
version: 1
name: mem
streams: {{in: {{}}, out: {{}}}}
sinks:
  fwd:
    streams: [in]
    handler: mem_handlers:forward
    outputs: [out]
    start: oldest
    max_batch_bytes: {bound}
"""

HANDLERS = "from topology import Emit\n\ndef forward(event):\n    return Emit('e', event.payload)\n"

MB = 1_000_000
#: Bytes in hand: two reads of half the bound, their outputs and the packed commit.
HELD = 3
#: What else may differ between two runs of the same worker (buffers, the allocator).
SLACK = 16 * MB
#: glibc raises its mmap threshold as large blocks are freed, then keeps freed blocks in
#: its heap: the peak would show its retention policy, not what the worker holds. A fixed
#: threshold hands each large block back when it is freed.
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _peak_rss(tmp_path: Path, url: str, bound: int) -> int:
    """Peak resident bytes of a worker that forwards everything in ``in`` and exits."""
    (tmp_path / "mem_handlers.py").write_text(HANDLERS)
    config = tmp_path / "mem.yaml"
    config.write_text(CONFIG.format(bound=bound))
    argv = ["run", str(config), "--redis-url", url, "--quiet", "--no-watch"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "topology.cli", *argv, "--stop-when-idle", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **ALLOCATOR},
    )
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    return usage.ru_maxrss * 1024


def _fill(client: redis.Redis, n: int, size: int) -> None:
    payload = b"x" * size
    for i in range(n):
        client.xadd("pulse:stream:in", {"n": f"e{i}", "p": payload})


def test_a_worker_forwarding_1mb_events_stays_under_its_bound(
    fresh_server: ServerProcess, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(fresh_server.url)
    bound = 8 * MB
    try:
        _fill(client, 100, 100)
        small = _peak_rss(tmp_path, fresh_server.url, bound)  # the worker's fixed overhead
        client.flushall()
        _fill(client, 100, MB)
        big = _peak_rss(tmp_path, fresh_server.url, bound)
        assert client.xlen("pulse:stream:out") == 100
    finally:
        client.close()
    assert big - small < HELD * bound + SLACK, f"{(big - small) / MB:.0f} MB over the baseline"
