"""``emit`` and ``tail`` against a real server: names, payloads and topics round-trip."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from topology.cli import main
from topology.server import free_port

CONFIG = """\
version: 1
name: rt
streams:
  orders: {}
  orders-dlq: {}
sinks:
  enrich:
    streams: [orders]
    handler: handlers:enrich
    dead_letter: orders-dlq
  dlq:
    streams: [orders-dlq]
    handler: handlers:enrich
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "handlers.py").write_text("def enrich(event):\n    return None\n")
    path = tmp_path / "pipeline.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def sync_r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_emit_and_tail_round_trip_names_payloads_and_topics(
    config: Path, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ("--redis-url", redis_url)
    code, out, _ = _cli(capsys, "emit", str(config), "orders", "created", "héllo wörld", *url)
    assert code == 0 and out.strip().count("-") == 1  # the entry id
    binary = bytes(range(256))
    lines = [
        {"name": "as-json", "payload": {"id": 7, "tags": ["a"]}, "topic": "eu.orders"},
        {"name": "as-bytes", "payload": base64.b64encode(binary).decode(), "encoding": "base64"},
        {"name": "no-payload", "topic": "us.orders"},
        {"name": "multi-line", "payload": "a\nb"},
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    code, out, err = _cli(capsys, "emit", str(config), "orders", "--file", str(events), *url)
    assert code == 0, err
    assert out.startswith("added 4 events to orders (last id ")
    assert "\r" not in err  # no progress bar when stderr is not a terminal

    code, out, _ = _cli(capsys, "tail", str(config), "orders", "--format", "json", *url)
    assert code == 0
    got = [json.loads(line) for line in out.splitlines()]
    assert [(g["name"], g["topic"]) for g in got] == [
        ("created", None),
        ("as-json", "eu.orders"),
        ("as-bytes", None),
        ("no-payload", "us.orders"),
        ("multi-line", None),
    ]
    assert got[0]["payload"] == "héllo wörld"
    assert json.loads(got[1]["payload"]) == {"id": 7, "tags": ["a"]}
    assert got[2]["encoding"] == "base64" and base64.b64decode(got[2]["payload"]) == binary
    assert got[3]["payload"] == "" and got[4]["payload"] == "a\nb"

    code, out, _ = _cli(capsys, "tail", str(config), "orders", *url)
    text = out.splitlines()
    assert len(text) == 5  # one event, one line, even with a newline in the payload
    assert text[0].split(" ", 1)[1] == "- created héllo wörld"
    assert text[1].split(" ", 1)[1] == 'eu.orders as-json {"id":7,"tags":["a"]}'
    assert text[2].split(" ", 3)[3].startswith("b'\\x00\\x01")
    assert text[4].split(" ", 1)[1] == '- multi-line "a\\nb"'

    # tail's JSON lines are emit's input: copy the stream to the dead-letter stream
    copy = tmp_path / "copy.jsonl"
    copy.write_text("\n".join(json.dumps(g) for g in got))
    assert _cli(capsys, "emit", str(config), "orders-dlq", "-f", str(copy), *url)[0] == 0
    _, out, _ = _cli(capsys, "tail", str(config), "orders-dlq", "--format", "json", *url)
    again = [json.loads(line) for line in out.splitlines()]
    assert [(a["name"], a["topic"], a["payload"]) for a in again] == [
        (g["name"], g["topic"], g["payload"]) for g in got
    ]


def test_tail_limits_filters_and_starts_at_an_id(
    config: Path, redis_url: str, sync_r: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    key = "pulse:stream:orders"
    ids = [
        sync_r.xadd(key, {"n": f"e{i}", "p": str(i), **({"t": "eu"} if i % 2 else {})}).decode()
        for i in range(6)
    ]
    url = ("--redis-url", redis_url)
    _, out, _ = _cli(capsys, "tail", str(config), "orders", "-n", "2", *url)
    assert [line.split()[2] for line in out.splitlines()] == ["e4", "e5"]  # the last 2
    _, out, _ = _cli(capsys, "tail", str(config), "orders", "--from", "newest", "-n", "2", *url)
    assert [line.split()[2] for line in out.splitlines()] == ["e4", "e5"]
    _, out, _ = _cli(capsys, "tail", str(config), "orders", "-n", "2", "--topic", "eu", *url)
    assert [line.split()[2] for line in out.splitlines()] == ["e3", "e5"]
    _, out, _ = _cli(capsys, "tail", str(config), "orders", "-n", "50", *url)
    assert [line.split()[2] for line in out.splitlines()] == [f"e{i}" for i in range(6)]
    _, out, _ = _cli(capsys, "tail", str(config), "orders", "--from", ids[1], "-n", "2", *url)
    assert [line.split()[2] for line in out.splitlines()] == ["e1", "e2"]  # first 2 from there
    _, out, _ = _cli(capsys, "tail", str(config), "orders", "--from", "oldest", "-n", "2", *url)
    assert [line.split()[2] for line in out.splitlines()] == ["e0", "e1"]
    _, out, _ = _cli(capsys, "tail", str(config), "orders", "--topic", "eu", *url)
    assert [line.split()[2] for line in out.splitlines()] == ["e1", "e3", "e5"]
    _, out, _ = _cli(capsys, "tail", str(config), "orders", "--from", ids[4], *url)
    assert [line.split()[0] for line in out.splitlines()] == ids[4:]
    code, out, _ = _cli(capsys, "tail", str(config), "orders", "--from", "newest", *url)
    assert code == 0 and out == ""


def test_tail_shows_a_dead_letters_extra_fields_in_text_and_json(
    config: Path, redis_url: str, sync_r: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {
        "origin_stream": "orders",
        "origin_id": "1-0",
        "sink": "enrich",
        "attempts": "3",
        "error_type": "ValueError",
        "error": "bad amount: -1",
        "empty": "",
    }
    sync_r.xadd("pulse:stream:orders-dlq", {"n": "created", "p": '{"id":1}', **extra})
    url = ("--redis-url", redis_url)
    _, out, _ = _cli(capsys, "tail", str(config), "orders-dlq", *url)
    line = out.strip()
    assert line.split(" | ")[0].split(" ", 1)[1] == '- created {"id":1}'
    assert line.split(" | ")[1] == (
        "origin_stream=orders origin_id=1-0 sink=enrich attempts=3 error_type=ValueError "
        'error="bad amount: -1" empty=""'
    )
    _, out, _ = _cli(capsys, "tail", str(config), "orders-dlq", "--format", "json", *url)
    got = json.loads(out)
    assert got["fields"] == extra and got["payload"] == '{"id":1}'
    copy = config.parent / "dead.jsonl"  # emit takes it back, without the extra fields
    copy.write_text(out)
    assert _cli(capsys, "emit", str(config), "orders", "-f", str(copy), *url)[0] == 0
    assert sync_r.xrange("pulse:stream:orders")[0][1] == {b"n": b"created", b"p": b'{"id":1}'}


def test_tail_of_an_empty_stream_ends_at_once(
    config: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(capsys, "tail", str(config), "orders", "--redis-url", redis_url) == (0, "", "")


def test_tail_follow_prints_new_events_as_they_come(
    config: Path, redis_url: str, sync_r: redis.Redis
) -> None:
    first = sync_r.xadd("pulse:stream:orders", {"n": "before", "p": "1"}).decode()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "topology.cli",
            "tail",
            str(config),
            "orders",
            "--follow",
            "--from",
            first,
            "-n",
            "2",
            "--redis-url",
            redis_url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split()[2] == "before"  # tail is reading now
        sync_r.xadd("pulse:stream:orders", {"n": "after", "p": "2"})
        assert proc.stdout.readline().split()[2] == "after"
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tail_n_with_follow_prints_the_last_n_then_new_events(
    config: Path, redis_url: str, sync_r: redis.Redis
) -> None:
    for i in range(5):
        sync_r.xadd("pulse:stream:orders", {"n": f"old{i}", "p": "x"})
    argv = ["tail", str(config), "orders", "-n", "2", "-F", "--redis-url", redis_url]
    proc = subprocess.Popen(
        [sys.executable, "-m", "topology.cli", *argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert [proc.stdout.readline().split()[2] for _ in range(2)] == ["old3", "old4"]
        sync_r.xadd("pulse:stream:orders", {"n": "new", "p": "y"})
        assert proc.stdout.readline().split()[2] == "new"  # and it keeps following
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_emit_file_with_a_bad_line_adds_nothing(
    config: Path,
    redis_url: str,
    sync_r: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        textwrap.dedent(
            """\
            {"name": "ok", "payload": "1"}
            {"name": "broken", "payload":
            {"paylod": "typo", "name": "x"}
            ["not", "an", "object"]
            {"payload": "no name"}
            {"name": "ok2"}
            """
        )
    )
    code, out, err = _cli(
        capsys, "emit", str(config), "orders", "--file", str(events), "--redis-url", redis_url
    )
    assert code == 2 and out == ""
    assert f"{events}:2: invalid JSON" in err
    assert f"{events}:3: unknown key(s) 'paylod'" in err
    assert f"{events}:4: expected a JSON object" in err
    assert f"{events}:5: 'name' must be a non-empty string" in err
    assert f"{events}:1:" not in err and f"{events}:6:" not in err
    assert sync_r.exists("pulse:stream:orders") == 0


def test_emit_reads_stdin(
    config: Path,
    redis_url: str,
    sync_r: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"name": "a"}\n{"name": "b"}\n'))
    code, out, _ = _cli(capsys, "emit", str(config), "orders", "-f", "-", "--redis-url", redis_url)
    assert code == 0 and out.startswith("added 2 events")
    assert sync_r.xlen("pulse:stream:orders") == 2


def test_unknown_stream_is_a_usage_error_with_a_suggestion(
    config: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["emit", str(config), "ordrs", "x"], ["tail", str(config), "ordrs"]):
        code, _, err = _cli(capsys, *command, "--redis-url", redis_url)
        assert code == 2 and "did you mean 'orders'?" in err


def test_invalid_config_exits_2_with_located_problems(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nname: x\nstreams:\n  a: {}\nsinks:\n  s:\n    streams: [b]\n    handler: h:f\n"
    )
    for command in (["emit", str(bad), "a", "x"], ["tail", str(bad), "a"], ["status", str(bad)]):
        code, _, err = _cli(capsys, *command, "--redis-url", redis_url)
        assert code == 2
        assert f"{bad}:7:" in err and "unknown stream 'b'" in err


def test_unreachable_redis_exits_1_without_the_password(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://app:hunter2@127.0.0.1:{free_port()}/0"
    for command in (
        ["emit", str(config), "orders", "x"],
        ["tail", str(config), "orders"],
        ["status", str(config)],
    ):
        code, out, err = _cli(capsys, *command, "--redis-url", url)
        assert code == 1
        assert "hunter2" not in out + err
        assert "redis://app:***@127.0.0.1" in err and "--redis-url" in err


def test_emit_and_tail_share_the_embedded_server_and_its_data(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert _cli(capsys, "emit", str(config), "orders", "kept", "across commands")[0] == 0
    code, out, _ = _cli(capsys, "tail", str(config), "orders")
    assert code == 0 and out.split(" ", 1)[1] == "- kept across commands\n"
    assert not (config.parent / ".ponos-data" / "server.json").exists()  # stopped again


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_a_large_file_shows_progress_on_a_terminal(redis_url: str) -> None:
    import redis.asyncio as aioredis

    from topology.cli.emit import FILE_BATCH, _add_all
    from topology.streams import Connection

    client = aioredis.Redis.from_url(redis_url)
    try:
        stream = Connection(client).stream("orders")
        events = [("e", str(i).encode(), None) for i in range(2 * FILE_BATCH + 1)]
        err = _Terminal()
        last = await _add_all(stream, events, err)
        assert await client.xlen(stream.key) == len(events)
        assert last == (await client.xrevrange(stream.key, count=1))[0][0].decode()
        shown = err.getvalue()
        assert shown.count("\r") == 3 and f"{len(events)}/{len(events)} events (100%)" in shown
    finally:
        await client.aclose()


def test_bad_from_position_is_a_usage_error(
    config: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(
        capsys, "tail", str(config), "orders", "--from", "yesterday", "--redis-url", redis_url
    )
    assert code == 2 and "--from" in err


def test_no_server_binary_and_no_url_exits_1_naming_redis_url(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("PONOS_REDIS_SERVER", str(config.parent / "no-such-binary"))
    code, _, err = _cli(capsys, "emit", str(config), "orders", "x")
    assert code == 1 and "--redis-url" in err


def test_an_unwritable_data_dir_exits_1_naming_the_options(
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = _cli(capsys, "status", str(config), "--data-dir", str(blocker / "data"))
    assert code == 1 and "--data-dir" in err and "--redis-url" in err


def test_sigterm_ends_tail_follow_cleanly_and_stops_its_embedded_server(config: Path) -> None:
    import os
    import signal

    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "topology.cli", "tail", str(config), "orders", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    state = config.parent / ".ponos-data" / "server.json"
    try:
        deadline = time.monotonic() + 10
        while not state.exists():  # another process's progress: no event to await
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        server_pid = json.loads(state.read_text())["pid"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not state.exists()  # stopped in order, not orphaned state
        with pytest.raises(ProcessLookupError):
            os.kill(server_pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
