"""CPU an engine worker spends per small batch under light load (one stage).

    python tools/profile_light.py [--rate 2000] [--seconds 5] [--stages 1]

Offers ``--rate`` events/s one XADD at a time (so most reads return one event),
and prints the worker's CPU time per event from /proc (user + system): under
light load the per-batch overhead, not the per-event cost, sets the latency.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

from bench_pipeline import engine_cmd, key, self_cmd, write_config  # noqa: E402

from topology.server import ServerProcess  # noqa: E402

PYSPY = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=2000)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--stages", type=int, default=1)
    p.add_argument("--baseline", action="store_true", help="the hand-written loop instead")
    p.add_argument("--pyspy", default="", help="also record a py-spy profile to this file")
    p.add_argument("--gil", action="store_true", help="py-spy: only samples holding the GIL")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ponos-light-"))
    names = [chr(ord("a") + i) for i in range(args.stages + 1)]
    stages = {f"s{i}": (names[i], names[i + 1]) for i in range(args.stages)}
    with ServerProcess(work / "redis") as server:
        url = server.url
        config = write_config(work, stages)
        cmd = engine_cmd(config, url)
        if args.baseline:  # one hand-written forward loop per stage (the first one measured)
            cmd = self_cmd("_forward", url, names[0], names[1], "0", "s0")
            rest = [
                subprocess.Popen(self_cmd("_forward", url, src, dst, "0", name))
                for name, (src, dst) in list(stages.items())[1:]
            ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = redis.Redis.from_url(url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if r.xinfo_groups(key(names[-2])):
                    break
            except redis.ResponseError:
                pass
            time.sleep(0.05)  # polling another process's start-up
        spy = None
        if args.pyspy:
            spy = subprocess.Popen(
                [
                    PYSPY,
                    "record",
                    "-r",
                    "500",
                    "-f",
                    "raw",
                    *(["--gil"] if args.gil else []),
                    "-o",
                    args.pyspy,
                    "-d",
                    str(int(args.seconds)),
                    "-p",
                    str(proc.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
        before = cpu_seconds(proc.pid)
        total = int(args.rate * args.seconds)
        start = time.perf_counter()
        for i in range(total):
            due = start + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)  # pacing, not synchronisation
            r.xadd(key(names[0]), {"n": "tick", "p": b"x" * 100})
        while r.xlen(key(names[-1])) < total:
            time.sleep(0.01)  # polling another process's progress
        used = cpu_seconds(proc.pid) - before
        wall = time.perf_counter() - start
        if spy is not None:
            spy.wait()  # py-spy writes its file when its --duration ends
        for child in [proc, *(rest if args.baseline else [])]:
            child.terminate()
            child.wait()
        r.close()
    print(
        f"{total} events through {args.stages} stage(s) in {wall:.1f}s: worker CPU "
        f"{used:.2f}s = {used / wall * 100:.0f}% of a core, "
        f"{used / total / args.stages * 1e6:.0f} µs per event per stage"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
