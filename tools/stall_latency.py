"""How long after a stalled path an event added after it is forwarded (default settings).

    python tools/stall_latency.py [--stalls 4] [--timeout 10s]

One ``ponos-topology run`` worker forwards ``in -> out`` through a TCP proxy
(tests/proxy.py). Each round: the worker is idle, the proxy freezes every open
connection (new ones go through), one event is added straight to the server, and
the time until it is in ``out`` is printed, next to the bound the deadlines
promise (the idle read's BLOCK plus ``redis.timeout``). Rounds stall at other
phases of the idle read. Exits 1 when a round takes longer than that bound plus
a second.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.proxy import TcpProxy
from topology.config.durations import parse_duration
from topology.runtime.actor import READ_BLOCK
from topology.server import ServerProcess

CONFIG = """\
version: 1
name: lat
redis: {{timeout: {timeout}}}
streams: {{in: {{}}, out: {{}}}}
sinks:
  fwd: {{streams: [in], handler: lat_handlers:forward, outputs: [out], start: oldest}}
"""
HANDLERS = "from topology import Emit\n\ndef forward(e):\n    return Emit('e', e.payload)\n"


def _until(client: redis.Redis, length: int) -> None:
    while client.xlen("pulse:stream:out") < length:
        time.sleep(0.02)  # another process's progress: nothing to await


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalls", type=int, default=4)
    parser.add_argument("--timeout", default="10s", help="the worker's redis.timeout")
    args = parser.parse_args(argv)
    bound = READ_BLOCK + parse_duration(args.timeout)
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="stall-") as tmp:
        folder = Path(tmp)
        (folder / "lat_handlers.py").write_text(HANDLERS)
        (folder / "lat.yaml").write_text(CONFIG.format(timeout=args.timeout))
        server = ServerProcess(folder / "redis")
        server.start()
        assert server.port
        proxy = TcpProxy("127.0.0.1", server.port).start()
        client = redis.Redis(port=server.port)
        argv_run = ["run", str(folder / "lat.yaml"), "--redis-url", proxy.url, "--quiet"]
        with open(folder / "worker.log", "w") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "topology.cli", *argv_run, "--no-watch"],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            try:
                for k in range(args.stalls):
                    client.xadd("pulse:stream:in", {"n": "warm", "p": "w"})
                    _until(client, 2 * k + 1)
                    time.sleep(1 + k * READ_BLOCK / max(1, args.stalls))  # another phase
                    proxy.stall()
                    started = time.monotonic()
                    client.xadd("pulse:stream:in", {"n": "after", "p": str(k)})
                    _until(client, 2 * k + 2)
                    took = time.monotonic() - started
                    worst = max(worst, took)
                    print(f"stall {k + 1}: forwarded {took:.1f}s after it (bound {bound:g}s)")
            finally:
                worker.terminate()
                worker.wait(30)
                proxy.stop()
                server.stop()
    return 0 if worst <= bound + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
