"""Never a traceback for bad input: whatever the text, a model or a located ConfigError."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from topology.config import ConfigError, Topology, load_text

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
