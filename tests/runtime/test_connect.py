"""Redis URL resolution, redaction and connection (ACL, unix socket, embedded)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.helpers import wait_for
from topology.config.model import RedisSpec, Topology
from topology.runtime.connect import (
    RedisUnavailableError,
    client_from_url,
    open_redis,
    redact,
    redact_text,
    resolve_url,
)
from topology.server import ServerProcess, free_port


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://alice:s3cret@db.example:6379/0", "redis://alice:***@db.example:6379/0"),
        ("rediss://:s3cret@db.example:6380", "rediss://:***@db.example:6380"),
        ("redis://db.example:6379/0", "redis://db.example:6379/0"),
        ("redis://alice@db.example/0", "redis://alice@db.example/0"),
        ("unix:///tmp/x.sock?db=0&password=s3cret", "unix:///tmp/x.sock?db=0&password=***"),
        ("redis://u:p%40ss@h:1/0", "redis://u:***@h:1/0"),
    ],
)
def test_redact_masks_the_password_only(url: str, expected: str) -> None:
    assert redact(url) == expected


def test_redact_text_masks_every_url_in_free_text() -> None:
    text = "a redis://u:one@h1:1/0 then rediss://:two@h2 and password=three&x=1"
    out = redact_text(text)
    for secret in ("one", "two", "three"):
        assert secret not in out
    assert "redis://u:***@h1:1/0" in out and "rediss://:***@h2" in out


def test_resolve_url_prefers_cli_then_env_then_config(monkeypatch: pytest.MonkeyPatch) -> None:
    topo = Topology(name="t", redis=RedisSpec(url="redis://config:1/0"))
    monkeypatch.setenv("REDIS_URL", "redis://env:1/0")
    assert resolve_url("redis://cli:1/0", topo) == "redis://cli:1/0"
    assert resolve_url(None, topo) == "redis://env:1/0"
    assert resolve_url("", topo) is None  # an explicit empty flag forces the embedded server
    monkeypatch.setenv("REDIS_URL", "")
    assert resolve_url(None, topo) is None
    monkeypatch.delenv("REDIS_URL")
    assert resolve_url(None, topo) == "redis://config:1/0"
    assert resolve_url(None, Topology(name="t")) is None
    assert resolve_url(None, None) is None


def test_client_from_url_keeps_bytes_and_tls_options() -> None:
    client = client_from_url(
        "rediss://u:p@h:6380/2?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem"
    )
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["decode_responses"] is False
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["username"] == "u" and kwargs["db"] == 2
    connection = client.connection_pool.make_connection()
    # Every command has a deadline (redis.timeout); blocking reads use links of their own.
    assert connection.socket_timeout == 10.0
    assert connection.socket_connect_timeout == 10.0


def test_url_query_options_win_over_the_defaults() -> None:
    client = client_from_url("redis://h:1/0?socket_timeout=60")
    assert client.connection_pool.make_connection().socket_timeout == 60


def test_client_from_url_rejects_unknown_schemes_without_leaking() -> None:
    with pytest.raises(RedisUnavailableError) as info:
        client_from_url("http://u:s3cret@h:1")
    assert "s3cret" not in str(info.value) and "--redis-url" in str(info.value)


async def test_acl_user_from_url_connects(redis_url: str, r: aioredis.Redis) -> None:
    await r.execute_command("ACL", "SETUSER", "alice", "on", ">s3cret", "~*", "&*", "+@all")
    try:
        url = redis_url.replace("redis://", "redis://alice:s3cret@")
        async with open_redis(Topology(name="t"), cli_url=url) as connected:
            assert await connected.client.execute_command("ACL", "WHOAMI") == b"alice"
            assert connected.url_redacted == redis_url.replace("redis://", "redis://alice:***@")
            assert connected.server is None
    finally:
        await r.execute_command("ACL", "DELUSER", "alice")


async def test_wrong_password_error_names_redacted_url(redis_url: str, r: aioredis.Redis) -> None:
    await r.execute_command("ACL", "SETUSER", "bob", "on", ">right", "~*", "+@all")
    try:
        url = redis_url.replace("redis://", "redis://bob:wrong-pw@")
        with pytest.raises(RedisUnavailableError) as info:
            async with open_redis(Topology(name="t"), cli_url=url):
                pass
        message = str(info.value)
        assert "wrong-pw" not in message
        assert "bob:***@" in message and "--redis-url" in message
    finally:
        await r.execute_command("ACL", "DELUSER", "bob")


async def test_unreachable_url_error_is_clear_and_redacted() -> None:
    url = f"redis://admin:topsecret@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailableError) as info:
        async with open_redis(Topology(name="t"), cli_url=url):
            pass
    message = str(info.value)
    assert "topsecret" not in message
    assert f"redis://admin:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in message
    assert "--redis-url" in message


async def test_unix_socket_url_connects(server_binary: str, tmp_path: Path) -> None:
    sock = tmp_path / "r.sock"
    with ServerProcess(tmp_path / "srv", port=0, unixsocket=sock, binary=server_binary):
        client = client_from_url(f"unix://{sock}")
        try:
            assert await client.ping()
        finally:
            await client.aclose()


async def test_no_url_starts_then_reuses_the_embedded_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    topo = Topology(name="t", path=tmp_path / "pipeline.yaml")
    async with open_redis(topo, owner=True) as first:
        assert first.server is not None
        assert (tmp_path / ".ponos-data" / "server.json").exists()
        await first.client.set("k", "v")
        async with open_redis(topo) as second:  # emit/tail/status beside a running `run`
            assert second.server is None
            assert await second.client.get("k") == b"v"
        assert await first.client.ping()  # the reuser did not stop it
    assert not (tmp_path / ".ponos-data" / "server.json").exists()


async def test_run_refuses_a_server_that_a_short_command_owns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    topo = Topology(name="t", path=tmp_path / "pipeline.yaml")
    async with open_redis(topo, owner=False) as tail:
        assert tail.server is not None
        with pytest.raises(RedisUnavailableError, match="--redis-url"):
            async with open_redis(topo, owner=True):
                pass


async def test_a_start_while_redis_loads_its_data_waits_for_it(
    server_binary: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker started while the server answers LOADING waits instead of exiting."""
    server = ServerProcess(
        tmp_path / "loading",
        binary=server_binary,
        extra_args=(
            "--key-load-delay",  # a slow load, answering LOADING meanwhile
            "100",
            "--loading-process-events-interval-bytes",
            "1024",
        ),
    )
    server.start()
    try:
        client = aioredis.Redis.from_url(server.url)
        pipe = client.pipeline(transaction=False)
        for i in range(20_000):
            pipe.set(f"k{i}", "v")
        await pipe.execute()
        await client.save()  # a dump.rdb that the restart loads slowly
        await client.aclose()
        server.stop()
        # Start it without waiting for the data set (ServerProcess.start waits for PONG).
        server.process = subprocess.Popen(
            server.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )

        async def loading() -> bool:
            probe = aioredis.Redis.from_url(server.url)
            try:
                await probe.ping()
            except BusyLoadingError:
                return True
            except (RedisConnectionError, OSError):
                return False
            finally:
                await probe.aclose()
            raise AssertionError("the server answered before loading: nothing to test")

        await wait_for(loading, what="the server loading its data")
        caplog.set_level(logging.WARNING, "topology")
        async with open_redis(Topology(name="t"), cli_url=server.url) as connected:
            assert await connected.client.dbsize() == 20_000
        assert any("loading its data" in rec.getMessage() for rec in caplog.records)
    finally:
        server.stop()
