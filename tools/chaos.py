"""Chaos: run a 3-stage topology through faults, then count every event.

    python tools/chaos.py                       # every scenario, full length
    python tools/chaos.py --short               # every scenario in about a minute (the test suite)
    python tools/chaos.py --scenario kill-workers --events 50000 --workers 3
    python tools/chaos.py --short --stateful    # the same with keyed state in the middle sink

The topology: ``in -> s1 -> mid -> s2 -> out -> s3 -> done``; ``s2`` raises for
every event whose ``seq % 97 == 13`` (after its retries those go to ``dlq``),
each sink with two actors per worker, ``--workers`` worker processes
(``ponos-topology run``). A producer adds ``--events`` events to ``in`` at
``--rate`` with explicit ids (a re-sent add cannot duplicate), so a lost or
duplicated event can only be the engine's; the faults run meanwhile.

Scenarios (single node: AOF with ``appendfsync always``):

- ``kill-workers``: a random worker is ``kill -9``ed every ``--kill-every`` s
  and started again.
- ``redis-restarts``: the server is stopped by SHUTDOWN, SIGTERM and
  ``kill -9`` in turn and started again on the same port, with worker kills too.
- ``stalled-connections``: the workers reach the server through a TCP proxy
  that, now and then, freezes every open connection (new ones work).

Cluster scenarios (3 masters, 1 replica each, started here), for a flow whose
streams share one hash tag (``tagged``: exactly-once promised) and one whose
streams are spread over slots (``spread``: at-least-once, duplicates allowed):

- ``cluster-master-kill``: the master of the flow's middle stream is
  ``kill -9``ed; its replica takes over; the old master comes back as a replica.
- ``cluster-failover``: ``CLUSTER FAILOVER`` on that master's replica.
- ``cluster-migrate``: the middle stream's slot moves to another master under load.

``--stateful`` makes ``s2`` a keyed-state sink (``key: k``, ``state: {}``, the
payload's ``k = seq % --state-keys``): it counts the events of each key and
emits the count ``n`` with the event. Then, per key, the state's count must equal
the key's events less its dead letters (a failing event changes no state) and the
``n`` values that reach ``done`` must be exactly 1..count: no gap, no repeat
(on ``spread`` cluster flows, at-least-once: a count at least the events, and
the last ``n`` emitted equal to it).

For each scenario it prints events in, outputs, lost, duplicated, dead letters
against expected, kills, server restarts and the recovery time (from the last
fault to the last event handled), and exits 1 on any loss, or any duplicate
where exactly-once is promised.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.proxy import TcpProxy
from topology.runtime.keys import EngineKeys, hash_tag
from topology.server import ServerCluster, ServerProcess

HANDLERS = """
from topology import Emit

FAIL_EVERY, FAIL_AT = 97, 13


def forward(event):
    return Emit("chaos", event.payload)


def check(event):
    seq = event.json()["seq"]
    if seq % FAIL_EVERY == FAIL_AT:
        raise ValueError(f"event {seq} is refused by design")
    return Emit("chaos", event.payload)


def count(event, state):
    data = event.json()
    if data["seq"] % FAIL_EVERY == FAIL_AT:
        state["n"] = -1  # must never land: a failing handler changes no state
        raise ValueError(f"event {data['seq']} is refused by design")
    state["n"] = state.get("n", 0) + 1
    data["n"] = state["n"]
    return Emit("chaos", data)
"""
FAIL_EVERY, FAIL_AT = 97, 13

SINGLE = ("kill-workers", "redis-restarts", "stalled-connections")
CLUSTER = ("cluster-master-kill", "cluster-failover", "cluster-migrate")


def config_text(tag: str, redis_timeout: str | None = None, stateful: bool = False) -> str:
    """The topology; ``tag`` prefixes every stream name (``{c}`` puts them in one slot);
    ``redis_timeout`` is its ``redis.timeout`` (the engine's default when None);
    ``stateful``: ``s2`` keeps a count per key."""
    names = {s: f"{tag}{s}" for s in ("in", "mid", "out", "done", "dlq")}
    streams = ", ".join(f'"{n}": {{}}' for n in names.values())

    def sink(name: str, source: str, target: str, handler: str, extra: str = "") -> str:
        return (
            f"  {name}:\n    streams: ['{names[source]}']\n    handler: chaos_handlers:{handler}\n"
            f"    outputs: ['{names[target]}']\n    consumers: 2\n{extra}"
        )

    return (
        "version: 1\nname: chaos\n"
        + (f"redis: {{timeout: {redis_timeout}}}\n" if redis_timeout else "")
        + "defaults: {start: oldest, ack_grace: 2s, batch: 64,"
        " retry: {max_attempts: 2, backoff: 10ms}}\n"
        f"streams: {{{streams}}}\nsinks:\n"
        + sink("s1", "in", "mid", "forward")
        + sink(
            "s2",
            "mid",
            "out",
            "count" if stateful else "check",
            f"    dead_letter: '{names['dlq']}'\n"
            + ("    key: k\n    state: {}\n" if stateful else ""),
        )
        + sink("s3", "out", "done", "forward")
    )


@dataclass
class Result:
    scenario: str
    events: int
    done: int = 0
    lost: int = 0
    duplicated: int = 0
    dead: int = 0
    dead_expected: int = 0
    kills: int = 0
    restarts: int = 0
    recovery: float | None = None
    exactly_once: bool = True
    note: str = ""
    #: --stateful: keys whose count or emitted sequence 1..n is wrong.
    state_errors: int = 0

    @property
    def ok(self) -> bool:
        if self.lost or self.recovery is None or self.dead < self.dead_expected:
            return False
        if self.state_errors:
            return False
        return not (self.exactly_once and (self.duplicated or self.dead != self.dead_expected))


@dataclass
class Workers:
    """``count`` ``ponos-topology run`` processes on one config, killed and restarted at will."""

    config: Path
    url: str
    count: int
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kills: int = 0

    crashes: int = 0

    def start(self, timeout: float) -> None:
        """Start every worker and wait until each runs its topology (faults come after)."""
        self.procs = [self._spawn(i) for i in range(self.count)]
        deadline = time.monotonic() + timeout
        for index in range(self.count):
            log = self.logs / f"worker{index}.log"
            while b"running:" not in (log.read_bytes() if log.exists() else b""):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {index} did not start: see {log}")
                self.revive()
                time.sleep(0.05)  # another process's progress: nothing of ours to await

    def revive(self) -> None:
        """Start again a worker that exited by itself (counted: a crash is a finding)."""
        for index, proc in enumerate(self.procs):
            if proc.poll() is not None:
                self.crashes += 1
                self.procs[index] = self._spawn(index)

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"worker{index}.log", "ab")  # noqa: SIM115 - the child owns it
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "topology.cli", "run", str(self.config)),
                *("--redis-url", self.url, "--no-watch", "--quiet", "--drain-timeout", "5"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.config.parent,
            env=env,
        )

    def kill_one(self, rng: random.Random) -> None:
        index = rng.randrange(self.count)
        self.procs[index].kill()
        self.procs[index].wait()
        self.kills += 1
        self.procs[index] = self._spawn(index)

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class Run:
    """One scenario: a server (or cluster), the flow's streams, workers, a fault loop."""

    name: str
    args: argparse.Namespace
    folder: Path
    client: Any
    url: str
    tag: str = ""
    exactly_once: bool = True
    produced: int = 0
    workers: Workers | None = None

    def key(self, stream: str) -> str:
        return f"pulse:stream:{self.tag}{stream}"

    def produce(self, stop: threading.Event) -> None:
        """Add ``--events`` events to ``in`` at ``--rate``, through every fault.

        Each entry has the id ``<seq + 1>-1``: an add whose outcome is unknown (the
        connection broke) is sent again, and the server refuses it if the first one
        landed, so the input itself is exact, and every loss or duplicate found
        later is the engine's.
        """
        started = time.monotonic()
        seq = 0
        while seq < self.args.events and not stop.is_set():
            due = started + seq / self.args.rate
            wait = due - time.monotonic()
            if wait > 0:  # read once: the clock moves between a check and a sleep
                time.sleep(wait)  # pacing the producer itself
            payload = json.dumps({"seq": seq, "k": seq % self.args.state_keys})
            try:
                self.client.xadd(self.key("in"), {"n": "chaos", "p": payload}, id=f"{seq + 1}-1")
            except redis.ResponseError as exc:
                if "equal or smaller" not in str(exc):  # else: the earlier try landed
                    time.sleep(0.05)  # LOADING, TRYAGAIN, CLUSTERDOWN...: again
                    continue
            except (redis.ConnectionError, redis.TimeoutError, RedisClusterException):
                time.sleep(0.05)  # the server is down: try the same event again
                continue
            seq += 1
        self.produced = seq

    def seqs(self, stream: str) -> Counter[int]:
        seen: Counter[int] = Counter()
        last = "-"
        while True:
            entries = self.client.xrange(self.key(stream), min=last, count=5000)
            if last != "-":
                entries = entries[1:]
            if not entries:
                return seen
            for _, fields in entries:
                seen[json.loads(fields[b"p"])["seq"]] += 1
            last = entries[-1][0].decode()

    def count(self, stream: str) -> int:
        try:
            return int(self.client.xlen(self.key(stream)))
        except redis.RedisError:
            return -1

    def execute(self, faults: Callable[[Run, Workers, random.Random], int]) -> Result:
        (self.folder / "chaos_handlers.py").write_text(HANDLERS)
        config = self.folder / "chaos.yaml"
        config.write_text(config_text(self.tag, self.args.redis_timeout, self.args.stateful))
        workers = self.workers = Workers(config, self.url, self.args.workers, self.folder)
        expected_dead = sum(1 for s in range(self.args.events) if s % FAIL_EVERY == FAIL_AT)
        result = Result(self.name, self.args.events, dead_expected=expected_dead)
        result.exactly_once = self.exactly_once
        rng = random.Random(self.args.seed)
        stop = threading.Event()
        producer = threading.Thread(target=self.produce, args=(stop,), daemon=True)
        workers.start(self.args.recovery_timeout)
        producer.start()
        try:
            result.restarts = faults(self, workers, rng)
            last_fault = time.monotonic()
            producer.join(self.args.recovery_timeout)
            result.recovery = self._wait_done(last_fault, expected_dead)
        finally:
            stop.set()
            workers.stop()
        result.kills = workers.kills
        if workers.crashes:
            result.note = f"{workers.crashes} worker(s) exited by themselves"
        self._tally(result)
        return result

    def _wait_done(self, since: float, expected_dead: int) -> float | None:
        target = self.args.events - expected_dead
        deadline = since + self.args.recovery_timeout
        while time.monotonic() < deadline:
            counted = self.count("done") >= target and self.count("dlq") >= expected_dead
            if counted and (self.exactly_once or self._all_through(target, expected_dead)):
                return time.monotonic() - since
            time.sleep(0.1)
            if self.workers is not None:
                self.workers.revive()  # other processes' progress: nothing of ours to await
        return None

    def _all_through(self, target: int, expected_dead: int) -> bool:
        """Every event in ``done`` or ``dlq`` at least once: where duplicates are allowed,
        the lengths alone reach their targets while the last events are still on the way."""
        try:
            return len(self.seqs("done")) >= target and len(self.seqs("dlq")) >= expected_dead
        except redis.RedisError:
            return False

    def _tally(self, result: Result) -> None:
        done, dead = self.seqs("done"), self.seqs("dlq")
        expected = {s for s in range(self.args.events) if s % FAIL_EVERY != FAIL_AT}
        result.done = sum(done.values())
        lost = expected - set(done)
        result.lost = len(lost)
        result.duplicated = sum(n - 1 for n in done.values() if n > 1)
        result.dead = len(dead)
        if any(n > 1 for n in dead.values()):
            result.note = f"{sum(n - 1 for n in dead.values())} dead letters repeated"
            result.duplicated += sum(n - 1 for n in dead.values())
        if lost:
            result.note = f"{result.note} {self._where(lost, dead)}".strip()
        if self.args.stateful:
            result.state_errors = self._state_errors(result.exactly_once)
            if result.state_errors:
                result.note = (result.note + f" {result.state_errors} keys wrong").strip()

    def _where(self, lost: set[int], dead: Counter[int]) -> str:
        """Where the lost events stopped: the last stream of the flow that has each
        (``dlq`` first: a lost event dead-lettered says why in its ``error_type``)."""
        reached: Counter[str] = Counter()
        found = {s: self.seqs(s) for s in ("in", "mid", "out")}
        errors: Counter[str] = Counter()
        for seq in lost:
            if seq in dead:
                reached["dlq"] += 1
                errors.update(self._error_types(seq))
                continue
            stage = next((s for s in ("out", "mid", "in") if seq in found[s]), "nowhere")
            reached[stage] += 1
        where = ", ".join(f"{n} last in {s}" for s, n in reached.most_common())
        if errors:
            where += " (dead letters: " + ", ".join(f"{n} {e}" for e, n in errors.items()) + ")"
        return f"lost: {where}; e.g. seq {sorted(lost)[:5]}"

    def _error_types(self, seq: int) -> list[str]:
        return [
            fields.get(b"error_type", b"?").decode()
            for _, fields in self.client.xrange(self.key("dlq"), count=100_000)
            if json.loads(fields[b"p"])["seq"] == seq
        ]

    def _state_errors(self, exactly_once: bool) -> int:
        """Keys whose state count or emitted counts 1..n are not what their events make."""
        keys = self.args.state_keys
        events: Counter[int] = Counter(
            s % keys for s in range(self.args.events) if s % FAIL_EVERY != FAIL_AT
        )
        emitted: dict[int, list[int]] = {}
        last = "-"
        while True:
            rows = self.client.xrange(self.key("done"), min=last, count=5000)
            rows = rows[1:] if last != "-" else rows
            if not rows:
                break
            for _, fields in rows:
                data = json.loads(fields[b"p"])
                emitted.setdefault(data["k"], []).append(data["n"])
            last = rows[-1][0].decode()
        head = EngineKeys("chaos").state_prefix("s2", hash_tag(self.key("mid")))
        wrong = 0
        for k in range(keys):
            text = self.client.hget(head + str(k), "s")
            count = json.loads(text)["n"] if text else 0
            ns = sorted(emitted.get(k, []))
            if exactly_once:
                good = count == events[k] and ns == list(range(1, count + 1))
            else:  # an event applied twice may skip a count: its first outputs never landed
                good = count >= events[k] and bool(ns) and max(ns) == count
            wrong += not good
        return wrong


def pace(run: Run, seconds: float) -> bool:
    """Sleep between faults; False once the flow has finished (no point in more faults)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
        if run.workers is not None:
            run.workers.revive()
    return run.count("done") + run.count("dlq") < run.args.events - 1


def kill_workers(run: Run, workers: Workers, rng: random.Random) -> int:
    for _ in range(run.args.faults):
        if not pace(run, run.args.kill_every):
            break
        workers.kill_one(rng)
    return 0


def redis_restarts(server: ServerProcess) -> Callable[[Run, Workers, random.Random], int]:
    def faults(run: Run, workers: Workers, rng: random.Random) -> int:
        restarts = 0
        ways = ("shutdown", "sigterm", "kill9")
        for i in range(run.args.faults):
            if not pace(run, run.args.kill_every):
                break
            if i % 2:
                workers.kill_one(rng)
                continue
            way = ways[restarts % len(ways)]
            if way == "shutdown":
                with contextlib.suppress(redis.ConnectionError):
                    redis.Redis(port=server.port).shutdown()
                server.stop()
            elif way == "sigterm":
                server.stop()
            else:
                server.kill()
            time.sleep(run.args.outage)  # the outage itself: its length is the point
            server.start()
            restarts += 1
        return restarts

    return faults


def stalls(proxy: TcpProxy) -> Callable[[Run, Workers, random.Random], int]:
    def faults(run: Run, workers: Workers, rng: random.Random) -> int:
        for _ in range(run.args.faults):
            if not pace(run, run.args.kill_every):
                break
            proxy.stall()
        return 0

    return faults


def single_node(name: str, args: argparse.Namespace, folder: Path) -> Result:
    server = ServerProcess(
        folder / "redis", appendonly=True, extra_args=("--appendfsync", "always")
    )
    server.start()
    proxy = None
    try:
        url = server.url
        faults: Callable[[Run, Workers, random.Random], int] = kill_workers
        if name == "redis-restarts":
            faults = redis_restarts(server)
        elif name == "stalled-connections":
            assert server.port
            proxy = TcpProxy("127.0.0.1", server.port).start()
            url, faults = proxy.url, stalls(proxy)
        client = redis.Redis(port=server.port, socket_timeout=10)
        run = Run(name, args, folder, client, url)
        return run.execute(faults)
    finally:
        if proxy is not None:
            proxy.stop()
        server.stop()


def _nodes(cluster: ServerCluster) -> list[dict[str, Any]]:
    """CLUSTER NODES as seen by any live node: id, port, role, master id, slots."""
    for port in cluster.ports:
        with contextlib.suppress(redis.RedisError):
            text = redis.Redis(port=port, socket_timeout=2).execute_command("CLUSTER", "NODES")
            text = text.decode() if isinstance(text, bytes) else text
            nodes = []
            for line in text.splitlines():
                parts = line.split()
                nodes.append(
                    {
                        "id": parts[0],
                        "port": int(parts[1].split(":")[1].split("@")[0]),
                        "master": "master" in parts[2] and "fail" not in parts[2],
                        "of": parts[3],
                        "slots": parts[8:],
                    }
                )
            return nodes
    raise RuntimeError("no cluster node answers")


def _owner(cluster: ServerCluster, slot: int) -> dict[str, Any]:
    for node in _nodes(cluster):
        for span in node["slots"] if node["master"] else []:
            if span.startswith("["):
                continue
            low, _, high = span.partition("-")
            if int(low) <= slot <= int(high or low):
                return node
    raise RuntimeError(f"no master serves slot {slot}")


def _server_at(cluster: ServerCluster, port: int) -> ServerProcess:
    return next(node for node in cluster.nodes if node.port == port)


def master_kill(cluster: ServerCluster, slot: int) -> Callable[[Run, Workers, random.Random], int]:
    def faults(run: Run, workers: Workers, rng: random.Random) -> int:
        restarts = 0
        for _ in range(max(1, run.args.faults // 4)):
            if not pace(run, run.args.kill_every * 2):
                break
            victim = _server_at(cluster, _owner(cluster, slot)["port"])
            victim.kill()
            _await_new_owner(cluster, slot, victim.port, run.args.recovery_timeout)
            victim.start()  # back as a replica of the promoted node
            restarts += 1
        return restarts

    return faults


def _await_new_owner(cluster: ServerCluster, slot: int, old_port: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(RuntimeError, redis.RedisError):
            if _owner(cluster, slot)["port"] != old_port:
                return
        time.sleep(0.1)  # the cluster's own election: nothing of ours to await
    raise RuntimeError(f"no replica took slot {slot} over within {timeout}s")


def failover(cluster: ServerCluster, slot: int) -> Callable[[Run, Workers, random.Random], int]:
    def faults(run: Run, workers: Workers, rng: random.Random) -> int:
        done = 0
        for _ in range(max(1, run.args.faults // 4)):
            if not pace(run, run.args.kill_every * 2):
                break
            master = _owner(cluster, slot)
            replica = next(n for n in _nodes(cluster) if n["of"] == master["id"])
            redis.Redis(port=replica["port"]).execute_command("CLUSTER", "FAILOVER")
            _await_new_owner(cluster, slot, master["port"], run.args.recovery_timeout)
            done += 1
        return done

    return faults


def migrate(cluster: ServerCluster, slot: int) -> Callable[[Run, Workers, random.Random], int]:
    def faults(run: Run, workers: Workers, rng: random.Random) -> int:
        moves = 0
        for _ in range(max(1, run.args.faults // 4)):
            if not pace(run, run.args.kill_every * 2):
                break
            source = _owner(cluster, slot)
            target = next(n for n in _nodes(cluster) if n["master"] and n["id"] != source["id"])
            move_slot(cluster, slot, source, target)
            moves += 1
        return moves

    return faults


def move_slot(
    cluster: ServerCluster, slot: int, source: dict[str, Any], target: dict[str, Any]
) -> None:
    """The redis-cli --cluster reshard steps for one slot, key batch by key batch."""
    src = redis.Redis(port=source["port"], socket_timeout=10)
    dst = redis.Redis(port=target["port"], socket_timeout=10)
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source["id"])
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target["id"])
    while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10):
        src.execute_command("MIGRATE", "127.0.0.1", target["port"], "", 0, 5000, "KEYS", *keys)
    for node in _nodes(cluster):
        if node["master"]:
            redis.Redis(port=node["port"]).execute_command(
                "CLUSTER", "SETSLOT", slot, "NODE", target["id"]
            )


def cluster_run(name: str, flow: str, args: argparse.Namespace, folder: Path) -> Result:
    cluster = ServerCluster(folder / "cluster", replicas=1, node_timeout_ms=2000)
    cluster.start()
    try:
        tag = "{c}" if flow == "tagged" else ""
        client = RedisCluster(host="127.0.0.1", port=cluster.ports[0], socket_timeout=10)
        slot = client.keyslot(f"pulse:stream:{tag}mid")
        chosen = {"cluster-master-kill": master_kill, "cluster-failover": failover}
        faults = chosen.get(name, migrate)(cluster, slot)
        run = Run(f"{name} ({flow})", args, folder, client, cluster.url, tag, flow == "tagged")
        try:
            return run.execute(faults)
        finally:
            client.close()
    finally:
        cluster.stop()


def scenarios(args: argparse.Namespace) -> Iterator[Result]:
    names = args.scenario or list(SINGLE + CLUSTER)
    for name in names:
        flows = tuple(args.flow or ("tagged", "spread")) if name in CLUSTER else ("",)
        for flow in flows:
            with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
                started = time.monotonic()
                if flow:
                    result = cluster_run(name, flow, args, Path(tmp))
                else:
                    result = single_node(name, args, Path(tmp))
                result.note = (result.note + f" ({time.monotonic() - started:.0f}s)").strip()
                if args.keep and (not result.ok or "exited" in result.note):  # for a look
                    kept = args.keep / f"{name}-{flow or 'single'}"
                    shutil.copytree(tmp, kept, dirs_exist_ok=True, ignore=_no_server_files)
                    result.note += f" logs: {kept}"
                print(row(result), flush=True)
                yield result


HEADER = (
    f"{'scenario':34} {'in':>7} {'out':>7} {'lost':>5} {'dup':>5} {'dead/exp':>9} "
    f"{'kills':>5} {'restarts':>8} {'recovery':>9}  result"
)


def row(r: Result) -> str:
    recovery = "never" if r.recovery is None else f"{r.recovery:.1f}s"
    verdict = "ok" if r.ok else "FAIL"
    return (
        f"{r.scenario:34} {r.events:>7} {r.done:>7} {r.lost:>5} {r.duplicated:>5} "
        f"{f'{r.dead}/{r.dead_expected}':>9} {r.kills:>5} {r.restarts:>8} {recovery:>9}  "
        f"{verdict} {r.note}"
    )


def _no_server_files(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n.endswith((".rdb", ".aof")) or n == "appendonlydir"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=SINGLE + CLUSTER)
    parser.add_argument(
        "--flow", action="append", choices=("tagged", "spread"), help="cluster flows (both)"
    )
    parser.add_argument("--events", type=int, default=30000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s added to `in`")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--faults", type=int, default=12, help="faults per scenario")
    parser.add_argument("--kill-every", type=float, default=1.0, help="seconds between faults")
    parser.add_argument("--outage", type=float, default=1.0, help="seconds a server stays down")
    parser.add_argument("--recovery-timeout", type=float, default=120.0)
    parser.add_argument(
        "--redis-timeout", help="the workers' redis.timeout, e.g. 2s (default: the engine's)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--stateful", action="store_true", help="s2 keeps keyed state (a count per key)"
    )
    parser.add_argument("--state-keys", type=int, default=10, help="keys (--stateful)")
    parser.add_argument("--short", action="store_true", help="small figures: about a minute")
    parser.add_argument(
        "--keep", type=Path, help="copy the worker logs here (failed runs, workers that exited)"
    )
    args = parser.parse_args(argv)
    if args.short:
        args.events, args.rate, args.faults, args.kill_every, args.outage = 1500, 300, 4, 1, 0.3
        args.recovery_timeout = min(args.recovery_timeout, 40.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(HEADER, flush=True)
    results = list(scenarios(args))
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
