"""Config files: load, locate, substitute, validate, and build the model.

``check`` reports every problem (``FILE:LINE:COL: PATH: message``) without
raising; ``load`` raises :class:`ConfigError` on any error. Every way in (a
file, text from ``apply`` or a deployment, a reload) has the same bounds: at
most :data:`MAX_BYTES`, a bounded node count and nesting depth. The JSON Schema is
the published one (``schemas/topology.schema.json``); ``schema_path()`` says
which copy is in use.
"""

from topology.config._loader import MAX_BYTES, check, check_text, load, load_text, read
from topology.config._problems import ConfigError, Problem
from topology.config._redis_url import redis_url_problem
from topology.config._schema import load_schema, schema_path
from topology.config.durations import parse_duration
from topology.config.model import (
    RedisSpec,
    RetryPolicy,
    SinkSpec,
    SourceSpec,
    StateSpec,
    StreamRef,
    StreamSpec,
    Topology,
)

__all__ = [
    "MAX_BYTES",
    "ConfigError",
    "Problem",
    "RedisSpec",
    "RetryPolicy",
    "SinkSpec",
    "SourceSpec",
    "StateSpec",
    "StreamRef",
    "StreamSpec",
    "Topology",
    "check",
    "check_text",
    "load",
    "load_schema",
    "load_text",
    "parse_duration",
    "read",
    "redis_url_problem",
    "schema_path",
]
