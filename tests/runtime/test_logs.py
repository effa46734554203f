"""Log output: text or JSON lines, and no password ever printed."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from topology.runtime.logs import SUMMARY_LOGGER, bind_fields, event_fields, setup_logging


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    yield buffer
    setup_logging("text")  # leave a handler on stderr, not on a dead buffer


def test_json_lines_carry_extras_and_no_password(out: io.StringIO) -> None:
    setup_logging("json", stream=out)
    logging.getLogger("topology.test").info(
        "connected to %s", "redis://app:hunter2@db:6379/0", extra={"sink": "enrich"}
    )
    line = json.loads(out.getvalue().strip())
    assert line["msg"] == "connected to redis://app:***@db:6379/0"
    assert line["sink"] == "enrich" and line["level"] == "info"
    assert "hunter2" not in out.getvalue()


def test_text_redacts_messages_from_any_logger_and_tracebacks(out: io.StringIO) -> None:
    setup_logging("text", stream=out)
    try:
        raise ConnectionError("cannot reach rediss://:hunter2@db:6380")
    except ConnectionError:
        logging.getLogger("redis.somewhere").exception("url=%s", "redis://u:hunter2@h/0")
    text = out.getvalue()
    assert "hunter2" not in text
    assert "redis://u:***@h/0" in text and "rediss://:***@db:6380" in text


def test_quiet_drops_the_summary_but_keeps_lifecycle(out: io.StringIO) -> None:
    setup_logging("text", quiet=True, stream=out)
    logging.getLogger(SUMMARY_LOGGER).info("throughput 100/s")
    logging.getLogger("topology.runtime").info("actor started")
    assert "throughput" not in out.getvalue() and "actor started" in out.getvalue()


def test_verbose_shows_engine_debug(out: io.StringIO) -> None:
    setup_logging("text", verbose=True, stream=out)
    logging.getLogger("topology.runtime").debug("details")
    assert "details" in out.getvalue()


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        setup_logging("xml")


def test_default_handler_follows_the_current_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("text")
    logging.getLogger("topology.test").warning("to %s", "redis://:pw1@h")
    err = capsys.readouterr().err
    assert "redis://:***@h" in err and "pw1" not in err


def test_json_lines_carry_bound_and_per_event_fields(out: io.StringIO) -> None:
    class _Event:
        stream_name = "orders"
        id = "1-0"

    setup_logging("json", stream=out)

    async def actor() -> None:
        bind_fields(sink="enrich")  # a task's own binding: not seen outside it
        logging.getLogger("topology.runtime").warning(
            "failed", extra=event_fields("enrich", _Event())
        )
        logging.getLogger("topology.runtime").info("started")

    async def main() -> None:
        bind_fields(worker="w-1")
        await asyncio.create_task(actor())
        logging.getLogger("topology.run").info("stopped")

    asyncio.run(main())
    keys = ("msg", "sink", "stream", "event_id", "worker")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [{k: line.get(k) for k in keys} for line in lines] == [
        {"msg": "failed", "sink": "enrich", "stream": "orders", "event_id": "1-0", "worker": "w-1"},
        {"msg": "started", "sink": "enrich", "stream": None, "event_id": None, "worker": "w-1"},
        {"msg": "stopped", "sink": None, "stream": None, "event_id": None, "worker": "w-1"},
    ]
