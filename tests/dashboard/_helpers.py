"""The topology the dashboard tests run, and the subprocesses that serve it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import wait_until

HANDLERS = """\
def work(event):
    if b"fail" in event.payload:
        raise ValueError("this event fails")
    return None

def audit(event):
    return None
"""

CONFIG = """\
version: 1
name: {name}
defaults: {{start: oldest, batch: 16}}
streams:
  in: {{}}
  out: {{}}
  dlq: {{}}
sinks:
  work:
    streams: [in]
    handler: web_handlers:work
    outputs: [out]
    retry: {{max_attempts: 2, backoff: 10ms, max_backoff: 10ms}}
    dead_letter: dlq
"""

AUDIT = """\
  audit:
    streams: [out, dlq]
    handler: web_handlers:audit
"""


def write_config(folder: Path, name: str, *, audit: bool = False) -> Path:
    """The config ``name`` in ``folder`` beside its handlers (``audit``: a second sink)."""
    (folder / "web_handlers.py").write_text(HANDLERS)
    path = folder / f"{name}.yaml"
    path.write_text(CONFIG.format(name=name) + (AUDIT if audit else ""))
    return path


def start(args: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``ponos-topology ARGS``; return it and the dashboard URL it prints or logs."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "topology.cli", *args], stdout=out, stderr=subprocess.STDOUT
        )
    found: list[str] = []

    def url_printed() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {log.read_text()}")
        found[:] = re.findall(r"http://127\.0\.0\.1:\d+/", log.read_text())
        return bool(found)

    try:
        wait_until(url_printed, 60.0, "the dashboard URL")
    except BaseException:
        stop(proc)
        raise
    return proc, found[0]


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
