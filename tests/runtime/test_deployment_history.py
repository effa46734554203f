"""A deployment's versions: ``apply --dry-run``, ``history``, ``rollback`` (real servers)."""

from __future__ import annotations

import json
from pathlib import Path

import redis
import redis.asyncio as aioredis

from tests.runtime.test_deployment import cli, write_config
from topology.runtime.deployment import (
    HISTORY,
    history,
    publish,
    read_published,
    read_version,
    sha256_of,
)
from topology.runtime.keys import EngineKeys
from topology.runtime.signing import DeployKey

SECRET = "history-key-2b9e"


def test_history_lists_each_version_with_time_sha_and_file(tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path, "hist1")
    texts = []
    for streams in ("a", "a, b", "b"):
        write_config(tmp_path, "hist1", streams=streams)
        texts.append(config.read_text())
        assert cli("apply", str(config), "--redis-url", redis_url).returncode == 0
    listed = cli("history", "hist1", "--redis-url", redis_url)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 3
    for number, (line, text) in enumerate(zip(lines, texts, strict=True), start=1):
        fields = line.split()
        mark = ["*"] if number == 3 else []
        assert fields[: len(mark) + 1] == [*mark, str(number)]
        assert sha256_of(text)[:12] in fields and "dep.yaml" in fields and "unsigned" in fields
    as_json = json.loads(
        cli("history", "hist1", "--redis-url", redis_url, "--format", "json").stdout
    )
    assert [row["version"] for row in as_json] == [1, 2, 3]
    assert [row["current"] for row in as_json] == [False, False, True]
    assert as_json[0]["sha256"] == sha256_of(texts[0]) and as_json[0]["applied_at"] > 1e9


def test_rollback_republishes_an_earlier_version_as_the_next_one(
    tmp_path: Path, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    config = write_config(tmp_path, "hist2")
    first = config.read_text()
    assert cli("apply", str(config), "--redis-url", redis_url).returncode == 0
    write_config(tmp_path, "hist2", streams="a, b")
    second = config.read_text()
    assert cli("apply", str(config), "--redis-url", redis_url).returncode == 0
    try:
        back = cli("rollback", "hist2", "--redis-url", redis_url)
        assert back.returncode == 0, back.stderr
        assert back.stdout.startswith("rolled back hist2 to version 1: published as version 3")
        current = client.hgetall(EngineKeys("hist2").config())
        assert current[b"version"] == b"3" and current[b"text"].decode() == first
        assert current[b"note"] == b"rollback to 1"
        forward = cli("rollback", "hist2", "--to", "2", "--redis-url", redis_url)
        assert forward.returncode == 0, forward.stderr
        assert client.hget(EngineKeys("hist2").config(), "text").decode() == second
        listed = cli("history", "hist2", "--redis-url", redis_url).stdout.splitlines()
        assert listed[2].endswith("rollback to 1") and listed[3].endswith("rollback to 2")
        assert listed[3].startswith("*")
        missing = cli("rollback", "hist2", "--to", "9", "--redis-url", redis_url)
        assert missing.returncode == 2 and "no earlier version 9" in missing.stderr
        nothing = cli("rollback", "nosuch", "--redis-url", redis_url)
        assert nothing.returncode == 2 and "no published version" in nothing.stderr
    finally:
        client.close()


def test_a_signed_deployment_is_rolled_back_only_with_its_key(
    tmp_path: Path, redis_url: str
) -> None:
    name = "hist3"
    key = DeployKey(SECRET.encode())
    client = redis.Redis.from_url(redis_url)
    config = write_config(tmp_path, name)
    assert cli("apply", str(config), "--redis-url", redis_url, key=SECRET).returncode == 0
    write_config(tmp_path, name, streams="a, b")
    assert cli("apply", str(config), "--redis-url", redis_url, key=SECRET).returncode == 0
    try:
        unkeyed = cli("rollback", name, "--redis-url", redis_url)
        assert unkeyed.returncode == 2 and "needs the deploy key" in unkeyed.stderr
        assert client.hget(EngineKeys(name).config(), "version") == b"2"
        back = cli("rollback", name, "--redis-url", redis_url, key=SECRET)
        assert back.returncode == 0, back.stderr
        fields = client.hgetall(EngineKeys(name).config())
        assert fields[b"version"] == b"3"
        # Signed for its new number: a worker with the key runs it.
        assert key.verifies(name, 3, fields[b"text"].decode(), fields[b"signature"].decode())
        # A version an attacker rewrote in the history is not signed again.
        client.hset(EngineKeys(name).config_version(1), "text", "version: 1\nname: hist3\n")
        laundered = cli("rollback", name, "--to", "1", "--redis-url", redis_url, key=SECRET)
        assert laundered.returncode == 2 and "does not verify" in laundered.stderr
        assert client.hget(EngineKeys(name).config(), "version") == b"3"
        assert SECRET not in back.stdout + back.stderr + laundered.stderr
    finally:
        client.close()


def test_apply_dry_run_prints_the_plan_against_the_current_version(
    tmp_path: Path, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    config = write_config(tmp_path, "hist4")
    try:
        fresh = cli("apply", str(config), "--dry-run", "--redis-url", redis_url)
        assert fresh.returncode == 0, fresh.stderr
        assert "hist4 has no version yet" in fresh.stdout and "sink fwd" in fresh.stdout
        assert not client.exists(EngineKeys("hist4").config())
        assert cli("apply", str(config), "--redis-url", redis_url).returncode == 0
        same = cli("apply", str(config), "--dry-run", "--redis-url", redis_url)
        assert "version 1 already has this text" in same.stdout
        write_config(tmp_path, "hist4", streams="a, b")
        planned = cli("apply", str(config), "--dry-run", "--redis-url", redis_url)
        assert planned.returncode == 0, planned.stderr
        lines = planned.stdout.splitlines()
        assert lines[0] == "dry run: hist4 version 1 (dep.yaml) -> version 2:"
        assert any("fwd" in line and "b" in line for line in lines[1:]), planned.stdout
        assert client.hget(EngineKeys("hist4").config(), "version") == b"1"  # nothing published
    finally:
        client.close()


async def test_the_last_versions_are_kept_and_older_ones_deleted(
    tmp_path: Path, r: aioredis.Redis
) -> None:
    text = write_config(tmp_path, "hist5").read_text()
    total = HISTORY + 3
    for n in range(total):
        await publish(r, "hist5", f"{text}# {n}\n", source="dep.yaml")
    kept = await history(r, "hist5")
    assert [v.version for v in kept] == list(range(4, total + 1))
    assert await read_version(r, "hist5", 3) is None
    assert not await r.exists(EngineKeys("hist5").config_version(3))
    oldest = await read_version(r, "hist5", 4)
    assert oldest is not None and oldest.text == f"{text}# 3\n"
    current = await read_published(r, "hist5")
    assert current is not None and current.version == total


async def test_a_version_published_before_versions_were_kept_is_listed(
    tmp_path: Path, r: aioredis.Redis
) -> None:
    text = write_config(tmp_path, "hist6").read_text()
    fields = {"version": 7, "text": text, "sha256": sha256_of(text), "source": "dep.yaml"}
    await r.hset(EngineKeys("hist6").config(), mapping=fields)
    listed = await history(r, "hist6")
    assert [(v.version, v.sha256, v.source) for v in listed] == [(7, sha256_of(text), "dep.yaml")]
    version, changed = await publish(r, "hist6", text + "# next\n", source="dep.yaml")
    assert (version, changed) == (8, True)
    assert [v.version for v in await history(r, "hist6")] == [8]
