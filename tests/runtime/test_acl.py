"""The README's least-privilege Redis users are enough, and no more than enough.

The users are created from the README's own block (so the documentation cannot
drift from what runs), on a server of the test's own: the example pipeline
runs as the worker user, then a ``run --deployment`` worker follows a version
``apply`` published as the deployer user. Every command either sent is allowed
(``ACL LOG`` stays empty); admin commands, and each user's writes outside its
part, are refused.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.runtime.test_deployment import Worker, cli
from topology.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"WORKER_PASSWORD": "w-7d1e9c", "DEPLOYER_PASSWORD": "d-4a2f08"}
#: What the example pipeline's handlers count: 2000 orders, 4 of them dead-lettered.
HANDLED = "handled: enrich_eu 1000, enrich_us 996, flag_large 198, report 2194, dead_letters 4"


def readme_acl_commands() -> list[list[str]]:
    """The ``ACL SETUSER`` commands of the README's ACL block, as argument lists."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- acl:begin -->\s*```sh\n(.*?)```", text, re.S)
    assert block is not None, "README lost its ACL block"
    joined = re.sub(r"\\\n", " ", block.group(1))
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line)
        if not words:
            continue
        assert words[0] == "redis-cli", line
        commands.append(words[1:])
    return commands


def _with_passwords(words: list[str]) -> list[str]:
    return [
        ">" + PASSWORDS[w[1:]] if w.startswith(">") and w[1:] in PASSWORDS else w for w in words
    ]


@pytest.fixture
def acl_server(server_binary: str, tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "redis", binary=server_binary)
    server.start()
    admin = redis.Redis.from_url(server.url)
    try:
        for command in readme_acl_commands():
            admin.execute_command(*_with_passwords(command))
        admin.execute_command("ACL", "LOG", "RESET")
    finally:
        admin.close()
    yield server
    server.stop()


def _url(server: ServerProcess, user: str) -> str:
    password = PASSWORDS[f"{user.split('-')[1].upper()}_PASSWORD"]
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def _denied(admin: redis.Redis) -> list[str]:
    return [str(entry) for entry in admin.execute_command("ACL", "LOG")]


def test_the_example_pipeline_and_a_deployment_run_as_the_readme_acl_users(
    acl_server: ServerProcess,
) -> None:
    admin = redis.Redis.from_url(acl_server.url)
    worker_url, deployer_url = _url(acl_server, "ponos-worker"), _url(acl_server, "ponos-deployer")
    try:
        config = str(ROOT / "configs" / "pipeline.yaml")
        ran = cli("run", config, "--redis-url", worker_url, "--stop-when-idle", "1", "--quiet")
        assert ran.returncode == 0, ran.stderr
        assert HANDLED in ran.stdout
        assert "NOPERM" not in ran.stderr and _denied(admin) == []

        admin.flushall()  # the generator source ran to its end: start the deployment afresh
        applied = cli("apply", config, "--redis-url", deployer_url)
        assert applied.returncode == 0, applied.stderr
        worker = Worker(worker_url, "orders", ROOT / "configs", "--stop-when-idle", "1")
        try:
            assert worker.proc.wait(120) == 0, worker.text()
        finally:
            worker.stop()
        assert HANDLED in worker.out, worker.text()
        assert "NOPERM" not in worker.text() and _denied(admin) == []
        listed = cli("history", "orders", "--redis-url", deployer_url)
        assert listed.returncode == 0 and "pipeline.yaml" in listed.stdout, listed.stderr
    finally:
        admin.close()


@pytest.mark.parametrize(
    ("user", "command"),
    [
        ("ponos-worker", ("FLUSHALL",)),
        ("ponos-worker", ("CONFIG", "GET", "requirepass")),
        ("ponos-worker", ("KEYS", "*")),
        ("ponos-worker", ("HSET", "ponos:{orders}:config", "text", "x")),  # cannot publish
        ("ponos-worker", ("XADD", "other:stream:x", "*", "n", "e")),  # only its stream prefix
        ("ponos-deployer", ("FLUSHALL",)),
        ("ponos-deployer", ("CONFIG", "SET", "appendonly", "no")),
        ("ponos-deployer", ("XADD", "pulse:stream:orders", "*", "n", "e")),  # no streams
        ("ponos-deployer", ("DEL", "ponos:{orders}:workers")),
    ],
)
def test_the_readme_acl_users_are_refused_everything_else(
    acl_server: ServerProcess, user: str, command: tuple[str, ...]
) -> None:
    client = redis.Redis.from_url(_url(acl_server, user))
    try:
        assert client.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    finally:
        client.close()
