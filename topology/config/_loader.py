"""File -> located document -> schema -> semantic checks -> model."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from topology.callables import Origins, code_fingerprints
from topology.config._build import build_model
from topology.config._problems import ConfigError, Problem, format_path
from topology.config._schema import schema_errors
from topology.config._semantic import cycle_problems, semantic_problems
from topology.config._yaml import Raw, parse
from topology.config.model import Topology

__all__ = ["MAX_BYTES", "check", "load", "load_text", "read"]

log = logging.getLogger("topology.config")

_NO_FILE = "<string>"

#: Largest config accepted (1 MB), refused before YAML parsing starts. A topology
#: is a few kilobytes; PyYAML's cost grows with the text, so a wrong file (a log,
#: a dump) must not cost minutes and gigabytes before it is called invalid.
MAX_BYTES = 1_000_000


_TOO_LARGE = f"file too large: a config may hold at most {MAX_BYTES} bytes (1 MB)"


def read(path: str | Path) -> tuple[str, None] | tuple[None, Problem]:
    """The text of the config at ``path``, or the located problem that stops reading it.

    At most :data:`MAX_BYTES` + 1 bytes are read, whatever the file's size.
    """
    file = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        return None, Problem(file, 1, 1, "(file)", f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_BYTES:
        return None, Problem(file, 1, 1, "(file)", _TOO_LARGE)
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        col = len(data[line_start : exc.start].decode("utf-8", "replace")) + 1
        byte = data[exc.start]
        return None, Problem(
            file, line, col, "(file)", f"not UTF-8 text: byte 0x{byte:02x} (a config is UTF-8)"
        )


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
    origins: Origins | None = None,
) -> tuple[Topology | None, tuple[Problem, ...]]:
    """Like :func:`check` for text already read; ``path`` names it and locates handlers.

    ``origins`` restricts the modules callables may come from (a deployment's rule).
    """
    file = str(path)
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "replace")) > MAX_BYTES:
        return None, (Problem(file, 1, 1, "(file)", _TOO_LARGE),)
    real = None if file == _NO_FILE else Path(file).resolve()
    doc, raws = parse(text, os.environ if env is None else env)
    if not raws or doc.data is not None:
        raws.extend(schema_errors(doc))
        if isinstance(doc.data, dict):
            base_dir = real.parent if real is not None else None
            had_errors = any(raw.severity == "error" for raw in raws)
            raws.extend(
                semantic_problems(
                    doc, base_dir, import_callables, had_errors=had_errors, origins=origins
                )
            )
    topology = None
    if not any(raw.severity == "error" for raw in raws):
        topology = build_model(doc.data, real)
        raws.extend(cycle_problems(topology, doc))
    problems = _problems(file, raws, strict)
    if any(p.is_error for p in problems):
        return None, problems
    assert topology is not None
    if import_callables:  # the handlers were just imported: fingerprint their files
        topology = replace(topology, code=code_fingerprints(topology.handler_refs()))
    return topology, problems


def check(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    strict: bool = False,
    import_callables: bool = True,
    origins: Origins | None = None,
) -> tuple[Topology | None, tuple[Problem, ...]]:
    """Validate the config at ``path``: the model (None if any error) and every problem.

    Never raises for bad input, unreadable files included: the CLI and the hot
    reload both want the full list, not the first failure.
    """
    text, problem = read(path)
    if text is None:
        assert problem is not None
        return None, (problem,)
    return check_text(
        text,
        path=path,
        env=env,
        strict=strict,
        import_callables=import_callables,
        origins=origins,
    )


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
