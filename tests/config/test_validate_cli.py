"""``ponos-topology validate``: exit codes and output, through the real dispatcher."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from topology.cli import main

ROOT = Path(__file__).resolve().parents[2]
BROKEN = Path(__file__).parent / "broken"


def test_valid_config_prints_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(ROOT / "configs" / "pipeline.yaml")]) == 0
    out, err = capsys.readouterr()
    assert out == "ok: 4 streams, 5 sinks, 6 actors\n"
    assert err == ""


def test_invalid_config_exits_2_with_one_line_per_problem(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(BROKEN.parent)
    assert main(["validate", "broken/several_errors_in_file_order.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "broken/several_errors_in_file_order.yaml:8:21: streams.orders.max_len: "
        "must be at least 1, got -1",
        "broken/several_errors_in_file_order.yaml:11:15: sinks.s.streams[0]: "
        "unknown stream 'ordrs' (did you mean 'orders'?)",
        "broken/several_errors_in_file_order.yaml:13:12: sinks.s.batch: must be at least 1, got 0",
        "broken/several_errors_in_file_order.yaml:14:16: sinks.s.consumers: "
        "expected an integer, got string 'lots'",
    ]


def test_warnings_go_to_stderr_and_strict_makes_them_fatal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = str(BROKEN / "warnings_only.yaml")
    assert main(["validate", path]) == 0
    out, err = capsys.readouterr()
    assert out == "ok: 5 streams, 2 sinks, 2 actors\n"
    assert len(err.splitlines()) == 3 and all(": warning: " in line for line in err.splitlines())
    assert main(["validate", "--strict", path]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 3 and ": warning: " not in err


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read: No such file or directory" in capsys.readouterr().err


def test_console_script_never_prints_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"version: 1\nname: [\x00\n")
    proc = subprocess.run(
        [sys.executable, "-m", "topology.cli", "validate", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"{bad}:2:8: (root): invalid YAML")


STDLIB_HANDLER = """\
version: 1
name: std
streams:
  a: {}
sinks:
  s:
    streams: [a]
    handler: json:dumps
"""


def test_strict_flags_a_handler_from_the_standard_library(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "std.yaml"
    path.write_text(STDLIB_HANDLER)
    assert main(["validate", str(path)]) == 0  # a file the user wrote: today's rule
    assert "standard library" not in capsys.readouterr().err
    assert main(["validate", "--strict", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:8:14: sinks.s.handler: module 'json' is from the standard library" in err


def test_a_trimmed_stream_read_by_a_sink_warns_unless_lossy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "h.py").write_text("def f(e):\n    return None\n")
    text = (
        "version: 1\nname: t\nstreams:\n  a: {{max_len: 10{lossy}}}\n  b: {{ttl: 1h}}\n"
        "sinks:\n  s:\n    streams: [a]\n    handler: h:f\n"
    )
    path = tmp_path / "t.yaml"
    path.write_text(text.format(lossy=""))
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "stream 'a' is trimmed (max_len) and read by a sink" in err
    assert "stream 'b' is trimmed" not in err  # read by no sink: nothing to lose
    path.write_text(text.format(lossy=", lossy: true"))
    assert main(["validate", str(path)]) == 0
    assert "is trimmed" not in capsys.readouterr().err
