"""Profile one engine worker on the forward stage (py-spy), with the server-side cost.

    python tools/profile_forward.py [--events 200000] [--out /tmp/prof]

Starts its own server, pre-loads ``--events`` events, runs ``ponos-topology run``
under ``py-spy record`` (raw collapsed stacks, then a top-functions table by
self and inclusive share), and prints ``INFO commandstats`` so the time Redis
spends in the commit script and the reads is visible beside the Python profile.
Needs py-spy in the interpreter's bin folder (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

from bench_pipeline import engine_cmd, preload, rate_from_ids, write_config  # noqa: E402

from topology.server import ServerProcess  # noqa: E402


def top(collapsed: Path, n: int) -> None:
    """Self and inclusive shares per function from py-spy's collapsed stacks."""
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        c = int(count)
        total += c
        frames = stack.split(";")
        self_t[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    print(f"{total} samples")
    print("-- self")
    for f, c in self_t.most_common(n):
        print(f"{100 * c / total:5.1f}%  {f}")
    print("-- inclusive")
    for f, c in incl.most_common(n):
        print(f"{100 * c / total:5.1f}%  {f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--out", default="/tmp/prof")
    p.add_argument("--rate", type=int, default=250)
    p.add_argument("--top", type=int, default=35)
    p.add_argument("--native", action="store_true")
    p.add_argument("--gil", action="store_true", help="only samples holding the GIL (CPU)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ponos-prof-"))
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    with ServerProcess(work / "redis") as server:
        url = server.url
        config = write_config(work, {"fwd": ("in", "out")})
        preload(url, "in", args.events)
        r = redis.Redis.from_url(url)
        r.config_resetstat()
        collapsed = out / "forward.txt"
        cmd = [pyspy, "record", "-r", str(args.rate), "-f", "raw", "-o", str(collapsed)]
        if args.gil:
            cmd.append("--gil")
        if args.native:
            cmd.append("--native")
        cmd += ["--", *engine_cmd(config, url, "--stop-when-idle", "0.5")]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"engine rate under py-spy: {rate_from_ids(url, 'out', args.events):,.0f}/s")
        for name, stats in sorted(r.info("commandstats").items()):
            print(
                f"{name:28} calls {stats['calls']:>8}  usec/call {stats['usec_per_call']:>9.1f}"
                f"  total {stats['usec'] / 1e6:6.2f}s"
            )
        r.close()
    top(collapsed, args.top)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
