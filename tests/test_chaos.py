"""The chaos tool's short mode: faults under load end with nothing lost or duplicated."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import chaos


def test_chaos_short_mode_loses_and_duplicates_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--short", "--scenario", "kill-workers", "--scenario", "redis-restarts"]
    argv += ["--scenario", "cluster-master-kill"]  # both flows: one hash tag, and across slots
    code = chaos.main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "4 passed, 0 failed"


def test_stalled_connections_lose_and_duplicate_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Frozen connections under load: every worker resumes on new ones (a short
    ``redis.timeout`` keeps the run short; the default is the same code path)."""
    argv = ["--short", "--scenario", "stalled-connections", "--redis-timeout", "2s"]
    code = chaos.main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "1 passed, 0 failed"


def test_a_loss_fails_the_chaos_run() -> None:
    result = chaos.Result("x", events=10, done=9, lost=1, dead_expected=0, recovery=1.0)
    assert not result.ok
    result = chaos.Result("x", events=10, done=10, duplicated=1, recovery=1.0)
    assert not result.ok  # exactly-once promised
    result.exactly_once = False
    assert result.ok  # at-least-once: a duplicate is allowed
    assert not chaos.Result("x", events=10, done=10, recovery=None).ok  # never recovered
