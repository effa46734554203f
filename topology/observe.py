"""One look at a running deployment: what ``status``, ``graph --live`` and the dashboard show.

:func:`collect` reads the deployment's Redis once — per sink and stream the
consumer group (consumers, live or not, pending, lag), the dead letters each
sink wrote (their ``sink`` field; a shared dead-letter stream is read once, in
pages, newest first, at most ``DEAD_SCAN_LIMIT`` entries: past that a count is
of the newest, shown as ``N+``), a stateful sink's number of state keys, the
length of every stream, each source's state and lease, each worker's heartbeat,
and the published config version — through the modules that own those keys
(``topology.streams`` for stream keys, ``runtime.workers``, ``runtime.deployment``,
``runtime.keys``). The three views format the same plain data, so they never
disagree about a number, and a figure added here shows up in all of them.

:func:`annotate` copies those numbers onto a graph of ``topology.graph.build``
for the diagrams.
"""

from __future__ import annotations

from typing import Any

__all__ = ["annotate", "collect"]


def _s(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _get(info: dict[Any, Any], key: str) -> Any:
    return _s(info.get(key, info.get(key.encode())))


#: Entries per XREVRANGE while counting dead letters per sink, and the most read:
#: past it the counts are of the newest entries only (``status`` stays quick).
_DEAD_PAGE = 1000
DEAD_SCAN_LIMIT = 100_000


def _live_after_ms(ack_grace: float) -> int:
    """Idle time past which a consumer counts as dead: it has not even tried to read."""
    from topology.runtime.actor import READ_BLOCK

    return int(max(ack_grace, 2 * READ_BLOCK) * 1000)


async def _dead_letters_by_sink(client: Any, key: str) -> tuple[dict[str, int], int]:
    """Entries of a dead-letter stream per the ``sink`` that wrote them ("" when none did),
    over its newest ``DEAD_SCAN_LIMIT`` entries; and the stream's length."""
    counts: dict[str, int] = {}
    upper, read = "+", 0
    while read < DEAD_SCAN_LIMIT:
        page = min(_DEAD_PAGE, DEAD_SCAN_LIMIT - read)
        entries = await client.xrevrange(key, max=upper, min="-", count=page)
        for _, fields in entries:
            sink = _s(fields.get(b"sink", fields.get("sink", b"")))
            counts[sink] = counts.get(sink, 0) + 1
        read += len(entries)
        if len(entries) < page:
            break
        upper = f"({_s(entries[-1][0])}"
    length = await client.xlen(key) if read >= DEAD_SCAN_LIMIT else read
    return counts, int(length)


async def _group_info(client: Any, conn: Any, key: str, group: str, live_ms: int) -> dict[str, Any]:
    """One group on one stream. Its lag is :func:`~topology.streams.read_group_lag`'s
    (a lag Redis 7.0 misreports is not believed; entries trimmed before the group
    read them are ``trimmed_unread``, lost to it, not lag)."""
    from redis.exceptions import ResponseError

    from topology.streams import read_group_lag

    out: dict[str, Any] = {"exists": True, "length": await client.xlen(key), "group": False}
    if out["length"] == 0 and not await client.exists(key):
        return {"exists": False, "length": 0, "group": False}
    try:
        groups = await client.xinfo_groups(key)
        state = await read_group_lag(conn, key, group)
    except ResponseError:
        return out
    for info in groups:
        if _get(info, "name") != group:
            continue
        out.update(
            group=True,
            pending=int(_get(info, "pending") or 0),
            lag=None if state is None else state.lag,
            last_delivered_id=_get(info, "last-delivered-id"),
            trimmed_unread=None if state is None else state.trimmed_unread,
            trimmed_text=None if state is None else state.trimmed_text,
        )
        consumers = await client.xinfo_consumers(key, group)
        out["consumers"] = [
            {
                "name": _get(c, "name"),
                "pending": int(_get(c, "pending") or 0),
                "idle_ms": int(_get(c, "idle") or 0),
                "live": int(_get(c, "idle") or 0) <= live_ms,
            }
            for c in consumers
        ]
    return out


async def _sources(client: Any, topology: Any) -> dict[str, Any]:
    from topology.runtime.keys import EngineKeys

    keys = EngineKeys(topology.name)
    sources: dict[str, Any] = {}
    for name in sorted(topology.sources):
        state = {_s(k): _s(v) for k, v in (await client.hgetall(keys.source_state(name))).items()}
        holder = _s(await client.get(keys.source_lease(name)))
        if "failed" in state:
            summary = f"failed: {state['failed']}"
        elif "done" in state:
            summary = f"ended ({state.get('produced', '?')} events)"
        elif holder:
            summary = f"running on {holder}"
        else:
            summary = "not running"
        sources[name] = {"state": summary, "lease": holder, **state}
    return sources


async def _published(client: Any, deployment: str) -> dict[str, Any] | None:
    """The version ``apply`` published for the deployment (its text left out), or None."""
    from topology.runtime.deployment import read_published

    published = await read_published(client, deployment)
    if published is None:
        return None
    return {
        "version": published.version,
        "source": published.source,
        "sha256": published.sha256,
        "applied_at": published.applied_at,
    }


async def collect(client: Any, conn: Any, topology: Any, url_redacted: str) -> dict[str, Any]:
    """Everything the deployment's Redis says about ``topology`` now, as plain JSON-ready data."""
    from topology.runtime.workers import read_workers

    sinks: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    dead_counts: dict[str, tuple[dict[str, int], int]] = {}  # per dead-letter stream, read once
    for name, sink in sorted(topology.sinks.items()):
        live_ms = _live_after_ms(sink.ack_grace)
        streams = {
            s: await _group_info(client, conn, conn.stream_key(s), name, live_ms)
            for s in sink.stream_names
        }
        for s, info in streams.items():
            if info.get("trimmed_unread"):
                spec = topology.streams.get(s)
                info["trimmed_by"] = (spec.trimmed_by if spec else "") or "trimmed elsewhere"
        lengths.update((s, info["length"]) for s, info in streams.items())
        dead = None
        if sink.dead_letter:
            if sink.dead_letter not in dead_counts:
                dlq_key = conn.stream_key(sink.dead_letter)
                dead_counts[sink.dead_letter] = await _dead_letters_by_sink(client, dlq_key)
            per_sink, length = dead_counts[sink.dead_letter]
            dead = {
                "stream": sink.dead_letter,
                "count": per_sink.get(name, 0),
                "length": length,
                "counted": sum(per_sink.values()),  # < length: the newest ones only
            }
            lengths[sink.dead_letter] = length
        sinks[name] = {
            "streams": streams,
            "pending": sum(s.get("pending", 0) for s in streams.values()),
            "dead_letter": dead,
        }
        if sink.state is not None:
            sinks[name]["state_keys"] = await _state_keys(client, conn, topology, sink)
    for name in topology.streams:  # streams no sink reads (outputs only)
        if name not in lengths:
            lengths[name] = int(await client.xlen(conn.stream_key(name)))
    workers = await read_workers(client, topology.name)
    return {
        "deployment": topology.name,
        "redis": url_redacted,
        "published": await _published(client, topology.name),
        "streams": {name: {"length": lengths[name]} for name in sorted(topology.streams)},
        "sinks": sinks,
        "sources": await _sources(client, topology),
        "workers": {w: workers[w] for w in sorted(workers)},
    }


async def _state_keys(client: Any, conn: Any, topology: Any, sink: Any) -> int:
    from topology.runtime.state import count_states, state_layout

    return int(await count_states(client, state_layout(topology.name, sink, conn.stream_key)))


def _append(detail: str, extra: str) -> str:
    return f"{detail}, {extra}" if detail else extra


def _lag(value: int | None) -> str:
    return "?" if value is None else str(value)


def _edge_live(info: dict[str, Any] | None) -> dict[str, Any]:
    if info is None or not info.get("group"):
        return {"pending": 0, "lag": None, "group": False}
    raw_lag = info.get("lag")
    live: dict[str, Any] = {
        "pending": int(info.get("pending") or 0),
        "lag": None if raw_lag is None else int(raw_lag),
        "group": True,
    }
    if info.get("trimmed_unread"):  # lost to the sink, not waiting
        live["trimmed_unread"] = int(info["trimmed_unread"])
        live["trimmed_text"] = info.get("trimmed_text") or str(info["trimmed_unread"])
    return live


def annotate(graph: Any, data: dict[str, Any]) -> None:
    """Add the numbers of ``data`` (from :func:`collect`) to ``graph``, in place.

    Stream nodes get ``live = {"length"}``; read edges ``live = {"pending",
    "lag", "group"}`` (``group`` False while the sink never ran on that stream);
    sink nodes ``live = {"pending", "lag"}`` summed over their streams (``lag``
    None when any stream's is unknown). ``live_text`` and ``detail`` carry the
    same numbers for the diagrams. Attributes only: the renderers stay unaware.
    """
    from topology.graph import nodes_of

    for _node, node_data in nodes_of(graph, "stream"):
        length = int(data["streams"].get(node_data["name"], {}).get("length", 0))
        node_data["live"] = {"length": length}
        node_data["live_text"] = f"length {length}"
        node_data["detail"] = _append(node_data.get("detail", ""), node_data["live_text"])
    for node, node_data in nodes_of(graph, "sink"):
        streams = data["sinks"].get(node_data["name"], {}).get("streams", {})
        pending, lag, known = 0, 0, True
        for _, _, edge in graph.in_edges(node, data=True):
            if edge.get("kind") != "read":
                continue
            live = _edge_live(streams.get(edge["stream"]))
            edge["live"] = live
            edge["live_text"] = (
                f"pending {live['pending']}, lag {_lag(live['lag'])}"
                + (f", trimmed unread {live['trimmed_text']}" if "trimmed_unread" in live else "")
                if live["group"]
                else "no group yet"
            )
            pending += live["pending"]
            if live["lag"] is None:
                known = False
            else:
                lag += live["lag"]
        node_data["live"] = {"pending": pending, "lag": lag if known else None}
        node_data["live_text"] = f"pending {pending}, lag {_lag(lag if known else None)}"
        node_data["detail"] = _append(node_data.get("detail", ""), node_data["live_text"])
