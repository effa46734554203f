"""The handler contract (DESIGN §3): what a handler may return, and how it is called."""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from topology import Emit, Event
from topology.runtime.handlers import ContractError, Failure, route_result, runner_for


def ev(i: int = 0) -> Event:
    return Event(f"1-{i}", "e", str(i).encode(), stream_name="in")


def fields(result: Any, outputs: tuple[str, ...] = ("out",)) -> list[tuple[str, list[Any]]]:
    return [(a.stream, list(a.fields)) for a in route_result(result, outputs)]


def test_none_forwards_nothing() -> None:
    assert route_result(None, ("out",)) == []


def test_a_single_emit_goes_to_the_only_output() -> None:
    assert fields(Emit("x", b"p")) == [("out", ["n", "x", "p", b"p"])]


def test_payloads_are_encoded_like_the_streams_library() -> None:
    assert fields(Emit("x", {"a": 1}, topic="t")) == [
        ("out", ["n", "x", "p", b'{"a":1}', "t", "t"])
    ]
    assert fields(Emit("x", "é")) == [("out", ["n", "x", "p", "é".encode()])]


def test_lists_and_generators_of_emits_are_accepted() -> None:
    outputs = ("a", "b")
    assert [s for s, _ in fields([Emit("x", stream="a"), Emit("y", stream="b")], outputs)] == [
        "a",
        "b",
    ]
    assert len(fields(Emit("x") for _ in range(3))) == 3


def test_emit_without_stream_is_an_error_when_the_sink_has_several_outputs() -> None:
    with pytest.raises(ContractError, match="name one of"):
        route_result(Emit("x"), ("a", "b"))


def test_emit_to_an_undeclared_stream_is_an_error() -> None:
    with pytest.raises(ContractError, match="not an output"):
        route_result(Emit("x", stream="elsewhere"), ("out",))


@pytest.mark.parametrize(
    "bad", ["text", b"bytes", {"a": 1}, 42, [Emit("x"), "no"], Emit("x", {1, 2})]
)
def test_anything_but_emits_is_an_error(bad: Any) -> None:
    with pytest.raises(ContractError):
        route_result(bad, ("out",))


async def test_a_sync_handler_runs_the_batch_off_the_event_loop_in_one_job() -> None:
    threads = set()
    loop_thread = threading.get_ident()

    def handler(event: Event) -> Emit:
        threads.add(threading.get_ident())
        return Emit("x", event.payload)

    with ThreadPoolExecutor(8) as pool:
        runner = runner_for(handler, ("out",), executor=pool)
        results = await runner.run([ev(i) for i in range(50)])
    assert len(results) == 50 and not any(isinstance(r, Failure) for r in results)
    assert len(threads) == 1 and loop_thread not in threads  # one job for the whole batch


async def test_a_sync_callable_returning_a_coroutine_is_awaited() -> None:
    async def handler(event: Event, suffix: str) -> Emit:
        return Emit("x", event.payload + suffix.encode())

    runner = runner_for(functools.partial(handler, suffix="!"), ("out",))
    (result,) = await runner.run([ev(1)])
    assert result[0].fields[3] == b"1!"


async def test_async_handlers_run_concurrently_up_to_the_bound() -> None:
    running = 0
    peak = 0

    async def handler(event: Event) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    runner = runner_for(handler, ("out",), concurrency=8)
    await runner.run([ev(i) for i in range(40)])
    assert peak == 8


async def test_failures_are_per_event_and_contract_errors_are_not_retryable() -> None:
    def handler(event: Event) -> Any:
        if event.payload == b"1":
            raise KeyError("boom")
        if event.payload == b"2":
            return "not an emit"
        return None

    results = await runner_for(handler, ("out",)).run([ev(0), ev(1), ev(2)])
    assert results[0] == []
    assert isinstance(results[1], Failure) and results[1].retryable
    assert results[1].error_type == "KeyError"
    assert isinstance(results[2], Failure) and not results[2].retryable


async def test_a_handler_calling_sys_exit_fails_that_event_only() -> None:
    import sys

    def handler(event: Event) -> None:
        if event.payload == b"0":
            sys.exit(3)

    results = await runner_for(handler, ("out",)).run([ev(0), ev(1)])
    assert isinstance(results[0], Failure) and results[0].error_type == "SystemExit"
    assert results[1] == []
