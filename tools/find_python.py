"""Find a working interpreter of a given Python version: ``python3.X`` on PATH, else pyenv's.

    python tools/find_python.py 3.10        # prints its path; exit 1 when none works

Used by ``.ci/run`` and ``noxfile.py``. A ``python3.X`` on PATH is not enough:
pyenv puts a shim there for every version it has, and the shim fails unless that
version is selected (``pyenv global``/``PYENV_VERSION``). So each candidate is
run, and kept only if it answers with the version asked for; after PATH come
pyenv's own installs (``$PYENV_ROOT/versions/3.X.*``, newest patch first).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

_VERSION = re.compile(r"^3\.\d+$")


def _candidates(version: str) -> Iterator[str]:
    on_path = shutil.which(f"python{version}")
    if on_path:
        yield on_path
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    installs = (root / "versions").glob(f"{version}.*")

    def patch(path: Path) -> int:
        tail = path.name[len(version) + 1 :]
        return int(tail) if tail.isdigit() else -1

    for install in sorted(installs, key=patch, reverse=True):
        if patch(install) >= 0:  # 3.13.0, not 3.13.0t or 3.13-dev
            yield str(install / "bin" / f"python{version}")


def _answers(python: str, version: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == version


def find_python(version: str) -> str | None:
    """The path of an interpreter of ``version`` (``"3.10"``) that runs, or None."""
    if not _VERSION.match(version):
        raise ValueError(f"expected a version like 3.10, got {version!r}")
    return next((c for c in _candidates(version) if _answers(c, version)), None)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: find_python.py 3.X", file=sys.stderr)
        return 2
    found = find_python(args[0])
    if found is None:
        print(f"no working python{args[0]} on PATH or under pyenv", file=sys.stderr)
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
