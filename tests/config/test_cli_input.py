"""Bad command-line input: one clear line and the right exit code, never a traceback.

Also what people and tools read: ``validate --format json``, ``plan --exit-code``,
``--help`` without markup, ``python -m topology``, stdout kept clean.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from topology.cli import EXAMPLES, build_parser, main

CONFIG = """\
version: 1
name: input
streams:
  orders: {}
  out: {}
sinks:
  copy:
    streams: [orders]
    handler: input_handlers:copy
    outputs: [out]
  last:
    streams: [out]
    handler: input_handlers:copy
"""
HANDLERS = "print('imported!')\n\n\ndef copy(event):\n    return None\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "input_handlers.py").write_text(HANDLERS)
    path = tmp_path / "input.yaml"
    path.write_text(CONFIG)
    return path


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _process(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m ARGV...`` in a child: what a user's shell sees, exit code included."""
    return subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, timeout=60, check=False
    )


BAD_URLS = [
    ("redis://user:pw@[::1", "Invalid IPv6 URL"),
    ("garbage://s3cret@@:x", "unsupported URL scheme 'garbage'"),
    ("redis://db:notaport/0", "the port must be a number from 1 to 65535"),
    ("redis://db:99999/0", "the port must be a number from 1 to 65535"),
]


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
@pytest.mark.parametrize(
    "command",
    [
        ["emit", "{config}", "orders", "created"],
        ["tail", "{config}", "orders"],
        ["status", "{config}"],
        ["apply", "{config}"],
        ["graph", "{config}", "--live"],
        ["run", "{config}", "--no-watch"],
    ],
    ids=lambda c: c[0] if isinstance(c, list) else None,
)
def test_an_unusable_redis_url_is_a_usage_error_in_one_line(
    command: list[str], url: str, reason: str, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [part.replace("{config}", str(config)) for part in command]
    code, _, err = _cli(capsys, *argv, "--redis-url", url)
    assert code == 2
    lines = [line for line in err.splitlines() if "imported!" not in line]
    assert len(lines) == 1 and reason in lines[0] and "Traceback" not in err
    assert "s3cret" not in err and ":pw@" not in err


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--metrics-port", "-1", "a port is from 1 to 65535, not -1"),
        ("--metrics-port", "65536", "a port is from 1 to 65535, not 65536"),
        ("--metrics-port", "http", "not a port number: 'http'"),
        ("--drain-timeout", "-5", "must be a number of seconds >= 0, not -5"),
        ("--drain-timeout", "nan", "must be a number of seconds >= 0, not nan"),
        ("--stop-when-idle", "-1", "must be a number of seconds >= 0, not -1"),
    ],
)
def test_run_refuses_bad_numbers_before_starting(
    option: str, value: str, reason: str, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(capsys, "run", str(config), f"{option}={value}")
    assert code == 2
    assert err.splitlines()[-1] == f"ponos-topology run: error: argument {option}: {reason}"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_metrics_port_in_use_ends_run_with_one_line(
    config: Path, redis_url: str, busy_port: int
) -> None:
    proc = _process(
        "topology.cli", "run", str(config), "--no-watch", "--quiet",
        "--redis-url", redis_url, "--metrics-port", str(busy_port),
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"cannot serve metrics on port {busy_port}: Address already in use" in proc.stderr


@pytest.mark.parametrize("start", ["99999999999999999999999", "1-99999999999999999999999"])
def test_tail_from_an_id_out_of_range_is_a_usage_error(
    start: str, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before connecting: the closed port would otherwise make it exit 1.
    code, _, err = _cli(
        capsys, "tail", str(config), "orders", "--from", start, "--redis-url", "redis://127.0.0.1:1"
    )
    assert code == 2
    assert err == (
        f"ponos-topology tail: error: --from: invalid entry id {start!r}: "
        "its parts are at most 18446744073709551615\n"
    )


def test_validate_format_json_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text('version: "1"\nname: t\nstreams:\n  "x y": {ttl: 0s}\n  unused: {}\n')
    code, out, err = _cli(capsys, "validate", "--format", "json", str(path))
    assert code == 2 and err == ""
    assert json.loads(out) == [
        {
            "file": str(path),
            "line": 1,
            "column": 10,
            "path": "version",
            "severity": "error",
            "message": "expected the number 1, got string '1' (write it without quotes)",
        },
        {
            "file": str(path),
            "line": 4,
            "column": 3,
            "path": "streams['x y']",
            "severity": "error",
            "message": "invalid stream name 'x y': 1 to 512 characters, "
            "no space, NUL, '*', '?', '[' or ']' (pulse's rule)",
        },
        {
            "file": str(path),
            "line": 4,
            "column": 16,
            "path": "streams['x y'].ttl",
            "severity": "error",
            "message": "must be more than 0, got '0s'",
        },
    ]


def test_validate_format_json_of_a_valid_config_with_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "warn.yaml"
    path.write_text("version: 1\nname: t\nstreams:\n  unused: {}\n")
    code, out, _ = _cli(capsys, "validate", "-f", "json", str(path))
    assert code == 0
    (problem,) = json.loads(out)
    assert problem["severity"] == "warning" and (problem["line"], problem["column"]) == (4, 3)
    code, out, _ = _cli(capsys, "validate", "-f", "json", "--strict", str(path))
    assert code == 2 and json.loads(out)[0]["severity"] == "error"


def test_plan_exit_code_says_whether_anything_changes(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(capsys, "plan", "--exit-code", str(config), str(config))[:2] == (0, "no changes\n")
    changed = tmp_path / "changed.yaml"
    changed.write_text(CONFIG.replace("    outputs: [out]\n", "    outputs: [out]\n    batch: 9\n"))
    code, out, _ = _cli(capsys, "plan", "--exit-code", str(config), str(changed))
    assert code == 3 and "copy" in out
    assert _cli(capsys, "plan", str(config), str(changed))[0] == 0  # without the flag: 0


def test_graph_json_stays_json_when_a_handler_module_prints(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sys.modules.pop("input_handlers", None)  # import it here, printing
    code, out, err = _cli(capsys, "graph", str(config), "-f", "json")
    assert code == 0
    assert json.loads(out)["name"] == "input"
    assert "imported!" in err


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_help_has_no_markup_a_text_for_every_option_and_examples() -> None:
    commands = _commands()
    assert set(EXAMPLES) == set(commands)
    for name, command in commands.items():
        text = command.format_help()
        assert "``" not in text, name
        assert "examples:\n  ponos-topology " in text, name
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    assert "``" not in build_parser().format_help()


def test_python_dash_m_topology_is_the_command_line(config: Path) -> None:
    proc = _process("topology", "validate", str(config))
    assert proc.returncode == 0
    assert proc.stdout == "ok: 2 streams, 2 sinks, 2 actors\n"


def test_run_log_format_json_prints_the_final_summary_as_json(config: Path, redis_url: str) -> None:
    proc = _process(
        "topology.cli", "run", str(config), "--no-watch", "--redis-url", redis_url,
        "--log-format", "json", "--stop-when-idle", "0.2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line != "imported!"]
    (summary,) = [json.loads(line) for line in lines]
    assert summary["handled"] == {"copy": 0, "last": 0}
    assert summary["msg"].startswith("handled: copy 0, last 0 in ")
    for line in proc.stderr.splitlines():
        if line != "imported!":  # printed while validating: on stderr, not stdout
            json.loads(line)  # every log line too
