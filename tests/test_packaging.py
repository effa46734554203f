"""The package as users install it: one version everywhere, and a wheel that carries
the schema, ``py.typed`` and the license (``tools/check_wheel.py``, run by CI)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path
from types import ModuleType

import pytest

import topology

ROOT = Path(__file__).resolve().parent.parent


def _check_wheel() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_wheel", ROOT / "tools" / "check_wheel.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_wheel = _check_wheel()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout by the project's build backend."""
    from hatchling.builders.wheel import WheelBuilder

    out = tmp_path_factory.mktemp("dist")
    [built] = WheelBuilder(str(ROOT)).build(directory=str(out), versions=["standard"])
    return Path(built)


def test_the_cli_prints_the_package_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "topology.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == f"ponos-topology {topology.__version__}"


def test_the_wheel_metadata_has_the_package_version(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        headers = HeaderParser().parsestr(archive.read(metadata).decode())
    assert headers["Version"] == topology.__version__
    assert wheel.name.startswith(f"ponos_topology-{topology.__version__}-")
    assert headers["License-Expression"] == "MIT"


def test_the_wheel_carries_the_schema_py_typed_and_the_license(wheel: Path) -> None:
    assert check_wheel.wheel_problems(wheel) == []


@pytest.mark.parametrize(
    "dropped",
    ["topology/_schemas/topology.schema.json", "topology/py.typed", "/licenses/LICENSE"],
)
def test_the_wheel_check_fails_when_one_is_missing(
    wheel: Path, tmp_path: Path, dropped: str
) -> None:
    broken = tmp_path / wheel.name
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(broken, "w") as target:
        for info in source.infolist():
            if not info.filename.endswith(dropped):
                target.writestr(info, source.read(info))
    problems = check_wheel.wheel_problems(broken)
    assert len(problems) == 1
    assert dropped.lstrip("/") in problems[0]


def test_the_version_check_reads_the_literal() -> None:
    assert check_wheel.version_in_source('"""Doc."""\n__version__ = "1.2.3"\n') == "1.2.3"
    assert check_wheel.version_in_source("x = 1\n") is None
