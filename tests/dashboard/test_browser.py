"""The dashboard in a real headless Chromium, against topologies running in subprocesses."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.dashboard._helpers import start, write_config
from topology.server import ServerProcess

#: What the page shows within this many seconds, or the test fails.
PAGE_TIMEOUT = 60.0

# The SVG ids mermaid gives the nodes and subgraphs of a diagram, as a list.
NODE_IDS = """
return Array.from(document.querySelectorAll('#graph svg g.node, #graph svg g.cluster'))
    .map((e) => e.id);
"""


def until(browser: Any, what: str, check: Callable[[Any], Any]) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(browser, PAGE_TIMEOUT, poll_frequency=0.1).until(check)
    except TimeoutException:
        body = browser.execute_script("return document.body.innerText")
        raise AssertionError(f"the page never showed {what}; it shows:\n{body}") from None


def drawn(browser: Any, mermaid_id: str) -> bool:
    """True when the diagram on the page has a node or subgraph for ``mermaid_id``."""
    ids = browser.execute_script(NODE_IDS)
    return any(i.endswith(f"-{mermaid_id}") or f"-flowchart-{mermaid_id}-" in i for i in ids)


def graph_text(browser: Any) -> str:
    return str(browser.execute_script("return document.querySelector('#graph').textContent"))


def cell(browser: Any, table: str, row: str, column: str) -> str:
    """The text of a figure in one of the page's tables (``row``: a sink or stream name)."""
    key = "sink" if table == "sinks" else "stream"
    script = (
        f"const r = document.querySelector('#{table} tr[data-{key}=\"' + arguments[0] + '\"]');"
        f"return r ? r.querySelector('td.{column}').textContent : null;"
    )
    return str(browser.execute_script(script, row))


def add(url: str, stream: str, payloads: list[str]) -> None:
    client = redis.Redis.from_url(url)
    try:
        for payload in payloads:
            client.xadd(f"pulse:stream:{stream}", {"n": "e", "p": payload})
    finally:
        client.close()


def test_a_worker_serves_the_live_picture(
    browser: Any,
    redis_url: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    config = write_config(tmp_path, "webrun")
    run_args = ["run", str(config), "--redis-url", redis_url, "--ui-port", "0", "--quiet"]
    proc, url = start(run_args, tmp_path / "run.log")
    processes.append(proc)
    browser.get(url)

    # The graph renders: an SVG with a node per stream and per sink.
    for node in ("stream_in", "stream_out", "stream_dlq", "sink_work"):
        until(browser, f"the node {node}", lambda b, node=node: drawn(b, node))
    assert browser.find_element("id", "state").text == "live"
    assert cell(browser, "sinks", "work", "handled") == "0"

    # The numbers change as events flow: the sink's count, the stream's length, the labels.
    add(redis_url, "in", [f"ok {i}" for i in range(20)])
    until(browser, "20 events handled", lambda b: cell(b, "sinks", "work", "handled") == "20")
    until(browser, "the length of in", lambda b: cell(b, "streams", "in", "length") == "20")
    until(browser, "length 20 in the diagram", lambda b: "length 20" in graph_text(b))

    # A dead letter appears in the figures: the sink's row and the diagram.
    assert cell(browser, "sinks", "work", "dead") == "0"
    add(redis_url, "in", ["fail"])
    until(browser, "one dead letter", lambda b: cell(b, "sinks", "work", "dead") == "1")
    until(browser, "the dead letter in the diagram", lambda b: "dead letters 1" in graph_text(b))
    # The failure counts travel in the worker's heartbeat: a beat later.
    until(browser, "two failed attempts", lambda b: cell(b, "sinks", "work", "failed") == "2")

    # A reload that adds a sink adds it to the picture.
    assert not drawn(browser, "sink_audit")
    write_config(tmp_path, "webrun", audit=True)
    until(browser, "the added sink", lambda b: drawn(b, "sink_audit"))
    until(browser, "the reload", lambda b: "generation 2" in b.find_element("id", "reloads").text)


def test_the_dashboard_says_when_redis_is_gone_and_recovers(
    browser: Any,
    fresh_server: ServerProcess,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    config = write_config(tmp_path, "webdash")
    args = ["dashboard", str(config), "--redis-url", fresh_server.url, "--port", "0"]
    proc, url = start(args, tmp_path / "dashboard.log")
    processes.append(proc)
    browser.get(url)
    until(browser, "the work sink", lambda b: drawn(b, "sink_work"))
    until(browser, "the live state", lambda b: b.find_element("id", "state").text == "live")

    fresh_server.stop()
    until(
        browser,
        "Redis unreachable",
        lambda b: "Redis unreachable" in b.find_element("id", "state").text,
    )
    assert "Redis unreachable" in browser.find_element("id", "banner").text
    assert drawn(browser, "sink_work")  # the last picture stays

    fresh_server.start()
    until(browser, "the recovery", lambda b: b.find_element("id", "state").text == "live")
    assert not browser.find_element("id", "banner").is_displayed()

    # Without any worker, the page follows the file: an added sink is drawn.
    write_config(tmp_path, "webdash", audit=True)
    until(browser, "the added sink", lambda b: drawn(b, "sink_audit"))
