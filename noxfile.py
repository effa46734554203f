"""The test matrix: ``nox`` runs the suite on every supported Python present here.

    pip install nox        # or: pip install -e '.[dev]'
    nox                    # tests-3.10 ... tests-3.13, each in a fresh venv under .nox/
    nox -s tests-3.13 -- tests/streams -x     # one interpreter, pytest arguments after --
    nox -s lint

An interpreter that is not installed is skipped (an error when ``CI`` is set).
Interpreters are found by ``tools/find_python.py`` (``python3.X`` on PATH, else
pyenv's installs, each checked to run), because pyenv's shims for versions not
selected are on PATH but fail.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "tools"))
from find_python import find_python  # noqa: E402

#: Every version ``requires-python`` and the classifiers claim.
VERSIONS = ["3.10", "3.11", "3.12", "3.13"]

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"
nox.options.download_python = "never"  # test the interpreters of this machine


def _expose_interpreters() -> None:
    """Put each version's working interpreter on PATH as ``python3.X`` for nox to find."""
    links = ROOT / ".nox" / "pythons"
    links.mkdir(parents=True, exist_ok=True)
    for version in VERSIONS:
        link = links / f"python{version}"
        link.unlink(missing_ok=True)
        found = find_python(version)
        if found is not None:
            link.symlink_to(found)
    os.environ["PATH"] = f"{links}{os.pathsep}{os.environ.get('PATH', '')}"


_expose_interpreters()


@nox.session(python=VERSIONS)
def tests(session: nox.Session) -> None:
    """The suite (the README's install, then pytest with any arguments given after --)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff as CI runs it (the version the test extra pins must be installed)."""
    session.run("ruff", "check", "topology", "tests", "tools", "noxfile.py")
