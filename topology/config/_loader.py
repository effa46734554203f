"""File -> located document -> schema -> semantic checks -> model."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from topology.config._problems import ConfigError, Problem, format_path
from topology.config._schema import schema_errors
from topology.config._semantic import build_model, semantic_problems
from topology.config._yaml import Raw, parse
from topology.config.model import Topology

__all__ = ["check", "load", "load_text"]

log = logging.getLogger("topology.config")

_NO_FILE = "<string>"


def _problems(file: str, raws: list[Raw], strict: bool) -> tuple[Problem, ...]:
    out: dict[tuple[int, int, str, str, str], Problem] = {}
    for raw in raws:
        severity = "error" if strict else raw.severity
        problem = Problem(
            file, max(raw.line, 1), max(raw.col, 1), format_path(raw.path), raw.message, severity
        )
        out.setdefault(
            (problem.line, problem.col, problem.path, problem.message, severity), problem
        )
    # File order; at one place, errors before warnings.
    return tuple(sorted(out.values(), key=lambda p: (p.line, p.col, p.severity != "error")))


def check_text(
    text: str,
    *,
    path: str | Path = _NO_FILE,
    env: Mapping[str, str] | None = None,
    strict: bool = False,
    import_callables: bool = True,
) -> tuple[Topology | None, tuple[Problem, ...]]:
    """Like :func:`check` for text already read; ``path`` names it and locates handlers."""
    file = str(path)
    real = None if file == _NO_FILE else Path(file).resolve()
    doc, raws = parse(text, os.environ if env is None else env)
    if not raws or doc.data is not None:
        raws.extend(schema_errors(doc))
        if isinstance(doc.data, dict):
            base_dir = real.parent if real is not None else None
            had_errors = any(raw.severity == "error" for raw in raws)
            raws.extend(semantic_problems(doc, base_dir, import_callables, had_errors=had_errors))
    problems = _problems(file, raws, strict)
    if any(p.is_error for p in problems):
        return None, problems
    return build_model(doc.data, real), problems


def check(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    strict: bool = False,
    import_callables: bool = True,
) -> tuple[Topology | None, tuple[Problem, ...]]:
    """Validate the config at ``path``: the model (None if any error) and every problem.

    Never raises for bad input, unreadable files included: the CLI and the hot
    reload both want the full list, not the first failure.
    """
    text = read_source(path)
    if isinstance(text, Problem):
        return None, (text,)
    return check_text(
        text, path=str(path), env=env, strict=strict, import_callables=import_callables
    )


def read_source(path: str | Path) -> str | Problem:
    """The text of a YAML file, or the problem that stops it being read (never raises)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Problem(str(path), 1, 1, "(file)", f"cannot read: {reason}")


def _raise_or_log(topology: Topology | None, problems: tuple[Problem, ...]) -> Topology:
    if topology is None:
        raise ConfigError(problems)
    for problem in problems:
        log.warning("%s", problem)
    return topology


def load(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    strict: bool = False,
    import_callables: bool = True,
) -> Topology:
    """The model of the config at ``path``; :class:`ConfigError` lists every problem.

    Warnings of a valid config are logged on ``topology.config``.
    """
    return _raise_or_log(*check(path, env=env, strict=strict, import_callables=import_callables))


def load_text(
    text: str,
    *,
    path: str | Path = _NO_FILE,
    env: Mapping[str, str] | None = None,
    strict: bool = False,
    import_callables: bool = True,
) -> Topology:
    """:func:`load` for text in memory (``apply`` and tests); ``path`` locates handlers."""
    return _raise_or_log(
        *check_text(text, path=path, env=env, strict=strict, import_callables=import_callables)
    )
