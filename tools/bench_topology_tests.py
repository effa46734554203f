"""How long ``ponos-topology test configs/`` takes, and where the time goes (not a test).

Three figures, each the median of ``--repeat`` runs of a fresh process:

- the whole command on the example test files (one throwaway server, every test);
- the floor: the same interpreter importing the command and starting and
  stopping one throwaway server, running no test;
- the sum of the tests' own times (from the JUnit report), of which the
  examples' retry backoffs are a fixed part.

The whole run over the floor is the cost of the tests themselves; a change to
the runner that makes the ratio grow is a regression worth a look.

    python tools/bench_topology_tests.py [--repeat 5] [PATH ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR = "from topology.testing import TestServer; import topology.cli.test\n" \
    "with TestServer() as s: s.url"  # fmt: skip


def timed(args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    subprocess.run(args, check=False, cwd=ROOT, env=env, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("paths", nargs="*", default=["configs/"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.xml"
        command = [sys.executable, "-m", "topology.cli", "test", *args.paths]
        command += ["--format", "junit", "-o", str(report)]
        whole = [timed(command) for _ in range(args.repeat)]
        floor = [timed([sys.executable, "-c", FLOOR]) for _ in range(args.repeat)]
        cases = list(ET.parse(report).getroot().iter("testcase"))
        tests = sum(float(case.get("time") or 0) for case in cases)
    whole_s, floor_s = statistics.median(whole), statistics.median(floor)
    print(f"{len(cases)} tests in {', '.join(args.paths)}")
    print(f"whole command      {whole_s:6.2f} s (median of {args.repeat})")
    print(f"floor (no test)    {floor_s:6.2f} s")
    print(f"tests' own time    {tests:6.2f} s (last run, JUnit)")
    print(f"whole / floor      {whole_s / floor_s:6.2f}")


if __name__ == "__main__":
    main()
