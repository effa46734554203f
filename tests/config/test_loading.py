"""The model a valid file becomes, and the substitution/duration rules it relies on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from topology.config import (
    ConfigError,
    RetryPolicy,
    StreamRef,
    check,
    load,
    load_schema,
    load_text,
    parse_duration,
    schema_path,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

MINIMAL = """\
version: 1
name: t
streams:
  orders: {}
sinks:
  s:
    streams: [orders]
    handler: handlers:ok
"""


def test_pipeline_model_has_defaults_applied_and_durations_in_seconds() -> None:
    topology = load(CONFIGS / "pipeline.yaml", env={})
    assert topology.name == "orders"
    assert topology.redis.url is None  # ${REDIS_URL:-} empty -> embedded server
    assert list(topology.streams) == ["orders", "enriched", "alerts", "orders-dlq"]
    assert topology.streams["alerts"].ttl == 86400.0
    assert topology.streams["orders"].topics == ("eu.orders", "us.orders")
    enrich = topology.sinks["enrich_eu"]
    assert enrich.ack_grace == 20.0 and enrich.batch == 256 and enrich.start == "oldest"
    assert enrich.retry == RetryPolicy(max_attempts=3, backoff=0.1, max_backoff=1.0)
    assert enrich.topic_pattern == "eu\\..*" and enrich.consumers == 2
    report = topology.sinks["report"]
    assert report.streams == (StreamRef("enriched"), StreamRef("alerts", "oldest"))
    assert topology.path == (CONFIGS / "pipeline.yaml").resolve()
    assert topology.actor_count() == 6


def test_pipeline_example_has_no_warnings() -> None:
    topology, problems = check(CONFIGS / "pipeline.yaml", env={}, strict=True)
    assert problems == () and topology is not None


@pytest.mark.parametrize(
    "path",
    sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.endswith("_test.yaml")),
    ids=lambda p: p.name,
)
def test_every_example_config_validates_strictly(path: Path) -> None:
    topology, problems = check(path, env={}, strict=True)
    assert [str(p) for p in problems] == []
    assert topology is not None and topology.sinks


def test_redis_url_comes_from_the_environment() -> None:
    topology = load(CONFIGS / "pipeline.yaml", env={"REDIS_URL": "redis://db:6380/0"})
    assert topology.redis.url == "redis://db:6380/0"


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONOS_TEST_PREFIX", "from-env")
    text = MINIMAL + "redis: {prefix: '${PONOS_TEST_PREFIX}'}\n"
    assert load_text(text, path=Path(__file__).parent / "broken" / "x.yaml").redis.prefix == (
        "from-env"
    )


def test_substitution_defaults_escapes_and_types() -> None:
    text = MINIMAL + (
        "    batch: ${BATCH:-64}\n"  # plain scalar: re-read as the integer it now spells
        "    topic: ${TOPIC:-eu.orders}\n"
        "redis: {prefix: 'p$$${SUFFIX}'}\n"
    )
    base = Path(__file__).parent / "broken" / "x.yaml"
    topology = load_text(text, path=base, env={"SUFFIX": "x", "TOPIC": ""})
    assert topology.sinks["s"].batch == 64
    assert topology.sinks["s"].topic == "eu.orders"  # empty counts as unset, as in a shell
    assert topology.redis.prefix == "p$x"


def test_missing_variable_is_an_error_at_its_column() -> None:
    text = MINIMAL + "redis: {prefix: 'p-${NOPE}'}\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, path="inline.yaml", env={}, import_callables=False)
    assert str(info.value) == (
        "inline.yaml:9:20: redis.prefix: environment variable 'NOPE' is not set and has no default"
    )


def test_variables_are_not_substituted_in_comments_or_keys() -> None:
    text = "# ${NOT_A_VAR}\n" + MINIMAL.replace("  orders: {}", "  orders: {}\n  ${k}: {}")
    topology, problems = check_text_problems(text)
    assert topology is not None
    assert "${k}" in topology.streams
    assert [p.message for p in problems] == [
        "stream '${k}' is neither written nor read by any source or sink"
    ]


def check_text_problems(text: str):  # type: ignore[no-untyped-def]
    from topology.config import check_text

    return check_text(text, path="inline.yaml", env={}, import_callables=False)


def test_alias_bomb_is_refused_with_a_location() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    with pytest.raises(ConfigError) as info:
        load_text("\n".join(lines) + "\n", env={})
    assert "document too large" in str(info.value)
    assert all(p.line >= 1 for p in info.value.problems)


def test_python_tags_are_refused() -> None:
    text = MINIMAL + "    topic: !!python/object/apply:os.system ['true']\n"
    with pytest.raises(ConfigError) as info:
        load_text(text, env={}, import_callables=False)
    assert "unsupported tag 'tag:yaml.org,2002:python/object/apply:os.system'" in str(info.value)


def test_merge_keys_work_and_explicit_keys_win() -> None:
    text = (
        "version: 1\nname: t\nstreams:\n  orders: {}\nsinks:\n"
        "  s:\n    <<: {handler: 'handlers:ok', consumers: 3}\n    streams: [orders]\n"
        "    consumers: 2\n"
    )
    topology, problems = check_text_problems(text)
    assert topology is not None, problems
    assert topology.sinks["s"].consumers == 2 and topology.sinks["s"].handler == "handlers:ok"


def test_warnings_of_a_valid_config_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    broken = Path(__file__).parent / "broken"
    with caplog.at_level(logging.WARNING, logger="topology.config"):
        topology = load(broken / "warnings_only.yaml", env={})
    assert topology is not None
    assert any("is read by no sink" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("20s", 20.0), ("5m", 300.0), ("24h", 86400.0), ("1m30s", 90.0),
     ("1.5s", 1.5), ("2d", 172800.0), (" 0s ", 0.0)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "20", "s", "5 m", "5minutes", "-1s", "1y", "ms20"])
def test_parse_duration_rejects_junk(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_loader_uses_the_published_schema_file() -> None:
    assert schema_path() == ROOT / "schemas" / "topology.schema.json"
    schema = json.loads(schema_path().read_text())
    assert load_schema() == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "/v1/" in schema["$id"]


def test_schema_forbids_unknown_keys_everywhere() -> None:
    def walk(node: object) -> None:
        if isinstance(node, dict):
            is_object = node.get("type") == "object" or "object" in (node.get("type") or [])
            if is_object and "properties" in node:
                assert node.get("additionalProperties") is False, node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_schema())


def test_a_merged_then_overridden_key_is_located_at_the_override() -> None:
    text = (
        "version: 1\nname: t\nstreams:\n  orders: {}\nsinks:\n"
        "  s:\n    <<: {handler: 'handlers:ok', consumers: 3}\n    streams: [orders]\n"
        "    consumers: 0\n"
    )
    _, problems = check_text_problems(text)
    assert [str(p) for p in problems] == [
        "inline.yaml:9:16: sinks.s.consumers: must be at least 1, got 0"
    ]


def test_a_bad_redis_url_is_reported_without_its_password() -> None:
    text = MINIMAL + "redis: {url: 'http://admin:s3cret@db:6379/0'}\n"
    _, problems = check_text_problems(text)
    assert [p.message for p in problems] == [
        "unsupported URL scheme 'http' (use redis://, rediss:// or unix://)"
    ]
    assert "s3cret" not in str(problems[0])


@pytest.mark.parametrize("url", ["redis://:pw@h:1/0", "rediss://h", "unix:///tmp/r.sock"])
def test_redis_url_schemes_accepted(url: str) -> None:
    topology, problems = check_text_problems(MINIMAL + f"redis: {{url: '{url}'}}\n")
    assert problems == () and topology is not None and topology.redis.url == url


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(" * 5000 + ")" * 5000, "invalid regex: "),
        ("a{99999999999}", "invalid regex: the repetition number is too large"),
    ],
)
def test_pathological_regexes_are_located_errors(pattern: str, message: str) -> None:
    _, problems = check_text_problems(MINIMAL + f"    topic_pattern: '{pattern}'\n")
    assert [p.line for p in problems] == [9]
    assert problems[0].message.startswith(message)  # wording of the re module may grow


def test_an_aliased_mapping_with_a_merge_is_not_a_duplicate_the_second_time() -> None:
    text = (
        "version: 1\nname: t\nstreams:\n  orders: {}\nsinks:\n"
        "  s: &s\n    <<: {handler: 'handlers:ok', consumers: 3}\n    streams: [orders]\n"
        "    consumers: 2\n"
        "  t: *s\n"
    )
    topology, problems = check_text_problems(text)
    assert problems == ()
    assert topology is not None and topology.sinks["t"].consumers == 2


def test_redis_timeout_is_a_duration_with_a_ten_second_default() -> None:
    topology, problems = check_text_problems("version: 1\nname: t\nredis: {timeout: 1500ms}\n")
    assert topology is not None and not problems
    assert topology.redis.timeout == 1.5
    topology, _ = check_text_problems("version: 1\nname: t\n")
    assert topology is not None and topology.redis.timeout == 10.0


def test_sink_timeout_max_deliveries_and_max_batch_bytes() -> None:
    text = (
        "version: 1\nname: t\nstreams: {a: {}}\n"
        "defaults: {max_deliveries: 3, max_batch_bytes: 1000000}\n"
        "sinks:\n  s: {streams: [a], handler: 'm:f', timeout: 2s}\n"
        "  u: {streams: [a], handler: 'm:f', max_deliveries: 1}\n"
    )
    topology, problems = check_text_problems(text)
    assert topology is not None and not problems
    s, u = topology.sinks["s"], topology.sinks["u"]
    assert (s.timeout, s.max_deliveries, s.max_batch_bytes) == (2.0, 3, 1_000_000)
    assert (u.timeout, u.max_deliveries) == (None, 1)
    topology, _ = check_text_problems(text.replace("defaults: {", "x: {"))
    assert topology is None
    bare, _ = check_text_problems(
        "version: 1\nname: t\nstreams: {a: {}}\nsinks: {s: {streams: [a], handler: 'm:f'}}\n"
    )
    assert bare is not None
    assert (bare.sinks["s"].max_deliveries, bare.sinks["s"].max_batch_bytes) == (10, 16_000_000)
