"""Config files: load, locate, substitute, validate, and build the model.

``check`` reports every problem (``FILE:LINE:COL: PATH: message``) without
raising; ``load`` raises :class:`ConfigError` on any error. The JSON Schema is
the published one (``schemas/topology.schema.json``); ``schema_path()`` says
which copy is in use.
"""

from topology.config._loader import check, check_text, load, load_text
from topology.config._problems import ConfigError, Problem
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
    "schema_path",
]
