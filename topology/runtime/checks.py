"""Validating a config file for a reload: in this process, or in a short-lived child.

A worker validates in its own process (:class:`InProcessCheck`): validation
imports the handler modules, which it runs anyway. A pool's parent runs no
handler: :class:`ChildCheck` validates in a child process
(``python -m topology.runtime.checks``) that reports the outcome as JSON and
exits, so the parent never imports the config validator (jsonschema, YAML,
networkx), redis-py, the engine, nor the user's handler modules, and stays
small for as long as it supervises.

Both give the :class:`~topology.runtime.reload.Reloader` the same two things:
``check(path) -> (topology or None, problems)`` — problems print as
``validate`` prints them (``file:line:col: path: message``) — and the files to
watch for a topology (the handler modules it names).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["CHECK_URL_ENV", "Checked", "Checker", "ChildCheck", "InProcessCheck", "main"]

#: ``--redis-url`` for the child (an environment variable: not shown by ``ps``).
CHECK_URL_ENV = "PONOS_CHECK_REDIS_URL"


class Checker(Protocol):
    """What a :class:`~topology.runtime.reload.Reloader` validates with."""

    def check(self, path: Path) -> tuple[Any, Sequence[Any]]:
        """The topology (None when invalid) and every problem, errors and warnings."""

    def code_files(self, topology: Any) -> set[Path]:
        """The handler files a change of which reloads ``topology``."""


class InProcessCheck:
    """``topology.config.check`` in this process (a worker: it imports the handlers anyway)."""

    def check(self, path: Path) -> tuple[Any, Sequence[Any]]:
        from topology.config import check

        return check(path)

    def code_files(self, topology: Any) -> set[Path]:
        """The files of the handler modules ``topology`` names, as imported here."""
        from topology.callables import module_file

        found = (module_file(module) for module in topology.code)
        return {path for path in found if path is not None}


@dataclass(frozen=True)
class Checked:
    """What a pool's parent keeps of a valid config: no model, only what it acts on.

    ``embedded_dir``: where the embedded server lives, when the config (and
    ``--redis-url``, ``$REDIS_URL``) name no Redis; None otherwise.
    """

    code_files: frozenset[Path]
    embedded_dir: Path | None


class ChildCheck:
    """Validation in a child process, for a parent that must not import the engine.

    ``redis_url`` and ``data_dir`` are ``run``'s options: the child resolves
    the Redis URL exactly as a worker does, to tell whether the embedded server
    is needed and where.
    """

    def __init__(self, redis_url: str | None = None, data_dir: Path | None = None) -> None:
        self.redis_url = redis_url
        self.data_dir = data_dir

    def check(self, path: Path) -> tuple[Checked | None, Sequence[str]]:
        argv = [sys.executable, "-m", "topology.runtime.checks", str(path)]
        if self.data_dir is not None:
            argv += ["--data-dir", str(self.data_dir)]
        env = dict(os.environ)
        if self.redis_url is not None:
            env[CHECK_URL_ENV] = self.redis_url
        # stderr is shared: a handler module that prints or warns on import shows
        # it, as a single process would; the report comes on stdout alone. Its own
        # session: a Ctrl-C meant for the pool does not end a check in a traceback.
        done = subprocess.run(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            report = json.loads(done.stdout)
            problems = [str(line) for line in report["problems"]]
        except (ValueError, KeyError, TypeError):
            return None, [f"{path}: validation failed (its process exited with {done.returncode})"]
        if not report.get("valid"):
            return None, problems
        embedded = report.get("embedded_dir")
        checked = Checked(
            code_files=frozenset(Path(p) for p in report.get("code_files", [])),
            embedded_dir=Path(embedded) if embedded else None,
        )
        return checked, problems

    def code_files(self, topology: Checked) -> set[Path]:
        return set(topology.code_files)


def _report(path: str, data_dir: str | None, redis_url: str | None) -> dict[str, Any]:
    """The child's side: validate, and say what the parent needs to know."""
    from topology.config import check
    from topology.runtime.connect import resolve_url
    from topology.runtime.embedded import default_data_dir

    topology, problems = check(path)
    report: dict[str, Any] = {"valid": topology is not None, "problems": [str(p) for p in problems]}
    if topology is None:
        return report
    report["code_files"] = sorted(str(p) for p in InProcessCheck().code_files(topology))
    if resolve_url(redis_url, topology) is None:
        folder = Path(data_dir) if data_dir is not None else default_data_dir(topology.path)
        report["embedded_dir"] = str(folder.absolute())
    return report


def main(argv: list[str]) -> int:
    """``python -m topology.runtime.checks CONFIG [--data-dir DIR]``: a JSON report on stdout."""
    data_dir = argv[argv.index("--data-dir") + 1] if "--data-dir" in argv else None
    redis_url = os.environ.pop(CHECK_URL_ENV, None)  # before handler modules are imported
    # Handler modules imported by the check may print: their output goes to stderr,
    # and the report alone to the original stdout.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with out:
        out.write(json.dumps(_report(argv[0], data_dir, redis_url)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
