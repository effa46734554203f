"""Check that the built distributions carry what an installed package needs.

    python tools/check_wheel.py DIST_DIR     # the output of ``python -m build``

A wheel that installs and imports can still be broken for its users: the config
schema (force-included from ``schemas/``, outside the package) missing makes
every ``validate`` and ``run`` fail; without ``py.typed`` type checkers ignore
the package's hints; without the license file the MIT notice does not travel
with the code. This checks the wheel and the sdist in DIST_DIR for each, and
that the wheel's metadata version is the package's ``__version__``. Exit 0 when
all is there, 1 with one line per problem otherwise. CI runs it after the build.
"""

from __future__ import annotations

import argparse
import ast
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

#: What the wheel must contain (paths inside it), beside the license file.
WHEEL_FILES = ("topology/_schemas/topology.schema.json", "topology/py.typed")
#: What the sdist must contain (paths under its top folder): a wheel is built from it.
SDIST_FILES = ("LICENSE", "schemas/topology.schema.json", "topology/py.typed", "pyproject.toml")
LICENSE = "LICENSE"


def version_in_source(init_source: str) -> str | None:
    """The ``__version__ = "..."`` literal of a module's source, None without one."""
    for node in ast.parse(init_source).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


def wheel_problems(wheel: Path) -> list[str]:
    """What is wrong with ``wheel`` (empty: nothing)."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        problems = [f"{wheel.name}: no {path}" for path in WHEEL_FILES if path not in names]
        metadata_path = next((n for n in names if n.endswith(".dist-info/METADATA")), None)
        if metadata_path is None:
            return [*problems, f"{wheel.name}: no .dist-info/METADATA"]
        dist_info = metadata_path.rsplit("/", 1)[0]
        if f"{dist_info}/licenses/{LICENSE}" not in names:
            problems.append(f"{wheel.name}: no {dist_info}/licenses/{LICENSE}")
        metadata = HeaderParser().parsestr(archive.read(metadata_path).decode())
        if LICENSE not in (metadata.get_all("License-File") or []):
            problems.append(f"{wheel.name}: METADATA names no License-File: {LICENSE}")
        init = "topology/__init__.py"
        version = version_in_source(archive.read(init).decode()) if init in names else None
    if version is None:
        problems.append(f"{wheel.name}: no __version__ in topology/__init__.py")
    elif metadata["Version"] != version:
        problems.append(
            f"{wheel.name}: METADATA Version {metadata['Version']} != __version__ {version}"
        )
    return problems


def sdist_problems(sdist: Path) -> list[str]:
    """What is missing from ``sdist`` (empty: nothing)."""
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    return [f"{sdist.name}: no {path}" for path in SDIST_FILES if path not in names]


def dist_problems(dist: Path) -> list[str]:
    """The problems of the one wheel and the one sdist in ``dist``."""
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    problems = []
    for kind, found in (("wheel", wheels), ("sdist", sdists)):
        if len(found) != 1:
            problems.append(f"{dist}: expected one {kind}, found {len(found)}")
    if len(wheels) == 1:
        problems += wheel_problems(wheels[0])
    if len(sdists) == 1:
        problems += sdist_problems(sdists[0])
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", type=Path, help="folder holding the built wheel and sdist")
    args = parser.parse_args(argv)
    problems = dist_problems(args.dist)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{args.dist}: wheel and sdist carry the schema, py.typed and the license")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
