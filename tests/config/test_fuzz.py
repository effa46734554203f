"""Never a traceback for bad input: whatever the text, a model or a located ConfigError.

And whatever the bytes of a file or the words on a command line: every command
ends with an exit code (0 ok, 1 runtime failure, 2 usage, 3 plan changes) and a
message, never a traceback. The argv fuzz calls ``main`` in-process, with Redis
always a closed port or an unusable URL, so no server starts and nothing waits.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from topology.cli import COMMANDS
from topology.config import ConfigError, Topology, check, load_text

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXAMPLES = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.endswith("_test.yaml"))
TEXTS = {path: path.read_text() for path in EXAMPLES}
ENV = {"REDIS_URL": ""}

#: Keys of the format, so random documents get past the first level often.
KEYS = [
    "version", "name", "allow_cycles", "redis", "url", "prefix", "defaults", "streams",
    "sources", "sinks", "handler", "stream", "topic", "topic_pattern", "matcher", "consumers",
    "outputs", "start", "ack_grace", "batch", "retry", "max_attempts", "backoff", "max_backoff",
    "dead_letter", "max_len", "ttl", "topics", "orders", "<<",
]  # fmt: skip
SCALARS = [
    "orders", "handlers:enrich", "handlers:nope", "nomodule:x", "20s", "5 minutes", "oldest",
    "after:1-0", "at:2024-01-01T00:00:00Z", "at:nope", "eu\\..*", "(", "${X}", "${X:-1}", "$$",
    "${", "1", "-1", "0", "true", "null", "~", "&a", "*a", "!!binary x", "{", "[", ":", "- ",
    "\t", "#", "'", '"', "\\", "\x00", "\ufeff", "é",
]  # fmt: skip


def _assert_model_or_located_error(text: str, path: Path) -> None:
    try:
        topology = load_text(text, path=path, env=ENV)
    except ConfigError as error:
        assert error.problems, "a ConfigError lists its problems"
        for problem in error.problems:
            assert problem.line >= 1 and problem.col >= 1, problem
            assert problem.message
    else:
        assert isinstance(topology, Topology)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(SCALARS)
)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document=documents,
    flow=st.booleans(),
    raw=st.text(max_size=60) | st.sampled_from(SCALARS),
    as_yaml=st.booleans(),
)
def test_random_documents_never_raise_anything_but_config_error(
    document: object, flow: bool, raw: str, as_yaml: bool
) -> None:
    dumped = yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True)
    text = dumped if as_yaml else raw
    _assert_model_or_located_error(text, CONFIGS / "fuzz.yaml")


@st.composite
def mutated_examples(draw: st.DrawFn) -> tuple[Path, str]:
    path = draw(st.sampled_from(EXAMPLES))
    lines = TEXTS[path].splitlines(keepends=True)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if not lines:
            lines = ["\n"]
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "edit", "indent"]))
        if action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        elif action == "swap":
            j = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif action == "insert":
            lines.insert(i, draw(st.sampled_from(SCALARS) | st.text(max_size=20)) + "\n")
        elif action == "indent":
            lines[i] = draw(st.sampled_from(["", " ", "  ", "\t"])) + lines[i].lstrip(" ")
        else:
            line = lines[i]
            at = draw(st.integers(min_value=0, max_value=len(line)))
            cut = draw(st.integers(min_value=0, max_value=4))
            new = draw(st.sampled_from(SCALARS) | st.text(max_size=4))
            lines[i] = line[:at] + new + line[at + cut :]
    return path, "".join(lines)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated_examples())
def test_mutated_examples_never_raise_anything_but_config_error(case: tuple[Path, str]) -> None:
    path, text = case
    _assert_model_or_located_error(text, path)


# -- random bytes, and random argv to every command ------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=200) | st.sampled_from(SCALARS).map(str.encode))
def test_random_bytes_never_raise(data: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("bytes", numbered=True) / "fuzz.yaml"
    path.write_bytes(data)
    topology, problems = check(path, env=ENV)
    assert topology is not None or problems
    for problem in problems:
        assert problem.line >= 1 and problem.col >= 1 and problem.message


#: Redis URLs that fail at once and never start anything: a closed port, or unusable.
CLOSED = "redis://127.0.0.1:1/0"
URLS = [
    CLOSED, "rediss://127.0.0.1:1", "unix:///nonexistent/redis.sock", "redis://user:pw@[::1",
    "garbage://s3cret@@:x", "redis://h:x", "redis://h:99999", "unix://", "http://a:b@h",
]  # fmt: skip
WORDS = [
    "fuzz.yaml", "pipeline.yaml", "missing.yaml", ".", "", "orders", "enriched", "nope", "x y",
    "0", "-1", "1", "99999999999999999999", "nan", "inf", "abc", "newest", "oldest", "after:1-0",
    "at:2024-01-01T00:00:00Z", "1-99999999999999999999999", "text", "json", "mermaid", "dot",
    "events.jsonl", "-", "--", "é", "{\"a\": 1}",
]  # fmt: skip
#: Values for options whose values could reach outside the test: never a blank URL
#: (it means "start the embedded server"), only files inside the test's folder.
SAFE_VALUES = {"redis_url": URLS, "output": ["out.txt", "no/such/dir/out.txt", "."]}
EVENTS = (
    '{"name": "a", "payload": "x"}\n{"name": 1}\nnot json\n'
    '{"name": "b", "encoding": "base64", "payload": "%%"}\n'
)


def _actions(command: str) -> list[argparse.Action]:
    from topology.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices[command]._actions)


#: ``(flag, takes a value, dest)`` of every option, and the dests of the positionals.
COMMAND_OPTIONS = {
    name: [(f, a.nargs != 0, a.dest) for a in _actions(name) for f in a.option_strings]
    for name in COMMANDS
}
COMMAND_POSITIONALS = {
    name: [a.dest for a in _actions(name) if not a.option_strings] for name in COMMANDS
}
POSITIONAL_VALUES = {
    "config": ["fuzz.yaml", "pipeline.yaml", "retry_dlq.yaml", "missing.yaml"],
    "stream": ["orders", "enriched", "nope", "x y"],
}
POSITIONAL_VALUES["old"] = POSITIONAL_VALUES["new"] = POSITIONAL_VALUES["config"]


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    """A command, often with the positionals it wants (to get past them), and options."""
    command = draw(st.sampled_from(COMMANDS))
    words = st.sampled_from(WORDS) | st.text(max_size=8).filter(_local)
    argv = [command]
    if draw(st.integers(min_value=0, max_value=3)):
        for dest in COMMAND_POSITIONALS[command]:
            pool = POSITIONAL_VALUES.get(dest)
            argv.append(draw(st.sampled_from(pool) if pool else words))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        if draw(st.integers(min_value=0, max_value=3)) == 0:
            argv.append(draw(words))
            continue
        flag, takes_value, dest = draw(st.sampled_from(COMMAND_OPTIONS[command]))
        if flag in ("-h", "--help") and draw(st.integers(min_value=0, max_value=4)):
            continue  # once in a while: help ends everything else
        argv.append(flag)
        if takes_value:
            pool = SAFE_VALUES.get(dest)
            argv.append(draw(st.sampled_from(pool) if pool else words))
    return argv


def _local(text: str) -> bool:
    """A word that cannot name a file outside the test's folder, nor a blank URL."""
    return "/" not in text and text.strip() != "" and not text.startswith("..")


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("argv")
    for path in CONFIGS.iterdir():
        # Without the example test files, `test` finds none here and never starts a server.
        if path.suffix in (".py", ".yaml") and not path.name.endswith("_test.yaml"):
            (folder / path.name).write_text(path.read_text())
    (folder / "events.jsonl").write_text(EVENTS)
    return folder


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(argv=argvs(), document=documents, as_yaml=st.booleans(), raw=st.binary(max_size=80))
def test_random_argv_to_every_command_never_tracebacks(
    argv: list[str], document: object, as_yaml: bool, raw: bytes, fuzz_dir: Path
) -> None:
    from topology.cli import main

    if as_yaml:
        (fuzz_dir / "fuzz.yaml").write_text(yaml.safe_dump(document, allow_unicode=True))
    else:
        (fuzz_dir / "fuzz.yaml").write_bytes(raw)
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(fuzz_dir)
        patch.setenv("REDIS_URL", CLOSED)  # no command ever starts an embedded server
        patch.setattr(sys, "stdin", io.StringIO(EVENTS))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: --help, --version, usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    event(f"{argv[0]} exit {code}")
    assert code in (0, 1, 2, 3), (argv, code)
    assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
    if code == 1:  # a runtime failure: here, only ever Redis out of reach
        assert "Redis" in err.getvalue() or "cannot write" in err.getvalue(), (argv, err.getvalue())
