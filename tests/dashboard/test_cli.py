"""``ponos-topology dashboard`` as a command: its arguments, its warning, ``--deployment``."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard._helpers import start, write_config
from tests.helpers import wait_until
from topology.cli import main


def snapshot(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "api/snapshot", timeout=10) as response:
        return dict(json.load(response))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give either CONFIG or --deployment NAME"),
        (["x.yaml", "--deployment", "d"], "give either CONFIG or --deployment NAME"),
        (["--deployment", "d", "--redis-url", ""], "--deployment needs a Redis URL"),
        (["x.yaml", "--interval", "0"], "--interval must be > 0"),
        (["x.yaml", "--interval", "nan"], "--interval must be > 0"),
        (["x.yaml", "--port", "65536"], "--port must be from 0"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboard", *args]) == 2
    assert message in capsys.readouterr().err


def test_no_embedded_server_started_for_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "webcli")
    args = ["dashboard", str(config), "--redis-url", "", "--data-dir", str(tmp_path / "data")]
    assert main(args) == 1
    assert "no embedded Redis server runs in" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
    deployment = ["dashboard", "--deployment", "webcli", "--data-dir", str(tmp_path / "data")]
    assert main([*deployment, "--redis-url", ""]) == 1
    assert not (tmp_path / "data").exists()


def test_loopback_by_default_and_a_warning_for_any_other_address(
    redis_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    config = write_config(tmp_path, "webcli")
    proc, url = start(
        ["dashboard", str(config), "--redis-url", redis_url, "--port", "0"], tmp_path / "local.log"
    )
    processes.append(proc)
    assert url.startswith("http://127.0.0.1:")
    assert "no authentication" not in (tmp_path / "local.log").read_text()

    log = tmp_path / "open.log"
    args = ["dashboard", str(config), "--redis-url", redis_url, "--port", "0", "--host", "0.0.0.0"]
    with log.open("wb") as out:
        exposed = subprocess.Popen(
            [sys.executable, "-m", "topology.cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    processes.append(exposed)
    wait_until(lambda: "(Ctrl-C stops)" in log.read_text(), 30.0, "the dashboard to listen")
    assert "warning: the dashboard on 0.0.0.0 has no authentication" in log.read_text()


def apply(folder: Path, name: str, redis_url: str, *, audit: bool = False) -> None:
    """Publish the test config ``name`` (``apply``), as version 1 or the next."""
    config = write_config(folder, name, audit=audit)
    assert main(["apply", str(config), "--redis-url", redis_url]) == 0


def test_a_deployment_dashboard_follows_the_published_versions(
    redis_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    apply(tmp_path, "webdeploy", redis_url)
    args = ["dashboard", "--deployment", "webdeploy", "--redis-url", redis_url, "--port", "0"]
    proc, url = start(args, tmp_path / "deploy.log")
    processes.append(proc)
    first = snapshot(url)
    assert first["ok"] is True and first["config"]["problem"] is None
    assert set(first["sinks"]) == {"work"}
    assert first["published"]["version"] == 1

    apply(tmp_path, "webdeploy", redis_url, audit=True)
    wait_until(lambda: "audit" in snapshot(url)["sinks"], 30.0, "version 2's sink")
    latest = snapshot(url)
    assert latest["published"]["version"] == 2
    assert "sink_audit" in latest["graph"]["mermaid"]
    assert [r["version"] for r in latest["reloads"] if r["what"] == "published"] == [2, 1]


def test_a_deployment_worker_serves_the_page_of_what_it_runs(
    redis_url: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    apply(tmp_path, "webworker", redis_url)
    args = ["run", "--deployment", "webworker", "--redis-url", redis_url, "--ui-port", "0"]
    proc, url = start([*args, "--handlers-dir", str(tmp_path), "--quiet"], tmp_path / "run.log")
    processes.append(proc)

    def running() -> bool:
        snap = snapshot(url)
        return set(snap["sinks"]) == {"work"} and any(
            w.get("deployment_version") == 1 and w.get("generation") == 1
            for w in snap["workers"].values()
        )

    wait_until(running, 60.0, "the worker's page to show version 1 running")
    assert snapshot(url)["published"]["version"] == 1
