"""A deployment runs only what its deployer meant: the operator's handlers, signed versions.

The attacker of these tests can write to the deployment's Redis (a shared
cache, a leaked password) but holds neither the deploy key nor the workers'
handler folders.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from tests.helpers import wait_for, wait_until
from tests.runtime.test_deployment import (
    Recorder,
    Worker,
    cli,
    heartbeat,
    outputs,
    wait_applied,
    write_config,
)
from topology.runtime.deployment import DeploymentFollower, publish, sha256_of
from topology.runtime.keys import EngineKeys
from topology.runtime.signing import DeployKey, DeployKeyError, load_key

SECRET = "s3cret-deploy-key-7f1c"


def rejections(recorder: Recorder) -> float:
    value = recorder.metrics.registry.get_sample_value(
        "ponos_reloads_total", {"result": "rejected"}
    )
    return value or 0.0


async def test_a_callable_outside_the_handlers_folder_is_a_located_error_and_changes_nothing(
    tmp_path: Path, r: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    text = write_config(tmp_path, "sec1").read_text()
    await publish(r, "sec1", text, source="dep.yaml")
    follower = DeploymentFollower(r, "sec1", handlers_dir=tmp_path, poll_interval=0.2)
    recorder = Recorder()
    try:
        assert await follower.first(asyncio.Event()) is not None
        follower.start(recorder)
        caplog.set_level(logging.INFO, logger="topology.deployment")
        hostile = text.replace("dep_handlers:forward", "json:dumps").replace(
            "defaults:", "sources:\n  boom:\n    handler: os:getpid\n    stream: a\ndefaults:"
        )
        await publish(r, "sec1", hostile, source="dep.yaml")
        await wait_for(lambda: follower.rejected is not None, what="version 2 refused")
        errors = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.ERROR]
        assert any(
            "dep.yaml:6:14: sources.boom.handler: module 'os' is outside the handlers folder"
            in line
            for line in errors
        ), errors
        assert any(
            "dep.yaml:17:14: sinks.fwd.handler: module 'json' is outside the handlers folder"
            in line
            for line in errors
        ), errors
        assert "version 1 keeps running" in caplog.text
        assert recorder.applied == [] and follower.version == 1
        assert follower.rejected is not None and follower.rejected["version"] == 2
        assert "outside the handlers folder" in follower.rejected["reason"]
    finally:
        await follower.stop()


async def test_allow_module_lets_the_operator_name_a_module_prefix(
    tmp_path: Path, r: aioredis.Redis
) -> None:
    text = write_config(tmp_path, "sec2").read_text().replace("dep_handlers:forward", "json:dumps")
    await publish(r, "sec2", text, source="dep.yaml")
    follower = DeploymentFollower(
        r, "sec2", handlers_dir=tmp_path, allow_modules=("json",), poll_interval=0.2
    )
    try:
        first = await follower.first(asyncio.Event())
        assert first is not None and first.sinks["fwd"].handler == "json:dumps"
    finally:
        await follower.stop()


async def test_a_worker_with_a_key_refuses_every_version_not_signed_with_it(
    tmp_path: Path, r: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    name = "sec3"
    key = DeployKey(SECRET.encode())
    text = write_config(tmp_path, name).read_text()
    assert await publish(r, name, text, source="dep.yaml", key=key) == (1, True)
    follower = DeploymentFollower(r, name, handlers_dir=tmp_path, key=key, poll_interval=0.2)
    recorder = Recorder()
    config = EngineKeys(name).config()
    wider = text.replace("streams: [a]", "streams: [a, b]")

    async def forge(version: int, body: str, signature: str) -> None:
        """What an attacker with write access can do: any fields, no PUBLISH needed."""
        await r.hset(
            config,
            mapping={
                "version": version,
                "text": body,
                "sha256": sha256_of(body),
                "source": "dep.yaml",
                "signature": signature,
            },
        )
        await wait_for(
            lambda: follower.rejected is not None and follower.rejected["version"] == version,
            what=f"version {version} refused",
        )

    try:
        assert await follower.first(asyncio.Event()) is not None
        follower.start(recorder)
        caplog.set_level(logging.INFO, logger="topology.deployment")
        # Unsigned, published through the ordinary path by someone without the key.
        await publish(r, name, wider, source="dep.yaml")
        await wait_for(lambda: follower.rejected is not None, what="unsigned version refused")
        assert follower.rejected == {
            "version": 2,
            "reason": "it is unsigned, and this worker runs only signed versions",
        }
        # Tampered: a valid signature of another text.
        await forge(3, wider, key.sign(name, 3, text))
        # Signed with another key.
        await forge(4, wider, DeployKey(b"another key").sign(name, 4, wider))
        # A signature made for another version number (replayed under a new one).
        await forge(5, text, key.sign(name, 1, text))
        for version in (3, 4, 5):
            assert (
                f"deployment {name} version {version} refused: its signature does not verify"
                in (caplog.text)
            )
        refused = [
            rec
            for rec in caplog.records
            if "refused" in rec.getMessage() and name in rec.getMessage()
        ]
        assert [rec.levelno for rec in refused] == [logging.ERROR] * 4
        assert recorder.applied == [] and follower.version == 1  # generation unchanged
        assert rejections(recorder) == 4
        # The deployer, with the key: runs, and the rejection is history.
        version, changed = await publish(r, name, wider, source="dep.yaml", key=key)
        assert (version, changed) == (6, True)
        await wait_applied(recorder, 1)
        assert recorder.applied[0].sinks["fwd"].stream_names == ("a", "b")
        assert follower.version == 6 and follower.rejected is None
        # A genuine but older signed version, written back: a replay.
        await forge(1, text, key.sign(name, 1, text))
        assert follower.rejected is not None
        assert follower.rejected["reason"] == "it is older than version 6 running here (replayed?)"
        assert len(recorder.applied) == 1
    finally:
        await follower.stop()
    assert SECRET not in caplog.text


def test_load_key_reads_the_file_first_then_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "deploy.key"
    key_file.write_text(SECRET + "\n")
    from_file = load_key(key_file, env={"PONOS_DEPLOY_KEY": "other"})
    assert from_file is not None and from_file.sign("d", 1, "x") == DeployKey(SECRET.encode()).sign(
        "d", 1, "x"
    )
    from_env = load_key(None, env={"PONOS_DEPLOY_KEY": f" {SECRET} "})
    assert from_env is not None and from_env.verifies("d", 1, "x", from_file.sign("d", 1, "x"))
    assert load_key(None, env={}) is None
    assert SECRET not in repr(from_env)
    for bad in (
        lambda: load_key(None, env={"PONOS_DEPLOY_KEY": " "}),
        lambda: load_key(tmp_path / "missing.key", env={}),
    ):
        with pytest.raises(DeployKeyError) as info:
            bad()
        assert SECRET not in str(info.value)


def test_signed_apply_runs_an_unsigned_apply_is_refused_and_status_shows_it(
    tmp_path: Path, redis_url: str
) -> None:
    name = "sec4"
    client = redis.Redis.from_url(redis_url)
    config = write_config(tmp_path / "pub", name)
    handlers = tmp_path / "worker"
    write_config(handlers, "unused")
    key_file = tmp_path / "deploy.key"
    key_file.write_text(SECRET + "\n")
    key_file.chmod(0o644)
    loose = cli(
        "apply",
        str(config),
        "--dry-run",
        "--redis-url",
        redis_url,
        "--deploy-key-file",
        str(key_file),
    )
    assert loose.returncode == 0 and "readable by other users" in loose.stderr
    key_file.chmod(0o600)
    signed = cli("apply", str(config), "--redis-url", redis_url, "--deploy-key-file", str(key_file))
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith(f"applied {name} version 1 (sha256 ")
    assert "readable by other users" not in signed.stderr
    assert "signed)" in signed.stdout
    worker = Worker(redis_url, name, handlers, key=SECRET)
    try:
        client.xadd("pulse:stream:a", {"n": "e", "p": "a1"})
        wait_until(lambda: outputs(client) == [b"a1"], 20, "a1 forwarded")
        worker.wait_log("generation 1 running")
        write_config(tmp_path / "pub", name, streams="a, b")
        unsigned = cli("apply", str(config), "--redis-url", redis_url)
        assert unsigned.returncode == 0 and "version 2" in unsigned.stdout
        assert "version 1 was signed and version 2 is not" in unsigned.stderr
        worker.wait_log(f"deployment {name} version 2 refused: it is unsigned")
        refused = [line for line in worker.lines if "version 2 refused" in line]
        assert len(refused) == 1 and " ERROR " in refused[0]
        wait_until(
            lambda: (heartbeat(client, name).get("deployment_rejected") or {}).get("version") == 2,
            10,
            "heartbeat shows version 2 rejected",
        )
        status = cli("status", str(config), "--redis-url", redis_url)
        assert status.returncode == 0, status.stderr
        assert "config v1  (v2 rejected: it is unsigned" in status.stdout
        # The running generation is untouched: it still reads a, and only a.
        client.xadd("pulse:stream:b", {"n": "e", "p": "b1"})
        client.xadd("pulse:stream:a", {"n": "e", "p": "a2"})
        wait_until(lambda: outputs(client) == [b"a1", b"a2"], 20, "a2 forwarded")
        assert heartbeat(client, name)["generation"] == 1
        assert "unsigned and not verified" not in worker.text()  # it has a key
    finally:
        code = worker.stop()
        client.close()
        print(worker.text())
    assert code == 0
    for text in (signed.stdout, signed.stderr, worker.text(), worker.out, status.stdout):
        assert SECRET not in text


def test_a_worker_without_a_key_warns_once_that_versions_are_unsigned(
    tmp_path: Path, redis_url: str
) -> None:
    config = write_config(tmp_path, "sec5")
    worker = Worker(redis_url, "sec5", tmp_path)
    try:
        worker.wait_log("waiting for a config")
        assert cli("apply", str(config), "--redis-url", redis_url).returncode == 0
        worker.wait_log("generation 1 running")
    finally:
        assert worker.stop() == 0
    warnings = [line for line in worker.lines if "unsigned and not verified" in line]
    assert len(warnings) == 1 and " WARNING " in warnings[0], worker.text()


def test_a_key_file_that_cannot_be_read_is_a_usage_error(tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path, "sec6")
    missing = str(tmp_path / "nope.key")
    applied = cli("apply", str(config), "--redis-url", redis_url, "--deploy-key-file", missing)
    worker = cli(
        "run", "--deployment", "sec6", "--redis-url", redis_url, "--deploy-key-file", missing
    )
    for result in (applied, worker):
        assert result.returncode == 2
        assert "cannot read the deploy key file" in result.stderr


def test_apply_warns_about_standard_library_callables_a_worker_would_refuse(
    tmp_path: Path, redis_url: str
) -> None:
    config = write_config(tmp_path, "sec7")
    config.write_text(config.read_text().replace("dep_handlers:forward", "json:dumps"))
    warned = cli("apply", str(config), "--redis-url", redis_url)
    assert warned.returncode == 0, warned.stderr
    assert (
        f"{config}:13:14: sinks.fwd.handler: warning: module 'json' is from the standard library"
        in warned.stderr
    )
    write_config(tmp_path, "sec7", streams="a, b")
    config.write_text(config.read_text().replace("dep_handlers:forward", "json:dumps"))
    strict = cli("apply", str(config), "--strict", "--redis-url", redis_url)
    assert strict.returncode == 2 and "standard library" in strict.stderr


HOSTILE_SOURCE = "sources:\n  boom:\n    handler: os:getpid\n    stream: a\ndefaults:"


def test_a_worker_refuses_a_stdlib_source_unless_the_operator_allows_its_module(
    tmp_path: Path, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    config = write_config(tmp_path / "pub", "sec8")
    handlers = tmp_path / "worker"
    write_config(handlers, "unused")
    assert cli("apply", str(config), "--redis-url", redis_url).returncode == 0
    strict = Worker(redis_url, "sec8", handlers)
    try:
        strict.wait_log("generation 1 running")
        config.write_text(config.read_text().replace("defaults:", HOSTILE_SOURCE))
        assert cli("apply", str(config), "--redis-url", redis_url).returncode == 0
        strict.wait_log("version 2 is invalid here; version 1 keeps running")
        located = [line for line in strict.lines if "sources.boom.handler" in line]
        assert len(located) == 1 and " ERROR " in located[0]
        assert "dep.yaml:6:14: sources.boom.handler: module 'os' is outside" in located[0]
        wait_until(
            lambda: (
                (heartbeat(client, "sec8").get("deployment_rejected") or {}).get("version") == 2
            ),
            10,
            "heartbeat shows version 2 rejected",
        )
        status = cli("status", str(config), "--redis-url", redis_url)
        assert "(v2 rejected: invalid here: sources.boom.handler: module 'os'" in status.stdout
    finally:
        assert strict.stop() == 0
    # The operator's explicit choice: the same version runs (and the source is called).
    allowing = Worker(redis_url, "sec8", handlers, "--allow-module", "os")
    try:
        allowing.wait_log("source 'boom' returned a int")
        assert "outside the handlers folder" not in allowing.text()
    finally:
        allowing.stop()
        client.close()


def test_a_waiting_worker_shows_the_version_it_refused_before_any_ran(
    tmp_path: Path, redis_url: str
) -> None:
    name = "sec9"
    client = redis.Redis.from_url(redis_url)
    config = write_config(tmp_path, name)
    worker = Worker(redis_url, name, tmp_path, key=SECRET)
    try:
        worker.wait_log("waiting for a config")
        assert cli("apply", str(config), "--redis-url", redis_url).returncode == 0  # unsigned
        worker.wait_log(f"deployment {name} version 1 refused: it is unsigned")
        wait_until(
            lambda: (heartbeat(client, name).get("deployment_rejected") or {}).get("version") == 1,
            10,
            "the waiting worker's heartbeat shows version 1 rejected",
        )
        status = cli("status", str(config), "--redis-url", redis_url)
        assert "generation 0  config v0  (v1 rejected: it is unsigned" in status.stdout
        write_config(tmp_path, name, streams="a, b")
        assert cli("apply", str(config), "--redis-url", redis_url, key=SECRET).returncode == 0
        worker.wait_log("generation 1 running")
        wait_until(
            lambda: heartbeat(client, name).get("deployment_version") == 2,
            10,
            "heartbeat shows version 2 running",
        )
        assert heartbeat(client, name)["deployment_rejected"] is None
        assert len(client.hkeys(EngineKeys(name).workers())) == 1  # one entry, waiting then serving
    finally:
        assert worker.stop() == 0
        client.close()
