"""The embedded server: start, reuse, stale state, persistence, death with its parent."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import redis

from tests.helpers import process_alive
from topology.runtime.embedded import (
    EmbeddedServer,
    EmbeddedServerError,
    EmbeddedServerRunning,
    default_data_dir,
)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_default_data_dir_is_beside_the_config(tmp_path: Path) -> None:
    assert default_data_dir(tmp_path / "cfg" / "p.yaml") == (tmp_path / "cfg" / ".ponos-data")


def test_started_server_is_recorded_and_found(server_binary: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = EmbeddedServer(data, binary=server_binary)
    url = server.start()
    try:
        assert url.startswith("unix://:") and (data / "valkey.sock").exists()
        assert EmbeddedServer.running(data) == url
        state = json.loads((data / "server.json").read_text())
        assert state["pid"] == server.pid and state["port"] > 0
        with pytest.raises(EmbeddedServerRunning) as info:  # never two servers on one AOF
            EmbeddedServer(data, binary=server_binary).start()
        assert info.value.url == url
    finally:
        server.stop()
    assert EmbeddedServer.running(data) is None
    assert not (data / "server.json").exists() and not (data / "valkey.sock").exists()


def test_stale_state_is_cleaned_at_start(server_binary: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "server.json").write_text(json.dumps({"pid": _dead_pid(), "port": 1, "socket": None}))
    (data / "valkey.sock").write_text("leftover")
    assert EmbeddedServer.running(data) is None
    server = EmbeddedServer(data, binary=server_binary)
    try:
        url = server.start()
        assert EmbeddedServer.running(data) == url
        assert json.loads((data / "server.json").read_text())["pid"] == server.pid
    finally:
        server.stop()


def test_a_live_pid_that_is_not_our_server_is_not_reused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # Our own pid is alive, but nothing answers on the recorded port: not a server of ours.
    (data / "server.json").write_text(json.dumps({"pid": os.getpid(), "port": 1, "socket": None}))
    assert EmbeddedServer.running(data) is None


def test_data_survives_stop_and_start(server_binary: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EmbeddedServer(data, binary=server_binary) as server:
        client = redis.Redis.from_url(server.url)
        client.xadd("s", {"n": "kept"})
        client.close()
    assert (data / "appendonlydir").is_dir()
    with EmbeddedServer(data, binary=server_binary) as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert [e[1][b"n"] for e in client.xrange("s")] == [b"kept"]
        finally:
            client.close()


def test_long_data_dir_falls_back_to_the_port(server_binary: str, tmp_path: Path) -> None:
    data = tmp_path / ("d" * 120)
    with EmbeddedServer(data, binary=server_binary) as server:
        assert server.url.startswith("redis://:") and "@127.0.0.1:" in server.url
        assert EmbeddedServer.running(data) == server.url


def test_missing_binary_error_names_redis_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PONOS_REDIS_SERVER", str(tmp_path / "no-such-server"))
    with pytest.raises(EmbeddedServerError, match="--redis-url"):
        EmbeddedServer(tmp_path / "data").start()


def test_server_dies_with_its_parent_killed_9(server_binary: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    script = textwrap.dedent(
        f"""
        import time
        from topology.runtime.embedded import EmbeddedServer
        s = EmbeddedServer({str(data)!r}, binary={server_binary!r})
        s.start()
        print(s.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert process_alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while process_alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)  # waiting on another process's death: no event to await
    assert not process_alive(child)
    assert EmbeddedServer.running(data) is None  # the state file it left is stale
    with EmbeddedServer(data, binary=server_binary) as server:
        assert server.pid != child


def test_only_clients_with_the_password_get_in(server_binary: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EmbeddedServer(data, binary=server_binary) as server:
        state = json.loads((data / "server.json").read_text())
        stranger = redis.Redis(host="127.0.0.1", port=state["port"])
        try:
            with pytest.raises(redis.AuthenticationError):
                stranger.ping()
        finally:
            stranger.close()
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping()
        finally:
            client.close()
        for secret_file in ("server.json", "server.conf"):
            assert (data / secret_file).stat().st_mode & 0o077 == 0
        assert data.stat().st_mode & 0o077 == 0
        assert state["password"] not in " ".join(_cmdline(server.pid))  # not visible in ps


def _cmdline(pid: int | None) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode() for part in raw.split(b"\0") if part]


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as the kernel shows them) listening on TCP ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for row in Path(table).read_text().splitlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.append(address)
    return found


def test_embedded_server_files_port_and_socket_are_its_owner_s_only(server_binary: str) -> None:
    # A short folder, so the unix socket path fits and the socket is created.
    with tempfile.TemporaryDirectory(prefix="pt-") as folder:
        data = Path(folder) / "d"
        with EmbeddedServer(data, binary=server_binary):
            state = json.loads((data / "server.json").read_text())
            for secret_file in ("server.json", "server.conf"):
                assert stat.S_IMODE((data / secret_file).stat().st_mode) == 0o600, secret_file
            # Loopback only: 127.0.0.1 (0100007F in the kernel's byte order), no wildcard.
            assert _listening(state["port"]) == ["0100007F"]
            socket_path = Path(state["socket"])
            assert socket_path.is_socket()
            mode = stat.S_IMODE(socket_path.stat().st_mode)
            assert mode & 0o077 == 0, oct(mode)  # neither group nor others may even connect
