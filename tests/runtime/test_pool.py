"""``run --workers N``: a parent supervising N worker processes, against a real server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import process_alive, wait_until
from tests.runtime.test_run_cli import (
    fill,
    pending,
    start_run,
    with_third_sink,
    write_config,
    write_source_config,
)
from topology.runtime.keys import EngineKeys
from topology.runtime.pool import parse_workers

if os.name != "posix":  # pragma: no cover
    pytest.skip("signals and process groups", allow_module_level=True)


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def children(client: redis.Redis, deployment: str) -> dict[str, dict[str, Any]]:
    """The registry entries of pool children whose process still runs."""
    raw = client.hgetall(EngineKeys(deployment).workers())
    out = {}
    for wid, value in raw.items():
        entry = json.loads(value)
        if "pool" in entry and process_alive(entry["pid"]):
            out[wid.decode()] = entry
    return out


def start_pool(
    config: Path, url: str, client: redis.Redis, *extra: str, stderr: Any = subprocess.PIPE
) -> subprocess.Popen[str]:
    """``run --workers 2``, returned once both children have registered."""
    proc = start_run(config, url, "--workers", "2", *extra, stderr=stderr)
    name = config.stem
    wait_until(lambda: len(children(client, name)) == 2 or proc.poll() is not None, 60, "children")
    assert proc.poll() is None, "the pool exited"
    return proc


def handled(out: str, sink: str) -> list[int]:
    """Each child's end-of-run count for ``sink`` (one summary line per child)."""
    return [int(n) for n in re.findall(rf"{sink} (\d+)", out)]


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=60)


def test_workers_auto_is_the_usable_cpus_and_zero_is_refused(tmp_path: Path) -> None:
    assert parse_workers("auto") == len(os.sched_getaffinity(0))
    assert parse_workers("3") == 3
    config = write_config(tmp_path, name="zero", delay=0)
    for bad in ("0", "many"):
        proc = start_run(config, "redis://127.0.0.1:1/0", "--workers", bad)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 2
        assert "--workers" in err


def test_workers_auto_starts_one_child_per_usable_cpu(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    cpus = len(os.sched_getaffinity(0))
    if cpus < 2:
        pytest.skip("auto means a single process on one CPU")
    config = write_config(tmp_path, name="auto", delay=0)
    proc = start_run(config, redis_url, "--workers", "auto")
    try:
        wait_until(lambda: len(children(client, "auto")) == cpus, 60, "a child per CPU")
        slots = sorted(e["pool"]["slot"] for e in children(client, "auto").values())
        assert slots == list(range(cpus))
        assert {e["pool"]["parent_pid"] for e in children(client, "auto").values()} == {proc.pid}
    finally:
        _, err = stop(proc)
    assert proc.returncode == 0, err


def test_a_killed_child_is_replaced_and_the_pool_keeps_working(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    config = write_config(tmp_path, name="replace", delay=0, ack_grace="1s")
    proc = start_pool(config, redis_url, client)
    try:
        victim = next(e for e in children(client, "replace").values() if e["pool"]["slot"] == 0)
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(
            lambda: any(
                e["pool"]["slot"] == 0 and e["pid"] != victim["pid"]
                for e in children(client, "replace").values()
            ),
            60,
            "a new child in slot 0",
        )
        assert proc.poll() is None
        fill(client, 500)
        wait_until(lambda: client.xlen("pulse:stream:out") == 500, 60, "the events handled")
    finally:
        _, err = stop(proc)
    assert proc.returncode == 0, err
    assert re.search(rf"worker 0 \(pid {victim['pid']}\) was killed by SIGKILL", err), err


def test_sigterm_drains_every_child_and_exits_0_with_nothing_lost(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    config = write_config(tmp_path, name="pterm", delay=0.01, ack_grace="60s", batch=16)
    fill(client, 3000)
    proc = start_pool(config, redis_url, client)
    pids = [e["pid"] for e in children(client, "pterm").values()]
    wait_until(lambda: client.xlen("pulse:stream:mid") >= 200, 60, "some progress")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    counts = handled(out, "first")
    assert len(counts) == 2, out  # every child drained and printed its summary
    assert not any(process_alive(pid) for pid in pids)
    # ack_grace is 60 s: a pending event could only be one a drain abandoned
    assert pending(client, "in", "first") == 0
    assert client.xlen("pulse:stream:mid") == sum(counts)
    mids = [int(f[b"p"]) for _, f in client.xrange("pulse:stream:mid")]
    assert len(mids) == len(set(mids))


def test_a_reload_reaches_every_child(tmp_path: Path, redis_url: str, client: redis.Redis) -> None:
    config = write_config(tmp_path, name="phup", delay=0, ack_grace="20s")
    fill(client, 50)
    log = tmp_path / "stderr.log"
    with log.open("w") as err_file:
        proc = start_pool(config, redis_url, client, stderr=err_file)
    try:
        wait_until(lambda: client.xlen("pulse:stream:out") == 50, 60, "the first generation")
        config.write_text(with_third_sink(config))
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: sorted(e["generation"] for e in children(client, "phup").values()) == [2, 2],
            60,
            "generation 2 in both children",
        )
        wait_until(lambda: client.xlen("pulse:stream:copy") == 50, 60, "the reloaded sink")
        config.write_text("version: 1\nname: phup\nsinks: {broken\n")  # invalid: no child sees it
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload rejected" in log.read_text(), 60, "the parent's refusal")
        assert sorted(e["generation"] for e in children(client, "phup").values()) == [2, 2]
    finally:
        out, _ = stop(proc)
    err = log.read_text()
    assert proc.returncode == 0, err
    assert len(handled(out, "third")) == 2, out
    assert err.count("reload rejected") == 1, err  # validated once, by the parent alone


def test_one_source_runs_once_across_the_pool(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    config = write_source_config(tmp_path)
    proc = start_run(config, redis_url, "--workers", "2", "--stop-when-idle", "1.5")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert client.xlen("pulse:stream:in") == 2000  # the source ran in one child only
    payloads = sorted(int(f[b"p"]) for _, f in client.xrange("pulse:stream:out"))
    assert payloads == list(range(2000))
    counts = handled(out, "fwd")
    assert len(counts) == 2 and sum(counts) == 2000, out


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def test_metrics_aggregate_the_children_and_readyz_waits_for_all(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    from topology.server import free_port

    n = 2000
    config = write_config(tmp_path, name="pmet", delay=0.001, ack_grace="20s", batch=32)
    port = free_port()
    proc = start_run(config, redis_url, "--workers", "2", "--metrics-port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(f"{base}/readyz")[0] == 200, 60, "every child ready")
        assert _get(f"{base}/healthz")[0] == 200
        fill(client, n)
        wait_until(lambda: client.xlen("pulse:stream:out") == n, 90, "every event handled")
        _, metrics = _get(f"{base}/metrics")
        assert f'ponos_events_handled_total{{sink="first"}} {float(n)}' in metrics, metrics
        assert f'ponos_events_handled_total{{sink="second"}} {float(n)}' in metrics
        assert "ponos_generation 1.0" in metrics
        victim = next(iter(children(client, "pmet").values()))
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(lambda: _get(f"{base}/readyz")[0] == 503, 30, "not ready while one is down")
        wait_until(lambda: _get(f"{base}/readyz")[0] == 200, 60, "ready again once replaced")
        _, metrics = _get(f"{base}/metrics")
        # the dead child's counts stay in the sum: the pool's counter never goes down
        assert f'ponos_events_handled_total{{sink="first"}} {float(n)}' in metrics
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert len([c for c in handled(out, "first") if c > 0]) >= 1, out


def test_children_die_with_the_parent_on_kill_9(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    config = write_config(tmp_path, name="orphans", delay=0)
    proc = start_pool(config, redis_url, client)
    try:
        pids = [e["pid"] for e in children(client, "orphans").values()]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not any(process_alive(p) for p in pids), 10, "the children gone")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_status_shows_the_pool_under_its_parent(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    config = write_config(tmp_path, name="pstat", delay=0)
    proc = start_pool(config, redis_url, client)
    try:
        shown = subprocess.run(
            [sys.executable, "-m", "topology.cli", "status", str(config), "--redis-url", redis_url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert f"parent pid {proc.pid}: 2 workers" in shown.stdout, shown.stdout
        assert "slot 0" in shown.stdout and "slot 1" in shown.stdout
    finally:
        _, err = stop(proc)
    assert proc.returncode == 0, err


def test_the_embedded_server_is_started_once_and_shared(tmp_path: Path) -> None:
    config = write_source_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    data = tmp_path / "data"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "topology.cli",
            "run",
            str(config),
            "--quiet",
            "--no-watch",
            "--workers",
            "2",
            "--stop-when-idle",
            "1.5",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    counts = handled(proc.stdout, "fwd")
    assert len(counts) == 2 and sum(counts) == 2000, proc.stdout  # one server, one stream
    assert proc.stderr.count("embedded server started") == 1, proc.stderr
    assert not (data / "server.json").exists() or "pid" not in (data / "server.json").read_text()


def test_deployment_workers_all_follow_each_applied_version(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    from tests.runtime.test_deployment import Worker, cli
    from tests.runtime.test_deployment import write_config as write_deployed

    config = write_deployed(tmp_path, "pdep")
    assert cli("apply", str(config), "--redis-url", redis_url).returncode == 0
    pool = Worker(redis_url, "pdep", tmp_path, "--workers", "2", "--no-watch")
    try:
        wait_until(lambda: len(children(client, "pdep")) == 2, 60, "two children")
        client.xadd("pulse:stream:a", {"n": "e", "p": "one"})
        wait_until(lambda: client.xlen("pulse:stream:out") == 1, 30, "version 1 at work")
        write_deployed(tmp_path, "pdep", streams="a, b")
        assert cli("apply", str(config), "--redis-url", redis_url).returncode == 0
        wait_until(
            lambda: (
                [e.get("deployment_version") for e in children(client, "pdep").values()] == [2, 2]
            ),
            60,
            "version 2 in both children",
        )
        client.xadd("pulse:stream:b", {"n": "e", "p": "two"})
        wait_until(lambda: client.xlen("pulse:stream:out") == 2, 30, "version 2 at work")
    finally:
        code = pool.stop()
    assert code == 0, pool.text()


def test_a_second_signal_stops_every_child_at_once(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    config = write_config(tmp_path, name="ptwice", delay=0.5, ack_grace="60s", batch=16)
    fill(client, 200)
    proc = start_pool(config, redis_url, client, "--drain-timeout", "60")
    wait_until(lambda: pending(client, "in", "first") > 16, 60, "batches in hand in both")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # drain: the batches in hand would take 8 s each...
    assert proc.stderr is not None
    for line in proc.stderr:
        if "draining every worker" in line:
            break
    proc.send_signal(signal.SIGTERM)  # ...but a second signal stops them at once
    proc.communicate(timeout=60)
    assert time.monotonic() - started < 8
    assert proc.returncode != 0
    assert pending(client, "in", "first") > 0  # left for redelivery


def test_only_the_first_child_keeps_the_dashboard_flags() -> None:
    from topology.runtime.pool import ONE_CHILD_FLAGS, _without

    argv = ["run", "c.yaml", "--ui-port", "8765", "--ui-host=0.0.0.0", "--quiet"]
    assert _without(argv, ONE_CHILD_FLAGS) == ["run", "c.yaml", "--quiet"]


def test_one_dashboard_per_pool(tmp_path: Path, redis_url: str, client: redis.Redis) -> None:
    config = write_config(tmp_path, name="pui", delay=0)
    log = tmp_path / "stderr.log"
    with log.open("w") as err_file:
        proc = start_pool(config, redis_url, client, "--ui-port", "0", stderr=err_file)
    try:
        # generation 1 is applied after the dashboard step: both children are past it
        wait_until(
            lambda: [e.get("generation") for e in children(client, "pui").values()] == [1, 1],
            60,
            "both children running generation 1",
        )
        assert log.read_text().count("dashboard on ") == 1, log.read_text()
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()


#: What the parent must never import: the validator, the engine, redis-py.
HEAVY = (
    "jsonschema",
    "networkx",
    "redis",
    "yaml",
    "topology.config",
    "topology.graph",
    "topology.runtime.runtime",
    "topology.streams",
)

#: Runs ``ponos-topology ARGS...`` and writes, at exit, the modules it imported.
MODULES_AT_EXIT = """\
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from topology.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_the_parent_imports_neither_the_engine_nor_the_handlers(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    from topology.server import free_port

    config = write_config(tmp_path, name="plean", delay=0)
    modules, log = tmp_path / "modules.json", tmp_path / "stderr.log"
    argv = ["run", str(config), "--redis-url", redis_url, "--quiet", "--workers", "2"]
    argv += ["--metrics-port", str(free_port())]  # the aggregation is the parent's too
    with log.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-c", MODULES_AT_EXIT, str(modules), *argv],
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
    try:
        wait_until(lambda: len(children(client, "plean")) == 2, 60, "children")
        config.write_text(with_third_sink(config))  # a valid reload, then an invalid one
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "every worker told to reload" in log.read_text(), 60, "the reload")
        config.write_text("version: 1\nname: plean\nsinks: {broken\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload rejected" in log.read_text(), 60, "the refusal")
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()
    imported = set(json.loads(modules.read_text()))
    assert "topology.runtime.pool" in imported  # the parent's own path ran in this process
    assert "topology.runtime.reload" in imported
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
    assert heavy == [], heavy
    assert "plean_handlers" not in imported  # validated in a child: user code runs there


def test_an_invalid_file_is_reported_as_a_single_process_reports_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, name="pbad", delay=0)
    text = config.read_text().replace("streams: [mid]", "streams: [mdi]")
    config.write_text(text)
    # a handler module that prints on import: its line must not spoil the report
    (tmp_path / "pbad_handlers.py").write_text(
        "print('imported')\n" + (tmp_path / "pbad_handlers.py").read_text()
    )
    runs = [
        subprocess.run(
            [sys.executable, "-m", "topology.cli", "run", str(config), "--workers", workers],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for workers in ("1", "2")
    ]
    assert [r.returncode for r in runs] == [2, 2], runs[1].stderr
    single, pool = runs
    assert f"{config}:" in single.stderr and "'mdi'" in single.stderr, single.stderr
    assert "did you mean 'mid'" in single.stderr, single.stderr
    assert pool.stderr.replace("imported\n", "") == single.stderr.replace("imported\n", "")


def test_an_edited_handler_module_reloads_every_child(
    tmp_path: Path, redis_url: str, client: redis.Redis
) -> None:
    config = write_config(tmp_path, name="pcode", delay=0)
    handlers = tmp_path / "pcode_handlers.py"
    log = tmp_path / "stderr.log"
    with log.open("w") as err_file:
        proc = start_run(config, redis_url, "--workers", "2", watch=True, stderr=err_file)
    try:
        wait_until(
            lambda: [e.get("generation") for e in children(client, "pcode").values()] == [1, 1],
            60,
            "both children running generation 1",
        )
        wait_until(lambda: "watching" in log.read_text(), 60, "the parent's watch")
        # the parent learnt the handler files from the child that validated the config
        handlers.write_text(handlers.read_text() + "\n# edited\n")
        wait_until(
            lambda: [e.get("generation") for e in children(client, "pcode").values()] == [2, 2],
            60,
            "generation 2 in both children",
        )
    finally:
        stop(proc)
    assert proc.returncode == 0, log.read_text()
    assert "handler code changed: pcode_handlers.py" in log.read_text()
