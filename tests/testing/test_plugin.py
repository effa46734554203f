"""topology.testing for pytest users: the context manager and the ``ponos_topology`` fixture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from topology.server import ServerProcess
from topology.testing import IdleTimeout, StateUnavailable, run_topology

ROOT = Path(__file__).resolve().parents[2]
SHOP = Path(__file__).with_name("shop") / "shop.yaml"
PIPELINE = ROOT / "configs" / "pipeline.yaml"


async def test_the_context_manager_runs_the_real_topology_on_its_own_server() -> None:
    given = {"orders": [{"name": "order.created", "payload": {"id": 1, "qty": 3, "price": 2}}]}
    async with run_topology(SHOP, given=given) as t:
        await t.wait_idle(10)
        [priced] = await t.events("priced")
        assert (priced.name, priced.topic, priced.json()["total"]) == ("order.priced", "small", 6)
        await t.add("orders", "order.created", {"id": 2, "qty": -1, "price": 2})
        await t.wait_idle(10)
        [dead] = await t.events("dlq")
        assert dead.json() == {"id": 2, "qty": -1, "price": 2}
        assert dead.fields  # the engine's error, sink and attempt count ride along
        try:
            await t.state("price")
        except StateUnavailable as exc:
            assert str(exc) == "this topology has no stateful sink 'price'"
        else:
            raise AssertionError("price has no state")


async def test_wait_idle_raises_naming_what_is_pending(redis_server: ServerProcess) -> None:
    async with run_topology(SHOP, redis_url=redis_server.url) as t:
        await t.add("slow", "job", {})
        try:
            await t.wait_idle(0.3)
        except IdleTimeout as exc:
            assert "sink stuck: 1 event(s) of stream slow pending" in exc.busy
        else:
            raise AssertionError("the stuck sink never settles")


def test_the_plugin_is_declared_as_a_pytest11_entry_point() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.entry-points.pytest11]\n", 1)[1].split("\n[", 1)[0]
    assert section.strip() == 'ponos_topology = "topology.testing.plugin"'


def test_the_fixture_in_a_users_test_suite(tmp_path: Path) -> None:
    """A user's suite: the fixture passes right tests (async and sync) and fails a wrong one.

    Warnings are errors there: a block leaves no socket, task or thread behind.
    """
    (tmp_path / "test_user.py").write_text(
        f"""
import pytest

CONFIG = {str(PIPELINE)!r}


async def test_enriched(ponos_topology):
    async with ponos_topology(CONFIG) as t:
        await t.add("orders", "order.created",
                    {{"id": 1, "region": "eu", "place": "fr", "amount": 10}}, topic="eu.orders")
        await t.wait_idle()
        [event] = await t.events("enriched")
        assert event.json()["total"] == 12.0


async def test_clean_between_tests(ponos_topology):
    async with ponos_topology(CONFIG) as t:
        assert await t.events("enriched") == []


def test_sync(ponos_topology):
    with ponos_topology(CONFIG, given={{"orders": [
        {{"name": "order.created", "topic": "eu.orders",
          "payload": {{"id": 3, "region": "eu", "place": "de", "amount": 950}}}}]}}) as t:
        t.wait_idle()
        [alert] = t.events("alerts")
        assert alert.json() == {{"id": 3, "amount": 950}}
        t.add("orders", "order.created",
              {{"id": 4, "region": "us", "place": "tx", "amount": 1}}, topic="us.orders")
        t.wait_idle()
        assert len(t.events("enriched")) == 2


async def test_wrong(ponos_topology):
    async with ponos_topology(CONFIG, given={{"orders": [
        {{"name": "order.created", "topic": "us.orders",
          "payload": {{"id": 2, "region": "us", "place": "ny", "amount": 100}}}}]}}) as t:
        await t.wait_idle()
        [event] = await t.events("enriched")
        assert event.json()["total"] == 1
"""
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "topology.testing.plugin",
            "-p", "pytest_asyncio.plugin", "-o", "asyncio_mode=auto", "-p", "no:cacheprovider",
            "-o", "asyncio_default_fixture_loop_scope=function", "-W", "error",
            "--rootdir", str(tmp_path), str(tmp_path),
        ],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("1 failed, 3 passed")
    assert "test_user.py::test_wrong" in proc.stdout
    assert "assert 108.0 == 1" in proc.stdout


def test_loading_the_plugin_does_not_import_the_engine() -> None:
    """Every pytest run of an environment with the package loads the plugin."""
    code = (
        "import sys, topology.testing.plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith(('topology.runtime', "
        "'topology.config', 'topology.testing._'))))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert proc.stdout.strip() == "[]"
