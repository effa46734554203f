"""Each file in broken/ states the exact problems it must produce, line:col included.

A file's ``# expect: LINE:COL: PATH: message`` comments (its first lines, counted
like any other line) are the whole list, in order: a new spurious warning
fails the test as surely as a missing error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from topology.config import ConfigError, check, load

BROKEN = Path(__file__).parent / "broken"
CASES = sorted(BROKEN.glob("*.yaml"))


def _expected(path: Path) -> list[str]:
    return [
        line.removeprefix("# expect:").strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect:")
    ]


def test_corpus_is_large_enough() -> None:
    assert len([c for c in CASES if any("warning:" not in e for e in _expected(c))]) >= 30


@pytest.mark.parametrize("path", CASES, ids=[c.stem for c in CASES])
def test_broken_config_reports_located_problems(path: Path) -> None:
    expected = _expected(path)
    assert expected, f"{path.name} has no '# expect:' line"
    topology, problems = check(path, env={})
    got = [str(p).removeprefix(f"{path}:") for p in problems]
    assert got == expected
    has_error = any(p.severity == "error" for p in problems)
    assert (topology is None) == has_error
    if has_error:
        with pytest.raises(ConfigError) as info:
            load(path, env={})
        assert info.value.problems == problems


def test_problem_lines_name_the_file_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN.parent)
    _, problems = check("broken/unknown_stream_in_sink.yaml", env={})
    assert [str(p) for p in problems] == [
        "broken/unknown_stream_in_sink.yaml:8:15: sinks.enrich.streams[0]: "
        "unknown stream 'ordrs' (did you mean 'orders'?)"
    ]


def test_strict_turns_warnings_into_errors() -> None:
    path = BROKEN / "warnings_only.yaml"
    topology, problems = check(path, env={})
    assert topology is not None and problems
    assert all(p.severity == "warning" for p in problems)
    strict, strict_problems = check(path, env={}, strict=True)
    assert strict is None
    assert [p.message for p in strict_problems] == [p.message for p in problems]
    assert all(p.severity == "error" and "warning:" not in str(p) for p in strict_problems)


def test_unreadable_file_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    topology, problems = check(tmp_path / "missing.yaml")
    assert topology is None
    assert len(problems) == 1 and problems[0].line == 1 and "cannot read" in problems[0].message


def test_callables_are_not_imported_when_asked_not_to() -> None:
    topology, problems = check(BROKEN / "handler_module_missing.yaml", import_callables=False)
    assert topology is not None and problems == ()
    assert topology.sinks["s"].handler == "handlerz:ok"
