"""The model of a document that passed every check: plain data to frozen dataclasses.

Kept apart from the checks: by the time this runs the types are right, so it
reads as the mapping from the file's keys to the model's fields, defaults
applied, durations in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from topology.config._raw import as_map, ref_name
from topology.config.durations import parse_duration
from topology.config.model import (
    DEFAULT_ACK_GRACE,
    DEFAULT_BATCH,
    DEFAULT_CONSUMERS,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_RETRY,
    DEFAULT_START,
    RedisSpec,
    RetryPolicy,
    SinkSpec,
    SourceSpec,
    StateSpec,
    StreamRef,
    StreamSpec,
    Topology,
)

__all__ = ["build_model"]


def _seconds(value: Any, default: float) -> float:
    return parse_duration(value) if isinstance(value, str) else default


def _retry(base: RetryPolicy, raw: Any) -> RetryPolicy:
    raw = as_map(raw)
    return RetryPolicy(
        max_attempts=raw.get("max_attempts", base.max_attempts),
        backoff=_seconds(raw.get("backoff"), base.backoff),
        max_backoff=_seconds(raw.get("max_backoff"), base.max_backoff),
    )


def _stream(name: str, spec: Any) -> StreamSpec:
    spec = as_map(spec)
    return StreamSpec(
        name=name,
        max_len=spec.get("max_len"),
        ttl=_seconds(spec.get("ttl"), 0.0) if "ttl" in spec else None,
        topics=tuple(spec.get("topics", ())),
        lossy=spec.get("lossy") is True,
    )


def _stream_ref(ref: Any) -> StreamRef:
    name = ref_name(ref)
    assert name is not None  # checked
    return StreamRef(name, ref.get("start")) if isinstance(ref, dict) else StreamRef(name)


def _sink(name: str, spec: dict[str, Any], defaults: dict[str, Any]) -> SinkSpec:
    default_retry = _retry(DEFAULT_RETRY, defaults.get("retry"))
    return SinkSpec(
        name=name,
        streams=tuple(_stream_ref(ref) for ref in spec["streams"]),
        handler=spec["handler"],
        topic=spec.get("topic"),
        topic_pattern=spec.get("topic_pattern"),
        matcher=spec.get("matcher"),
        consumers=spec.get("consumers", defaults.get("consumers", DEFAULT_CONSUMERS)),
        outputs=tuple(spec.get("outputs", ())),
        start=spec.get("start", defaults.get("start", DEFAULT_START)),
        ack_grace=_seconds(
            spec.get("ack_grace"), _seconds(defaults.get("ack_grace"), DEFAULT_ACK_GRACE)
        ),
        batch=spec.get("batch", defaults.get("batch", DEFAULT_BATCH)),
        retry=_retry(default_retry, spec.get("retry")),
        dead_letter=spec.get("dead_letter"),
        timeout=_seconds(spec.get("timeout"), _seconds(defaults.get("timeout"), 0)) or None,
        max_deliveries=spec.get(
            "max_deliveries", defaults.get("max_deliveries", DEFAULT_MAX_DELIVERIES)
        ),
        max_batch_bytes=spec.get(
            "max_batch_bytes", defaults.get("max_batch_bytes", DEFAULT_MAX_BATCH_BYTES)
        ),
        key=spec.get("key"),
        state=_state(spec["state"]) if "state" in spec else None,
    )


def _state(raw: Any) -> StateSpec:
    ttl = as_map(raw).get("ttl")
    return StateSpec(ttl=parse_duration(ttl) if isinstance(ttl, str) else None)


def build_model(data: dict[str, Any], path: Path | None) -> Topology:
    """The model of a document that passed every check (so types are right here)."""
    defaults = as_map(data.get("defaults"))
    redis = as_map(data.get("redis"))
    return Topology(
        name=data["name"],
        version=int(data["version"]),
        allow_cycles=bool(data.get("allow_cycles", False)),
        redis=RedisSpec(
            url=redis.get("url") or None,
            prefix=redis.get("prefix", RedisSpec.prefix),
            timeout=_seconds(redis.get("timeout"), RedisSpec.timeout),
        ),
        streams={name: _stream(name, spec) for name, spec in as_map(data.get("streams")).items()},
        sources={
            name: SourceSpec(
                name=name,
                handler=spec["handler"],
                stream=spec["stream"],
                topic=spec.get("topic"),
                rerun=spec.get("rerun") is True,
            )
            for name, spec in as_map(data.get("sources")).items()
        },
        sinks={
            name: _sink(name, as_map(spec), defaults)
            for name, spec in as_map(data.get("sinks")).items()
        },
        path=path,
    )
