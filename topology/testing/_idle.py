"""When a topology under test has nothing left to do.

Idle means: no actor holds an event, every source has ended, and on every
stream a sink reads, that sink's consumer group has read up to the stream's
last entry and has nothing pending (an event waiting for a retry stays
pending, so a retried event keeps the topology busy until it succeeds or is
dead-lettered).

Redis is the witness, read without a transaction (a cluster cannot run one
across slots): one look could read stream A before a commit and stream B after
it, and see both clean while the commit just wrote to A. So two looks must
agree: any commit, read or add between them moves a last-delivered id, a
last-generated id or a pending count, and the topology is idle only when two
consecutive clean looks saw the very same positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from topology.config.model import Topology
from topology.streams import Connection

__all__ = ["Look", "look"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id(value: Any) -> tuple[int, int]:
    ms, _, seq = _text(value).partition("-")
    return (int(ms), int(seq or 0))


@dataclass
class Look:
    """One reading of every sink's groups: positions, and why it is not idle (if it is not)."""

    positions: list[tuple[str, ...]] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.busy


def _groups_by_name(reply: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(reply, list):
        return {}
    return {_text(group.get("name")): group for group in reply}


async def look(conn: Connection, topology: Topology) -> Look:
    """Read the groups of every sink on every stream it reads."""
    reads = sorted(
        {(stream, sink.name) for sink in topology.sinks.values() for stream in sink.stream_names}
    )
    streams = sorted({stream for stream, _ in reads})
    pipe = conn.redis.pipeline(transaction=False)
    for stream in streams:
        key = conn.stream_key(stream)
        pipe.xinfo_stream(key)
        pipe.xinfo_groups(key)
    replies = await pipe.execute(raise_on_error=False)
    info = {s: replies[2 * i] for i, s in enumerate(streams)}
    groups = {s: _groups_by_name(replies[2 * i + 1]) for i, s in enumerate(streams)}
    result = Look()
    for stream, sink in reads:
        stream_info = info[stream]
        last = _id(stream_info["last-generated-id"]) if isinstance(stream_info, dict) else (0, 0)
        group = groups[stream].get(sink)
        if group is None:
            result.busy.append(f"sink {sink}: no consumer group on stream {stream} yet")
            result.positions.append((stream, sink, "-"))
            continue
        pending = int(group.get("pending") or 0)
        delivered = _id(group.get("last-delivered-id") or "0-0")
        result.positions.append((stream, sink, f"{delivered}", f"{last}", str(pending)))
        if pending:
            result.busy.append(f"sink {sink}: {pending} event(s) of stream {stream} pending")
        if delivered < last:
            lag = group.get("lag")
            count = f"{lag} event(s)" if lag is not None else "events"
            result.busy.append(f"sink {sink}: {count} of stream {stream} not read yet")
    return result
