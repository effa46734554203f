"""The server launcher shared by the fixtures and the embedded default."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from topology.server import ServerProcess


def test_server_answers_and_stops_by_pid(server_binary: str, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, binary=server_binary).start()
    pid = server.pid
    assert pid is not None and server.ping()
    server.stop()
    assert not server.ping()
    assert not _alive(pid)


def test_server_dies_when_its_parent_is_killed(server_binary: str, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from topology.server import ServerProcess
        s = ServerProcess({str(tmp_path)!r}, binary={server_binary!r}).start()
        print(s.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert _alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # waiting on another process's death: no event to await
    assert not _alive(child_pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); reap-less check through /proc.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
