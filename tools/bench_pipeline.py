"""Pipeline benchmark: the engine against hand-written redis-py loops, same run, same server.

Run from the repo root (the README shows it):

    python tools/bench_pipeline.py            # full run, ~8 minutes
    python tools/bench_pipeline.py --quick    # fewer events, one run each

It starts its own server (the binary the tests use), and measures, as median
[min-max] of ``--runs`` runs:

1. forward stage: one sink, a sync handler returning one Emit per event, N events
   pre-loaded; the baseline is a hand-written XREADGROUP COUNT 500 -> XADD each +
   XACK in one MULTI/EXEC loop (sync redis-py + hiredis). Throughput is measured
   from the output stream's entry ids (first to last), so process start-up is
   excluded for both sides alike.
2. 3-stage chain at a fixed offered load (5k and 20k events/s from a separate
   producer process), the engine as one ``run --workers N`` (``--chain-workers``,
   default 2) beside the hand-written 3-process chain: end-to-end latency
   p50/p99/max, measured by a separate
   process reading the last stream, each the median of ``--runs`` windows taken
   alternately with the baseline's (the VM's speed drifts between minutes); and
   the saturated throughput.
3. scale-out: ``run --workers 2`` vs ``--workers 1`` on the forward stage; beside
   it the hand-written loop as 1 vs 2 competing processes (this machine's ceiling).
4. memory: peak RSS of a worker running 8 actors (``wait4`` rusage of the child),
   and of a ``--workers 2`` pool's parent and children (``VmHWM``, sampled).
5. peers: the same forward stage with dramatiq (Redis broker) and FastStream
   (Redis streams), when they import in ``--peers-python``.
6. ``--stateful``: a keyed-state forward stage (a running count per key of
   ``--state-keys`` keys, one output per event). The baseline is hand-written:
   XREADGROUP COUNT 500 -> the batch's keys read with HGET (one pipeline) ->
   per event the count updated -> HSET of each key + XADD each + XACK in one
   MULTI/EXEC. Until the engine runs stateful sinks only the baseline and the
   stateless forward stage of the same run are measured; the engine's keyed
   stage is to be set beside them as ratios to both.

Figures are printed as a table and written as JSON (``--json``); each of the
targets is printed with its ratio to the hand-written figure of the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from topology.server import ServerProcess  # noqa: E402

PAYLOAD = b"x" * 100
PREFIX = "pulse:stream:"


# --------------------------------------------------------------------------- helpers


def key(stream: str) -> str:
    return PREFIX + stream


def preload(
    url: str, stream: str, n: int, *, with_ts: bool = False, keys: int | None = None
) -> None:
    """Add ``n`` pulse-format events (fields n, p) to ``stream``, pipelined.

    With ``keys``: ~100-byte JSON payloads ``{"user": "u<i % keys>", ...}`` (the keyed stage).
    """
    r = redis.Redis.from_url(url)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        body = PAYLOAD if keys is None else json.dumps({"user": f"u{i % keys}", "pad": "x" * 70})
        pipe.xadd(key(stream), {"n": "order", "p": body})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    r.close()


def id_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


def rate_from_ids(url: str, stream: str, expected: int) -> float:
    """Steady output rate of ``stream`` from its first and last entry ids (events/s)."""
    r = redis.Redis.from_url(url)
    try:
        length = r.xlen(key(stream))
        if length != expected:
            raise RuntimeError(f"{stream}: {length} events, expected {expected}")
        first = r.xrange(key(stream), count=1)[0][0]
        last = r.xrevrange(key(stream), count=1)[0][0]
    finally:
        r.close()
    span = max(id_ms(last) - id_ms(first), 1) / 1000
    return (expected - 1) / span


def flush(url: str) -> None:
    r = redis.Redis.from_url(url)
    r.flushall()
    r.close()


def wait_len(url: str, stream: str, n: int, timeout: float) -> None:
    r = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    try:
        while r.xlen(key(stream)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{stream} reached {r.xlen(key(stream))}/{n} in {timeout}s")
            time.sleep(0.05)  # polling another process's progress
    finally:
        r.close()


def run_until_len(url: str, stream: str, n: int, procs: list[subprocess.Popen[bytes]]) -> None:
    """Let ``procs`` (long-running stages) work until ``stream`` holds ``n``; stop them."""
    try:
        wait_len(url, stream, n, timeout=600)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(s: dict[str, float], unit: str = "") -> str:
    return f"{s['median']:,.0f}{unit} [{s['min']:,.0f}-{s['max']:,.0f}]"


def self_cmd(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


# --------------------------------------------------------------------------- hand-written loops


def _batches(r: redis.Redis, src: str, limit: int, group: str, consumer: str) -> Iterator[Any]:
    """The hand-written loops' reads: XREADGROUP COUNT 500 until ``limit`` events (0: forever)."""
    with contextlib.suppress(redis.ResponseError):  # the group exists: resume it
        r.xgroup_create(key(src), group, id="0", mkstream=True)
    done = 0
    while limit <= 0 or done < limit:
        resp = r.xreadgroup(group, consumer, {key(src): ">"}, count=500, block=1000)
        if resp:
            entries = resp[0][1]
            yield entries
            done += len(entries)


def baseline_forward(
    url: str, src: str, dst: str, limit: int, group: str = "fwd", consumer: str = "c1"
) -> None:
    """The hand-written forward stage: XREADGROUP COUNT 500 -> XADD each + XACK, one MULTI/EXEC."""
    r = redis.Redis.from_url(url)
    for entries in _batches(r, src, limit, group, consumer):
        pipe = r.pipeline(transaction=True)
        for _id, fields in entries:
            pipe.xadd(key(dst), fields)
        pipe.xack(key(src), group, *[e[0] for e in entries])
        pipe.execute()


def state_key(user: str) -> str:
    return f"bench:state:{user}"


def baseline_stateful_forward(
    url: str, src: str, dst: str, limit: int, group: str = "fwd", consumer: str = "c1"
) -> None:
    """The hand-written keyed-state stage: per batch, the keys' states read in one pipeline
    (HGET), each event counted into its key's state, then HSET of every changed key, one
    XADD per event and the XACK in one MULTI/EXEC.

    As fast as a hand-written loop gets, not as safe as the engine: nothing checks that
    another consumer changed a key between the read and the write (one consumer runs here).
    """
    r = redis.Redis.from_url(url)
    for entries in _batches(r, src, limit, group, consumer):
        users = [json.loads(fields[b"p"])["user"] for _id, fields in entries]
        distinct = list(dict.fromkeys(users))
        read = r.pipeline(transaction=False)
        for user in distinct:
            read.hget(state_key(user), "s")
        states = {
            u: json.loads(raw) if raw else {}
            for u, raw in zip(distinct, read.execute(), strict=True)
        }
        pipe = r.pipeline(transaction=True)
        for user in users:
            state = states[user]
            state["n"] = state.get("n", 0) + 1
            pipe.xadd(key(dst), {"n": "count", "p": json.dumps({"user": user, "n": state["n"]})})
        for user, state in states.items():
            pipe.hset(state_key(user), "s", json.dumps(state))
        pipe.xack(key(src), group, *[e[0] for e in entries])
        pipe.execute()


def produce_at_rate(url: str, stream: str, rate: float, seconds: float) -> None:
    """Offer ``rate`` events/s for ``seconds``; each payload carries its send time."""
    r = redis.Redis.from_url(url)
    total = int(rate * seconds)
    start = time.perf_counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        if due > sent:
            pipe = r.pipeline(transaction=False)
            for _ in range(due - sent):
                pipe.xadd(key(stream), {"n": "tick", "p": repr(time.time()).encode()})
            pipe.execute()
            sent = due
        else:
            time.sleep(min(0.0005, 1 / rate))  # pacing, not synchronisation
    r.close()


def measure_latency(url: str, stream: str, count: int, out: str) -> None:
    """Read ``stream`` from its start; record arrival minus send time for ``count`` events."""
    r = redis.Redis.from_url(url)
    cursor = "0"
    lat: list[float] = []
    deadline = time.monotonic() + 600
    while len(lat) < count and time.monotonic() < deadline:
        resp = r.xread({key(stream): cursor}, count=1000, block=1000)
        now = time.time()
        for _s, entries in resp or []:
            for eid, fields in entries:
                cursor = eid
                lat.append(now - float(fields[b"p"]))
    Path(out).write_text(json.dumps(lat))
    r.close()


# --------------------------------------------------------------------------- the engine

HANDLERS = """
from topology import Emit


def forward(event):
    return Emit(event.name, event.payload)
"""


def write_config(folder: Path, sinks: dict[str, tuple[str, str]], consumers: int = 1) -> Path:
    """A config of forward sinks ``name -> (src, dst)``, all starting at the oldest event."""
    streams = sorted({s for pair in sinks.values() for s in pair})
    lines = ["version: 1", "name: bench", "streams:"]
    lines += [f"  {s}: {{}}" for s in streams]
    lines.append("sinks:")
    for name, (src, dst) in sinks.items():
        lines += [
            f"  {name}:",
            f"    streams: [{src}]",
            "    handler: bench_handlers:forward",
            f"    outputs: [{dst}]",
            "    start: oldest",
            f"    consumers: {consumers}",
        ]
    (folder / "bench_handlers.py").write_text(HANDLERS)
    path = folder / "bench.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


#: ``--engine-loop uvloop`` runs the engine's CLI with uvloop's event loop policy
#: installed first (to measure what uvloop gives before ``run`` picks it itself).
ENGINE_LOOP = os.environ.get("PONOS_BENCH_LOOP", "")
#: ``PONOS_BENCH_SWITCH=0.001``: the engine's GIL switch interval (seconds), set first.
ENGINE_SWITCH = os.environ.get("PONOS_BENCH_SWITCH", "")


def engine_cmd(config: Path, url: str, *extra: str) -> list[str]:
    args = ["run", str(config), "--redis-url", url, "--no-watch", "--quiet", *extra]
    if ENGINE_LOOP or ENGINE_SWITCH:
        code = "import sys; "
        if ENGINE_LOOP == "uvloop":
            code += "import uvloop; uvloop.install(); "
        if ENGINE_SWITCH:
            code += f"sys.setswitchinterval({float(ENGINE_SWITCH)}); "
        code += "from topology.cli import main; sys.exit(main(sys.argv[1:]))"
        return [sys.executable, "-c", code, *args]
    exe = shutil.which("ponos-topology", path=str(Path(sys.executable).parent)) or "ponos-topology"
    return [exe, *args]


def engine_log(config: Path) -> Any:
    """The engines' logs go beside their config, not into the figures' table."""
    return open(config.parent / "engine.log", "ab")  # handed to the child processes


def run_engine(
    config: Path, url: str, workers: int = 1, idle: float = 1.0, pool: int = 1
) -> list[int]:
    """Run ``workers`` engine processes until idle; return each one's peak RSS (KiB)."""
    return [peak for peak, _cpu in run_engine_usage(config, url, workers, idle, pool)]


def run_engine_usage(
    config: Path, url: str, workers: int = 1, idle: float = 1.0, pool: int = 1
) -> list[tuple[int, float]]:
    """Like :func:`run_engine`: each process's peak RSS (KiB) and CPU seconds (user + sys).

    ``pool``: each process is ``run --workers pool`` (its figures include its children's).
    """
    log = engine_log(config)
    procs = [
        subprocess.Popen(
            engine_cmd(config, url, "--stop-when-idle", str(idle), "--workers", str(pool)),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        for _ in range(workers)
    ]
    usages = []
    for proc in procs:
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"engine exited {proc.returncode}: see {log.name}")
        usages.append((int(usage.ru_maxrss), usage.ru_utime + usage.ru_stime))
    return usages


def server_cpu(url: str) -> float:
    """CPU seconds the server has used (user + sys), from INFO cpu."""
    r = redis.Redis.from_url(url)
    try:
        info = r.info("cpu")
    finally:
        r.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run_child_cpu(cmd: list[str]) -> float:
    """Run ``cmd`` to completion; its CPU seconds (user + sys)."""
    proc = subprocess.Popen(cmd)
    _pid, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[:3]} exited {status}")
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- benchmarks


def bench_forward(url: str, n: int, runs: int, work: Path) -> dict[str, Any]:
    """Also CPU per event, worker and server: on a 2-core machine their sum bounds what
    more workers can give (the scale-out figure), whatever the wall-clock rates."""
    base, eng = [], []
    cpu: dict[str, list[float]] = {
        k: [] for k in ("base_worker", "base_server", "eng_worker", "eng_server")
    }
    config = write_config(work, {"fwd": ("in", "out")})
    flush(url)
    preload(url, "in", 1)
    startup = run_engine_usage(config, url)[0][1]  # start-up and idle stop: not per event
    for _ in range(runs):
        flush(url)
        preload(url, "in", n)
        before = server_cpu(url)
        cpu["base_worker"].append(run_child_cpu(self_cmd("_forward", url, "in", "out", str(n))))
        cpu["base_server"].append(server_cpu(url) - before)
        base.append(rate_from_ids(url, "out", n))
        flush(url)
        preload(url, "in", n)
        before = server_cpu(url)
        cpu["eng_worker"].append(run_engine_usage(config, url)[0][1] - startup)
        cpu["eng_server"].append(server_cpu(url) - before)
        eng.append(rate_from_ids(url, "out", n))
    b, e = summary(base), summary(eng)
    per_event = {k: statistics.median(v) / n * 1e6 for k, v in cpu.items()}
    return {
        "baseline": b,
        "engine": e,
        "ratio": e["median"] / b["median"],
        "cpu_us_per_event": per_event,
        "engine_startup_cpu_s": startup,
    }


def bench_stateful(url: str, n: int, runs: int, keys: int, work: Path) -> dict[str, Any]:
    """The keyed-state stage's hand-written baseline, beside the stateless engine forward
    stage of the same run (the engine's keyed stage joins them once it runs)."""
    base, stateless = [], []
    config = write_config(work, {"fwd": ("in", "out")})
    for _ in range(runs):
        flush(url)
        preload(url, "in", n, keys=keys)
        run_child_cpu(self_cmd("_stateful", url, "in", "out", str(n)))
        base.append(rate_from_ids(url, "out", n))
        flush(url)
        preload(url, "in", n, keys=keys)
        run_engine(config, url)
        stateless.append(rate_from_ids(url, "out", n))
    b, s = summary(base), summary(stateless)
    return {"keys": keys, "baseline": b, "engine_stateless": s}


def bench_scale_out(url: str, n: int, runs: int, work: Path) -> dict[str, Any]:
    """``run --workers 1`` vs ``--workers 2``; and the hand-written loop as 1 vs 2
    competing processes, the same machine's ceiling (the server shares the cores)."""
    config = write_config(work, {"fwd": ("in", "out")})
    one, two, base_one, base_two = [], [], [], []
    for _ in range(runs):
        for workers, into in ((1, one), (2, two)):
            flush(url)
            preload(url, "in", n)
            run_engine(config, url, pool=workers)
            into.append(rate_from_ids(url, "out", n))
        for workers, into in ((1, base_one), (2, base_two)):
            flush(url)
            preload(url, "in", n)
            procs = [
                subprocess.Popen(self_cmd("_forward", url, "in", "out", "0", "fwd", f"c{i}"))
                for i in range(workers)
            ]
            run_until_len(url, "out", n, procs)
            into.append(rate_from_ids(url, "out", n))
    a, b = summary(one), summary(two)
    ba, bb = summary(base_one), summary(base_two)
    speedup, baseline_speedup = b["median"] / a["median"], bb["median"] / ba["median"]
    return {
        "one": a,
        "two": b,
        "speedup": speedup,
        "baseline_one": ba,
        "baseline_two": bb,
        "baseline_speedup": baseline_speedup,
        "ratio": speedup / baseline_speedup,
    }


def bench_memory(url: str, n: int, work: Path) -> dict[str, Any]:
    config = write_config(work, {"fwd": ("in", "out")}, consumers=8)
    flush(url)
    preload(url, "in", n)
    peak = run_engine(config, url)[0]
    flush(url)
    preload(url, "in", n)
    parent, children = pool_peaks(config, url, 2)
    return {
        "actors": 8,
        "peak_rss_mb": peak / 1024,
        "pool_parent_mb": parent / 1024,
        "pool_worker_mb": max(children, default=0) / 1024,
    }


def _hwm_kib(pid: int) -> int:
    """A live process's peak RSS (``VmHWM``), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pool_peaks(config: Path, url: str, workers: int) -> tuple[int, list[int]]:
    """Peak RSS (KiB) of a ``run --workers`` parent and of each child, sampled until idle.

    ``wait4`` would give the parent's figure only; the children's are read from
    ``/proc`` while they run (a peak reached in their last 50 ms can be missed).
    """
    proc = subprocess.Popen(
        engine_cmd(config, url, "--stop-when-idle", "1", "--workers", str(workers)),
        stdout=subprocess.DEVNULL,
        stderr=engine_log(config),
    )
    parent, children = 0, {}
    while proc.poll() is None:
        parent = max(parent, _hwm_kib(proc.pid))
        with contextlib.suppress(OSError):
            listed = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            for child in map(int, listed):
                children[child] = max(children.get(child, 0), _hwm_kib(child))
        time.sleep(0.05)  # sampling another process's memory
    if proc.returncode != 0:
        raise RuntimeError(f"engine pool exited {proc.returncode}: see engine.log")
    return parent, list(children.values())


def _chain_with(
    url: str,
    start_stages: Callable[[], list[subprocess.Popen[bytes]]],
    rate: float,
    seconds: float,
    work: Path,
) -> dict[str, Any]:
    flush(url)
    stages = start_stages()
    try:
        r = redis.Redis.from_url(url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait until the last stage's group exists
            try:
                if r.xinfo_groups(key("c")):
                    break
            except redis.ResponseError:
                pass
            time.sleep(0.05)
        r.close()
        total = int(rate * seconds)
        out = work / "lat.json"
        meas = subprocess.Popen(self_cmd("_measure", url, "d", str(total), str(out)))
        prod = subprocess.Popen(self_cmd("_produce", url, "a", str(rate), str(seconds)))
        prod.wait()
        meas.wait()
        lat = sorted(json.loads(out.read_text()))
    finally:
        for p in stages:
            p.terminate()
        for p in stages:
            p.wait()
    ms = [v * 1000 for v in lat]
    q = statistics.quantiles(ms, n=100)
    sustained = len(lat) / seconds
    return {
        "offered": rate,
        "received": len(lat),
        "p50_ms": q[49],
        "p99_ms": q[98],
        "max_ms": ms[-1],
        "sustained": sustained,
    }


def bench_chain(
    url: str,
    n: int,
    rates: list[float],
    seconds: float,
    work: Path,
    workers: int = 1,
    runs: int = 3,
) -> dict[str, Any]:
    """The engine runs the 3 sinks as one ``run --workers N`` (each child runs all
    three, the children share each sink's events); the baseline runs one process per
    stage."""
    stages = {"s1": ("a", "b"), "s2": ("b", "c"), "s3": ("c", "d")}
    config = write_config(work, stages)

    def engine() -> list[subprocess.Popen[bytes]]:
        cmd = engine_cmd(config, url, "--workers", str(workers))
        return [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=engine_log(config))]

    def baseline() -> list[subprocess.Popen[bytes]]:
        return [
            subprocess.Popen(self_cmd("_forward", url, s, d, "0", name))
            for name, (s, d) in stages.items()
        ]

    result: dict[str, Any] = {"latency": []}
    for rate in rates:
        # Rounds alternate baseline and engine: on a shared VM the machine's speed
        # drifts by more than what is compared, so each figure is the median of
        # ``runs`` windows taken side by side with the other's.
        windows: dict[str, list[dict[str, Any]]] = {"baseline": [], "engine": []}
        for _ in range(runs):
            windows["baseline"].append(_chain_with(url, baseline, rate, seconds, work))
            windows["engine"].append(_chain_with(url, engine, rate, seconds, work))
        row: dict[str, Any] = {"rate": rate}
        for who, rows in windows.items():
            row[who] = {
                key: statistics.median(w[key] for w in rows)
                for key in ("p50_ms", "p99_ms", "max_ms", "sustained")
            }
            row[who]["windows"] = rows
        result["latency"].append(row)
    # Saturation: n events pre-loaded, three stages, rate of the last stream.
    for who, starter in (("baseline", baseline), ("engine", engine)):
        flush(url)
        preload(url, "a", n)
        run_until_len(url, "d", n, starter())
        result[f"saturation_{who}"] = rate_from_ids(url, "d", n)
    return result


PEER_DRAMATIQ = """
import os, sys, dramatiq
from dramatiq.brokers.redis import RedisBroker
url, n = os.environ["PEER_URL"], int(os.environ["PEER_N"])  # the dramatiq CLI owns argv
broker = RedisBroker(url=url)
dramatiq.set_broker(broker)

@dramatiq.actor(queue_name="in", max_retries=0)
def forward(payload):
    # To a queue no actor of this worker consumes: the output is counted, not run.
    msg = dramatiq.Message(
        queue_name="out", actor_name="sink", args=(payload,), kwargs={}, options={}
    )
    broker.enqueue(msg)

if __name__ == "__main__":
    if sys.argv[1:] == ["load"]:
        for i in range(n):
            forward.send("x" * 100)
"""

PEER_FASTSTREAM = """
import asyncio, os, sys
from faststream import FastStream
from faststream.redis import RedisBroker, StreamSub
url, n = os.environ["PEER_URL"], int(os.environ["PEER_N"])
broker = RedisBroker(url, logger=None)
pub = broker.publisher(stream="fs-out")

SUB = StreamSub("fs-in", group="fwd", consumer="c1", max_records=500, last_id="0")


@broker.subscriber(stream=SUB)
async def forward(body: bytes) -> None:
    await pub.publish(body)

async def main():
    if sys.argv[1:] == ["load"]:
        await broker.connect()
        for i in range(0, n, 500):
            async with broker._connection.pipeline(transaction=False) as pipe:  # noqa: SLF001
                for _ in range(min(500, n - i)):
                    await broker.publish(b"x" * 100, stream="fs-in", pipeline=pipe)
                await pipe.execute()
        await broker.stop()
    else:
        app = FastStream(broker, logger=None)
        await app.run()

asyncio.run(main())
"""


def _peer(
    url: str,
    python: str,
    n: int,
    work: Path,
    name: str,
    code: str,
    out_len: Callable[[redis.Redis], int],
) -> dict[str, Any]:
    script = work / f"peer_{name}.py"
    script.write_text(textwrap.dedent(code))
    check = subprocess.run([python, "-c", f"import {name}"], capture_output=True)
    if check.returncode != 0:
        return {"skipped": f"{name} does not import in {python}"}
    flush(url)
    env = {**os.environ, "PEER_URL": url, "PEER_N": str(n)}
    subprocess.run([python, str(script), "load"], check=True, cwd=work, env=env)
    if name == "dramatiq":
        cmd = [python, "-m", "dramatiq", f"peer_{name}", "--processes", "1", "--threads", "8"]
    else:
        cmd = [python, str(script), "run"]
    worker = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    r = redis.Redis.from_url(url)
    try:
        first = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = out_len(r)
            now = time.perf_counter()
            if first is None and done > 0:
                first = (now, done)
            if done >= n:
                break
            time.sleep(0.02)  # polling another process's progress
        assert first is not None
        rate = (done - first[1]) / max(now - first[0], 1e-3)
    finally:
        worker.terminate()
        worker.wait()
        r.close()
    return {"events_per_s": rate}


def bench_peers(url: str, python: str, n: int, work: Path, engine_rate: float) -> dict[str, Any]:
    res = {
        "dramatiq": _peer(
            url,
            python,
            n,
            work,
            "dramatiq",
            PEER_DRAMATIQ,
            lambda r: int(r.hlen("dramatiq:out.msgs")),
        ),
        "faststream": _peer(
            url, python, n, work, "faststream", PEER_FASTSTREAM, lambda r: int(r.xlen("fs-out"))
        ),
    }
    for peer in res.values():
        if "events_per_s" in peer:
            peer["engine_ratio"] = engine_rate / peer["events_per_s"]
    return res


# --------------------------------------------------------------------------- main


def target(
    results: dict[str, Any], name: str, value: float, goal: float, at_least: bool = True
) -> str:
    """Record one of the targets (a ratio to the hand-written figure); its printed form."""
    met = value >= goal if at_least else value <= goal
    results.setdefault("targets", []).append(
        {"target": name, "value": value, "goal": goal, "at_least": at_least, "met": met}
    )
    return (
        f"{value:.2f} (target {'>=' if at_least else '<='} {goal:g}: {'met' if met else 'NOT met'})"
    )


def chain_targets(c: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """The 3-stage chain's targets: p99 at 5k ev/s and saturation, engine / hand-written."""
    lines = []
    for row in c["latency"]:
        if row["rate"] != 5000:
            continue
        pairs = zip(row["engine"]["windows"], row["baseline"]["windows"], strict=True)
        per_window = [e["p99_ms"] / b["p99_ms"] for e, b in pairs]
        ratio = row["engine"]["p99_ms"] / row["baseline"]["p99_ms"]
        lines.append(
            f"  target 3-stage p99 @ 5,000/s engine/hand-written "
            f"{target(results, '3-stage p99 @ 5k', ratio, 1.0, at_least=False)}"
            f"  per window [{min(per_window):.2f}-{max(per_window):.2f}]"
        )
    ratio = c["saturation_engine"] / c["saturation_baseline"]
    lines.append(
        f"  target 3-stage saturation engine/hand-written "
        f"{target(results, '3-stage saturation', ratio, 1.0)}"
    )
    return lines


def _child(role: str, rest: list[str]) -> None:
    """The roles this script runs itself as, in child processes."""
    if role == "_forward":
        baseline_forward(rest[0], rest[1], rest[2], int(rest[3]), *rest[4:6])
    elif role == "_stateful":
        baseline_stateful_forward(rest[0], rest[1], rest[2], int(rest[3]), *rest[4:6])
    elif role == "_produce":
        produce_at_rate(rest[0], rest[1], float(rest[2]), float(rest[3]))
    elif role == "_measure":
        measure_latency(rest[0], rest[1], int(rest[2]), rest[3])


def _report_forward(
    args: argparse.Namespace, url: str, work: Path, results: dict[str, Any]
) -> None:
    results["forward"] = f = bench_forward(url, args.events, args.runs, work)
    print(
        f"forward stage   baseline {fmt(f['baseline'], '/s')}  "
        f"engine {fmt(f['engine'], '/s')}  "
        f"ratio {target(results, 'forward stage', f['ratio'], 1.2)}",
        flush=True,
    )
    c = f["cpu_us_per_event"]
    print(
        f"  CPU per event   baseline worker {c['base_worker']:.1f} us + server "
        f"{c['base_server']:.1f} us;  engine worker {c['eng_worker']:.1f} us + server "
        f"{c['eng_server']:.1f} us",
        flush=True,
    )


def _report_chain(args: argparse.Namespace, url: str, work: Path, results: dict[str, Any]) -> None:
    results["chain"] = c = bench_chain(
        url, args.events, [5000, 20000], args.seconds, work, args.chain_workers, args.runs
    )
    c["engine_workers"] = args.chain_workers
    for row in c["latency"]:
        for who in ("baseline", "engine"):
            m = row[who]
            label = who if who == "baseline" else f"engine x{args.chain_workers}"
            p99s = [w["p99_ms"] for w in m["windows"]]
            print(
                f"3-stage {label:11} @ {row['rate']:>6,.0f}/s  "
                f"p50 {m['p50_ms']:.1f} ms  p99 {m['p99_ms']:.1f} ms "
                f"[{min(p99s):.1f}-{max(p99s):.1f}]"
                f"  max {m['max_ms']:.1f} ms  sustained {m['sustained']:,.0f}/s",
                flush=True,
            )
    print(
        f"3-stage saturation  baseline {c['saturation_baseline']:,.0f}/s  "
        f"engine x{args.chain_workers} {c['saturation_engine']:,.0f}/s",
        flush=True,
    )
    print("\n".join(chain_targets(c, results)), flush=True)


def _report_scale(args: argparse.Namespace, url: str, work: Path, results: dict[str, Any]) -> None:
    results["scale_out"] = s = bench_scale_out(url, args.events, args.runs, work)
    print(
        f"scale-out       --workers 1 {fmt(s['one'], '/s')}  --workers 2 "
        f"{fmt(s['two'], '/s')}  speed-up {s['speedup']:.2f}",
        flush=True,
    )
    print(
        f"  hand-written    1 process {fmt(s['baseline_one'], '/s')}  2 processes "
        f"{fmt(s['baseline_two'], '/s')}  speed-up {s['baseline_speedup']:.2f}",
        flush=True,
    )
    print(
        "  target scale-out speed-up engine/hand-written "
        f"{target(results, 'scale-out 1->2', s['ratio'], 1.0)}",
        flush=True,
    )


def _report_memory(args: argparse.Namespace, url: str, work: Path, results: dict[str, Any]) -> None:
    results["memory"] = m = bench_memory(url, min(args.events, 50_000), work)
    print(
        f"memory          peak RSS with 8 actors: one process {m['peak_rss_mb']:.1f} MB;"
        f" --workers 2: parent {m['pool_parent_mb']:.1f} MB, largest worker "
        f"{m['pool_worker_mb']:.1f} MB",
        flush=True,
    )
    worker = max(m["peak_rss_mb"], m["pool_worker_mb"])
    print(
        "  target RSS per worker MB "
        f"{target(results, 'RSS per worker MB', worker, 60, False)}"
        f"\n  target RSS of the parent MB "
        f"{target(results, 'RSS parent MB', m['pool_parent_mb'], 40, False)}",
        flush=True,
    )


def _report_peers(args: argparse.Namespace, url: str, work: Path, results: dict[str, Any]) -> None:
    engine_rate = results.get("forward", {}).get("engine", {}).get("median", 0.0)
    results["peers"] = peers = bench_peers(
        url, args.peers_python, min(args.events, 50_000), work, engine_rate
    )
    for name, res in peers.items():
        if "skipped" in res:
            print(f"peer {name:10} skipped: {res['skipped']}")
        else:
            print(
                f"peer {name:10} {res['events_per_s']:,.0f}/s  "
                f"engine/peer {res.get('engine_ratio', 0):.1f}x"
                " (target >= 3)",
                flush=True,
            )


#: The parts of the benchmark, by their ``--skip`` name, in the order they run.
def _report_stateful(
    args: argparse.Namespace, url: str, work: Path, results: dict[str, Any]
) -> None:
    if not args.stateful:
        return
    results["stateful"] = k = bench_stateful(url, args.events, args.runs, args.state_keys, work)
    print(
        f"keyed state     baseline {fmt(k['baseline'], '/s')} ({k['keys']} keys)  "
        f"stateless engine {fmt(k['engine_stateless'], '/s')}  "
        "engine keyed stage: not run yet",
        flush=True,
    )


REPORTS = {
    "forward": _report_forward,
    "chain": _report_chain,
    "scale": _report_scale,
    "memory": _report_memory,
    "peers": _report_peers,
    "stateful": _report_stateful,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("_"):  # child roles
        _child(argv[0], argv[1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--quick", action="store_true", help="50k events, 1 run, shorter latency windows"
    )
    p.add_argument("--seconds", type=float, default=6.0, help="length of each fixed-load window")
    p.add_argument(
        "--peers-python", default=sys.executable, help="interpreter with dramatiq/faststream"
    )
    p.add_argument(
        "--chain-workers",
        type=int,
        default=2,
        help="the 3-stage chain's engine as run --workers N (default 2)",
    )
    p.add_argument("--skip", action="append", default=[], help="forward|chain|scale|memory|peers")
    p.add_argument(
        "--stateful", action="store_true", help="also measure the keyed-state forward stage"
    )
    p.add_argument("--state-keys", type=int, default=1000, help="distinct keys (--stateful)")
    p.add_argument("--json", default=str(ROOT / "tools" / "out" / "bench_pipeline.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.events, args.runs, args.seconds = 50_000, 1, 3.0
    work = Path(tempfile.mkdtemp(prefix="ponos-bench-"))
    results: dict[str, Any] = {"events": args.events, "runs": args.runs}
    with ServerProcess(work / "redis") as server:
        url = server.url
        results["server"] = redis.Redis.from_url(url).info("server")["redis_version"]
        for name, report in REPORTS.items():
            if name not in args.skip:
                report(args, url, work, results)
    print("targets:")
    for t in results.get("targets", []):
        sign = ">=" if t["at_least"] else "<="
        verdict = "met" if t["met"] else "NOT met"
        print(f"  {t['target']:20} {t['value']:8.2f}  {sign} {t['goal']:g}  {verdict}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
