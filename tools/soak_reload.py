"""Hot-reload soak: continuous load, a config rewrite every 0.5 s, then count every event.

Run from the repo root:

    python tools/soak_reload.py                  # 2 minutes, 2000 events/s
    python tools/soak_reload.py --minutes 10 --rate 5000 --interval 0.5

It starts its own server (``topology.server.ServerProcess``), writes a topology
and its handlers into a temporary folder, runs ``ponos-topology run`` on it in a
subprocess (watching the file), and a producer thread adds events at ``--rate``
to two streams, each with a unique id as its payload. Every ``--interval``
seconds the config is rewritten the way editors save (write aside, rename over),
cycling through: remove a stream from a sink, rescale, change the handler
(sync <-> async), remove a sink, add a stream back, add the sink back.

At the end the producer stops, a final config that reads everything is written,
the run drains, and the script prints: events produced, handled, lost and
duplicated on both output streams, reloads applied / rolled back / rejected, and
the reload latency p50/p99 — from the file write to the run's
``generation N running`` log line. Exit status 1 when anything was lost or
duplicated, so it can gate CI.

Why both outputs: ``fwd`` is the sink whose streams, consumers and handler
change; ``extra`` is removed and added again, and must resume from its group's
position without skipping or repeating an event.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

HANDLERS = """
from topology import Emit

def forward(event):
    return Emit("out", event.payload)

async def forward_async(event):
    return Emit("out", event.payload)

def extra(event):
    return Emit("out_extra", event.payload)
"""

#: The cycle of configs: each differs from the one before it (and the last from the first).
VARIANTS: list[dict[str, Any]] = [
    dict(streams="in, more", consumers=2, handler="forward", extra=True),
    dict(streams="in", consumers=2, handler="forward", extra=True),  # remove a stream
    dict(streams="in", consumers=3, handler="forward", extra=True),  # rescale
    dict(streams="in", consumers=3, handler="forward_async", extra=True),  # change handler
    dict(streams="in", consumers=3, handler="forward_async", extra=False),  # remove a sink
    dict(streams="in, more", consumers=3, handler="forward_async", extra=False),  # add stream
    dict(streams="in, more", consumers=1, handler="forward", extra=True),  # add sink, rescale
]
FINAL = VARIANTS[0]
GENERATION = re.compile(r"generation (\d+) running")


def config_text(streams: str, consumers: int, handler: str, extra: bool) -> str:
    text = f"""version: 1
name: soak
defaults: {{start: oldest, ack_grace: 2s, batch: 128}}
streams: {{in: {{}}, more: {{}}, out: {{}}, out_extra: {{}}}}
sinks:
  fwd:
    streams: [{streams}]
    handler: soak_handlers:{handler}
    consumers: {consumers}
    outputs: [out]
"""
    if extra:
        text += """  extra:
    streams: [in]
    handler: soak_handlers:extra
    outputs: [out_extra]
"""
    return text


def write_renamed(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Producer(threading.Thread):
    """Adds ``rate`` events/s, alternating between ``in`` and ``more``, payload ``<n>``."""

    def __init__(self, url: str, rate: int) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.rate = rate
        self.sent = {"in": 0, "more": 0}
        self.seq = 0
        self.stop_flag = threading.Event()
        self.started_at = self.ended_at = 0.0

    def run(self) -> None:
        tick = 0.01
        per_tick = max(1, round(self.rate * tick))
        self.started_at = time.monotonic()
        next_tick = self.started_at
        while not self.stop_flag.is_set():
            pipe = self.client.pipeline(transaction=False)
            for _ in range(per_tick):
                stream = "in" if self.seq % 2 == 0 else "more"
                pipe.xadd(f"pulse:stream:{stream}", {"n": "e", "p": str(self.seq)})
                self.sent[stream] += 1
                self.seq += 1
            pipe.execute()
            next_tick += tick
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the offered rate
        self.ended_at = time.monotonic()


class LogReader(threading.Thread):
    """Reads the run's stderr: when each ``generation N running`` line arrived."""

    def __init__(self, stream: Any, echo: bool) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.echo = echo
        self.generations: list[tuple[float, int]] = []
        self.rolled_back = 0
        self.rejected = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        for line in self.stream:
            now = time.monotonic()
            if self.echo:
                sys.stderr.write(line)
            with self.lock:
                match = GENERATION.search(line)
                if match:
                    self.generations.append((now, int(match.group(1))))
                if "reload rolled back" in line:
                    self.rolled_back += 1
                if "reload rejected" in line:
                    self.rejected += 1
                if " ERROR " in line or "CRITICAL" in line or "Traceback" in line:
                    self.errors.append(line.rstrip())

    def first_after(self, when: float) -> float | None:
        with self.lock:
            return next((t for t, _ in self.generations if t >= when), None)


def payloads(client: redis.Redis, stream: str) -> list[bytes]:
    out: list[bytes] = []
    last = "-"
    while True:
        rows = client.xrange(f"pulse:stream:{stream}", min=last, count=10_000)
        if last != "-":
            rows = rows[1:]
        if not rows:
            return out
        out.extend(f[b"p"] for _, f in rows)
        last = rows[-1][0].decode()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--rate", type=int, default=2000, help="events/s offered")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between rewrites")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--verbose", action="store_true", help="echo the run's log")
    args = parser.parse_args()

    from topology.server import ServerProcess

    with tempfile.TemporaryDirectory(prefix="ponos-soak-") as tmp:
        folder = Path(tmp)
        (folder / "server").mkdir()
        server = ServerProcess(folder / "server").start()
        try:
            return soak(args, folder, server.url)
        finally:
            server.stop()


def start_run(args: argparse.Namespace, config: Path, url: str) -> subprocess.Popen[str] | None:
    """``run`` on ``config``, once it watches the file (None if it exits before)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "topology.cli", "run", str(config), "--redis-url", url, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # a write before the watch is armed would go unseen
        if args.verbose:
            sys.stderr.write(line)
        if "watching" in line:
            return proc
    print("run exited before watching its config", file=sys.stderr)
    return None


def wait_for_outputs(
    client: redis.Redis, proc: subprocess.Popen[str], out: int, extra: int, timeout: float
) -> None:
    """Until ``out`` and ``out_extra`` hold ``out`` and ``extra`` entries, ``run`` exits,
    or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if (
            client.xlen("pulse:stream:out") >= out
            and client.xlen("pulse:stream:out_extra") >= extra
        ):
            return
        time.sleep(0.2)  # polling another process's progress


def soak(args: argparse.Namespace, folder: Path, url: str) -> int:
    client = redis.Redis.from_url(url)
    (folder / "soak_handlers.py").write_text(HANDLERS)
    config = folder / "soak.yaml"
    config.write_text(config_text(**VARIANTS[0]))
    proc = start_run(args, config, url)
    if proc is None or proc.stderr is None:
        return 2
    logs = LogReader(proc.stderr, args.verbose)
    logs.start()
    producer = Producer(url, args.rate)
    producer.start()
    writes: list[float] = []
    started = time.monotonic()
    end = started + args.minutes * 60
    k = 0
    try:
        while time.monotonic() < end and proc.poll() is None:
            k += 1
            time.sleep(args.interval)  # the cadence of rewrites under test
            write_renamed(config, config_text(**VARIANTS[k % len(VARIANTS)]))
            writes.append(time.monotonic())
        producer.stop_flag.set()
        producer.join()
        # read everything: the final config (a rewrite even when it equals the current one)
        time.sleep(args.interval)
        if k % len(VARIANTS) != 0:
            write_renamed(config, config_text(**FINAL))
            writes.append(time.monotonic())
        deadline = time.monotonic() + 30
        while logs.first_after(writes[-1]) is None and time.monotonic() < deadline:
            time.sleep(0.05)  # polling another process's log for the last reload
        expected_in = {str(i).encode() for i in range(0, producer.seq, 2)}
        expected_all = {str(i).encode() for i in range(producer.seq)}
        wait_for_outputs(client, proc, producer.seq, len(expected_in), args.drain_timeout)
        drained_in = time.monotonic() - (producer.ended_at or time.monotonic())
    finally:
        producer.stop_flag.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        logs.join(5)
    out_rows = payloads(client, "out")
    extra_rows = payloads(client, "out_extra")
    latencies = []
    for when in writes:
        seen = logs.first_after(when)
        if seen is not None:
            latencies.append(seen - when)
    gens = [g for _, g in logs.generations]
    elapsed = (producer.ended_at or time.monotonic()) - producer.started_at

    def report(name: str, rows: list[bytes], expected: set[bytes]) -> tuple[int, int]:
        got = set(rows)
        lost = len(expected - got)
        dup = len(rows) - len(got)
        unexpected = len(got - expected)
        print(
            f"{name}: expected {len(expected)}, handled {len(rows)}, lost {lost}, "
            f"duplicated {dup}, unexpected {unexpected}"
        )
        return lost, dup + unexpected

    print(
        f"soak: {args.minutes:g} min, offered {args.rate} ev/s, rewrite every "
        f"{args.interval:g}s; run exit {proc.returncode}"
    )
    print(
        f"produced {producer.seq} events in {elapsed:.1f}s ({producer.seq / elapsed:.0f} ev/s: "
        f"in {producer.sent['in']}, more {producer.sent['more']}); "
        f"drained {drained_in:.1f}s after the producer stopped"
    )
    lost1, dup1 = report("fwd -> out", out_rows, expected_all)
    lost2, dup2 = report("extra -> out_extra", extra_rows, expected_in)
    # generation 1 is the start; every later generation is an applied reload
    print(
        f"config writes {len(writes)}, reloads applied {max(0, (gens[-1] if gens else 1) - 1)} "
        f"(last generation {gens[-1] if gens else '?'}), rolled back {logs.rolled_back}, "
        f"rejected {logs.rejected}"
    )
    if latencies:
        print(
            f"reload latency (write -> 'generation N running'): p50 "
            f"{statistics.median(latencies) * 1000:.0f} ms, p99 "
            f"{percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms "
            f"({len(latencies)} writes)"
        )
    if logs.errors:
        print(f"{len(logs.errors)} error lines in the run's log; first: {logs.errors[0]}")
    print(out.strip().splitlines()[-1] if out.strip() else "(no summary from run)")
    return 1 if (lost1 or dup1 or lost2 or dup2) else 0


if __name__ == "__main__":
    sys.exit(main())
