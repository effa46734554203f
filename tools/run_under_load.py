"""Run the test suite while CPU hogs keep every core busy: tests that pass only when idle fail.

CI machines are shared. A test that waits on time instead of on an event, or
holds a bound without tolerance, passes on an idle laptop and fails there. This
starts one busy-looping process per core (two by default), runs the suite
``--runs`` times with the given interpreter, stops the hogs whatever happens,
and prints the tests that failed in each run.

    python tools/run_under_load.py                      # this interpreter, 1 run
    python tools/run_under_load.py --runs 3 -- tests/streams -x
    python tools/run_under_load.py --python /path/to/venv313/bin/python

The interpreter must have the project and its test extra installed; the
checkout is put first on ``PYTHONPATH`` so its code is the one tested.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOG = "while True: pass"
FAILED = re.compile(r"^(FAILED|ERROR) (\S+)", re.MULTILINE)


@contextmanager
def cpu_hogs(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes spinning on a core each, killed on the way out."""
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(count)]
    try:
        yield hogs
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


def run_suite(python: str, pytest_args: Sequence[str], log: Path) -> tuple[int, list[str], float]:
    """One run of the suite (its whole output in ``log``): exit code, failed test ids, wall time."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    started = time.monotonic()
    proc = subprocess.run(
        [python, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *pytest_args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    log.write_text(proc.stdout)
    sys.stdout.write(proc.stdout[-3000:])
    return proc.returncode, [m.group(2) for m in FAILED.finditer(proc.stdout)], elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter to test with")
    parser.add_argument("--runs", type=int, default=1, help="how many runs of the suite")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2, help="busy processes")
    parser.add_argument("--log-dir", type=Path, help="where each run's output goes (a temp dir)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="under-load-"))
    log_dir.mkdir(parents=True, exist_ok=True)

    results: list[tuple[int, list[str], float]] = []
    with cpu_hogs(args.hogs):
        for run in range(1, args.runs + 1):
            print(f"== run {run}/{args.runs}: {args.python} under {args.hogs} CPU hogs", flush=True)
            results.append(run_suite(args.python, args.pytest_args, log_dir / f"run{run}.log"))
    print(f"\n== summary (whole outputs in {log_dir})")
    for run, (code, failed, elapsed) in enumerate(results, 1):
        verdict = "passed" if code == 0 else f"FAILED (exit {code})"
        print(f"run {run}: {verdict} in {elapsed:.0f} s")
        for test in failed:
            print(f"  {test}")
    return max(code for code, _, _ in results)


if __name__ == "__main__":
    sys.exit(main())
