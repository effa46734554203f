"""Logging for the CLI: one line per event, text or JSON, never a password.

Every record from any logger passes a :class:`RedactingFilter` on the handler,
so a URL with a password logged by the engine, redis-py or a user's handler is
printed with ``***`` instead. The periodic throughput/lag summary is logged on
:data:`SUMMARY_LOGGER` so ``--quiet`` can drop it alone.

Structured fields (``sink``, ``stream``, ``event_id``, ``worker``) are keys of
their own in JSON lines, so a log collector filters on them rather than on the
text: per call with ``extra=event_fields(...)``, and for everything a task logs
with :func:`bind_fields` (``run`` binds ``worker`` once; tasks it starts inherit it).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, TextIO

from topology.redact import redact_text

__all__ = [
    "SUMMARY_LOGGER",
    "JsonFormatter",
    "RedactingFilter",
    "bind_fields",
    "event_fields",
    "setup_logging",
]

#: Logger of the periodic summary lines (dropped by ``--quiet``).
SUMMARY_LOGGER = "topology.summary"

# Attributes every LogRecord has; anything else was passed with ``extra=``.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


#: Fields every record logged in the current context carries (asyncio tasks inherit them).
_FIELDS: ContextVar[Mapping[str, Any]] = ContextVar(
    "topology_log_fields", default=MappingProxyType({})
)


def bind_fields(**fields: Any) -> None:
    """Add ``fields`` to every record logged from now on in this context and the tasks it starts."""
    _FIELDS.set(MappingProxyType({**_FIELDS.get(), **fields}))


def event_fields(sink: str, event: Any) -> dict[str, Any]:
    """``extra=`` of a line about one event: which sink, which stream, which entry."""
    return {"sink": sink, "stream": event.stream_name, "event_id": event.id}


class _BoundFields(logging.Filter):
    """Copies the context's bound fields onto a record (a call's own ``extra=`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _FIELDS.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class RedactingFilter(logging.Filter):
    """Masks the password of any URL in a record's message, arguments and extras.

    The message is rendered once here (``msg % args``) and the record rewritten,
    so formatters downstream see only the redacted text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what we have, redacted
            message = f"{record.msg} {record.args}"
        record.msg = redact_text(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact_text(value))
        return True


class _RedactingText(logging.Formatter):
    """Text lines; tracebacks are redacted too (an exception may quote a URL)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, extras, and exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(out, default=str, ensure_ascii=False))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is *now* (test capture, a redirect), not at setup."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


_installed: logging.Handler | None = None


def setup_logging(
    fmt: str = "text",
    *,
    quiet: bool = False,
    verbose: bool = False,
    stream: TextIO | None = None,
    level: int | None = None,
) -> None:
    """Configure the root logger on stderr (idempotent: replaces its own previous handler).

    ``quiet`` drops the periodic summary (:data:`SUMMARY_LOGGER`) and keeps
    lifecycle lines and warnings; ``verbose`` shows debug lines of the engine.
    ``level`` overrides the engine's level (``emit``/``tail``/``status`` show
    warnings only, but still through the redacting handler).
    """
    global _installed
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.addFilter(_BoundFields())
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            _RedactingText("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root.addHandler(handler)
    _installed = handler
    root.setLevel(logging.INFO)
    engine_level = logging.DEBUG if verbose else logging.INFO
    logging.getLogger("topology").setLevel(level if level is not None else engine_level)
    logging.getLogger(SUMMARY_LOGGER).setLevel(logging.WARNING if quiet else logging.INFO)
