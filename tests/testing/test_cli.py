"""`ponos-topology test` as users run it: output lines, exit codes, JUnit, located errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import redis

from topology.server import ServerProcess
from topology.testing import check_test_file

ROOT = Path(__file__).resolve().parents[2]
SHOP = Path(__file__).with_name("shop") / "shop.yaml"

PASSING = """\
  - name: priced
    given:
      orders: [{name: order.created, payload: {id: 1, qty: 2, price: 5}}]
    expect:
      priced: [{name: order.priced, payload_contains: {id: 1, total: 10}}]
"""
FAILING = """\
  - name: wrong total
    given:
      orders: [{name: order.created, payload: {id: 2, qty: 2, price: 5}}]
    expect:
      priced: [{name: order.priced, payload_contains: {total: 11}}]
      tallies: []
"""
STUCK = """\
  - name: stuck
    given:
      slow: [{name: job, payload: {}}]
"""


def write(folder: Path, name: str, tests: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"config: {SHOP}\ntests:\n{tests}")
    return path


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "topology.cli", "test", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=120,
    )


def test_all_passing_exits_0_with_one_line_per_test(tmp_path: Path) -> None:
    path = write(tmp_path, "shop_test.yaml", PASSING)
    proc = cli(str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"PASS {path}::priced", "1 passed, 0 failed"]


def test_a_failure_exits_1_with_a_readable_diff(tmp_path: Path) -> None:
    write(tmp_path, "shop_test.yaml", PASSING + FAILING)
    proc = cli(cwd=tmp_path)  # default: the current folder
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "PASS shop_test.yaml::priced"
    assert lines[1] == "FAIL shop_test.yaml::wrong total"
    assert lines[2:4] == [
        "    priced: expected 1 event, got 1",
        '      - missing: name=order.priced payload_contains={"total": 11}',
    ]
    assert lines[4].startswith("      + unexpected: name=order.priced topic=small payload={")
    assert lines[5] == "    tallies: expected no events, got 1 event"
    assert lines[6].startswith('      + unexpected: name=tally payload={"id": 2}')
    assert lines[-1] == "1 passed, 1 failed"


def test_timeout_option_fails_the_test_naming_what_is_pending(tmp_path: Path) -> None:
    path = write(tmp_path, "stuck_test.yaml", STUCK)
    proc = cli(str(path), "--timeout", "0.3")
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"FAIL {path}::stuck",
        "    timeout: not idle after 0.3s: actor stuck#0: 1 event(s) in hand; "
        "sink stuck: 1 event(s) of stream slow pending",
        "0 passed, 1 failed",
    ]


def test_an_invalid_file_exits_2_with_located_errors_and_the_valid_ones_still_run(
    tmp_path: Path,
) -> None:
    write(tmp_path / "a", "good_test.yaml", PASSING)
    bad = write(
        tmp_path / "b", "bad_test.yaml", "  - name: x\n    expect: {pricd: []}\n    orderd: true\n"
    )
    proc = cli(str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{bad}:4:14: tests[0].expect.pricd: unknown stream 'pricd' (did you mean 'priced'?)",
        f"{bad}:5:5: tests[0].orderd: unknown key 'orderd' (did you mean 'ordered'?)",
    ]
    assert proc.stdout.splitlines()[-1] == "1 passed, 0 failed"


def test_no_test_file_is_a_usage_error(tmp_path: Path) -> None:
    proc = cli(str(tmp_path))
    assert proc.returncode == 2
    assert "no *_test.yaml file under" in proc.stderr


def test_junit_report_parses_as_xml(tmp_path: Path) -> None:
    write(tmp_path, "shop_test.yaml", PASSING + FAILING)
    bad = write(tmp_path, "bad_test.yaml", "  - nam: x\n")
    report = tmp_path / "report.xml"
    proc = cli(str(tmp_path), "--format", "junit", "-o", str(report))
    assert proc.returncode == 2
    assert proc.stdout.splitlines()[-1] == "1 passed, 1 failed"
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    shop = str(tmp_path / "shop_test.yaml")
    assert set(cases) == {(shop, "priced"), (shop, "wrong total"), (str(bad), "(file)")}
    assert cases[(shop, "priced")].find("failure") is None
    failure = cases[(shop, "wrong total")].find("failure")
    assert failure is not None and failure.get("message") == "priced: expected 1 event, got 1"
    assert "tallies: expected no events" in (failure.text or "")
    error = cases[(str(bad), "(file)")].find("error")
    assert error is not None and "missing required key 'name'" in (error.get("message") or "")
    assert "unknown key 'nam'" in (error.text or "")
    assert all(float(c.get("time") or "x") >= 0 for c in cases.values())


def test_junit_without_a_file_goes_to_stdout(tmp_path: Path) -> None:
    path = write(tmp_path, "shop_test.yaml", PASSING)
    proc = cli(str(path), "--format", "junit")
    assert proc.returncode == 0
    assert ET.fromstring(proc.stdout.split("\n", 1)[1]).get("tests") == "1"
    assert proc.stderr.splitlines() == [f"PASS {path}::priced", "1 passed, 0 failed"]


def test_redis_url_runs_there_and_removes_its_keys(
    redis_server: ServerProcess, redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.set("keep-me", "1")
        path = write(tmp_path, "shop_test.yaml", PASSING + FAILING)
        proc = cli(str(path), "--redis-url", redis_url)
        assert proc.returncode == 1, proc.stderr
        assert proc.stdout.splitlines()[-1] == "1 passed, 1 failed"
        assert client.keys("*") == [b"keep-me"]
    finally:
        client.close()


#: What the runtime says of a stateful sink while the commit cannot carry its state yet.
STATE_REFUSED = re.compile(r"    error: ApplyError: .*has keyed state.*cannot run yet")


def test_the_example_configs_pass(tmp_path: Path) -> None:
    """Every example has its tests, and they pass (a stateful one: once the runtime runs it)."""
    files = sorted((ROOT / "configs").glob("*_test.yaml"))
    stems = {p.name.removesuffix("_test.yaml") for p in files}
    examples = {p.stem for p in (ROOT / "configs").glob("*.yaml") if p not in files}
    assert stems == examples  # every example config has its tests
    expected, stateful = 0, set()
    for path in files:
        test_file, _ = check_test_file(path)
        assert test_file is not None
        expected += len(test_file.tests)
        if any(sink.state is not None for sink in test_file.topology.sinks.values()):
            stateful.add(f"configs/{path.name}")
    proc = cli("configs/")
    lines = proc.stdout.splitlines()
    verdicts = [(i, line) for i, line in enumerate(lines) if line.startswith(("PASS ", "FAIL "))]
    assert len(verdicts) == expected, proc.stdout + proc.stderr
    for i, line in verdicts:
        assert re.fullmatch(r"(PASS|FAIL) configs/\w+_test\.yaml::.+", line)
        if line.startswith("FAIL "):
            assert line[5:].split("::")[0] in stateful, proc.stdout
            assert STATE_REFUSED.fullmatch(lines[i + 1]), proc.stdout
    failed = sum(line.startswith("FAIL ") for _, line in verdicts)
    assert lines[-1] == f"{expected - failed} passed, {failed} failed"
    assert proc.returncode == (1 if failed else 0)


def test_an_unreachable_redis_url_stops_the_run_without_printing_its_password(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "shop_test.yaml", PASSING + FAILING)
    proc = cli(str(path), "--redis-url", "redis://user:s3cret@127.0.0.1:1/0")
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == ["0 passed, 0 failed"]
    assert proc.stderr.startswith("ponos-topology test: cannot reach Redis at redis://user:***@")
    assert "s3cret" not in proc.stdout + proc.stderr
