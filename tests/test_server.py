"""The server launcher shared by the fixtures and the embedded default."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.helpers import process_alive
from topology.server import ServerProcess


def test_server_answers_and_stops_by_pid(server_binary: str, tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, binary=server_binary).start()
    pid = server.pid
    assert pid is not None and server.ping()
    server.stop()
    assert not server.ping()
    assert not process_alive(pid)


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
    assert process_alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while process_alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # waiting on another process's death: no event to await
    assert not process_alive(child_pid)
