"""The per-actor handler thread: the default hop of sync handlers off the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from tests.helpers import wait_for
from topology import Emit, Event
from topology.runtime.handlers import HandlerThread, runner_for


def ev(i: int) -> Event:
    return Event(f"1-{i}", "e", str(i).encode(), stream_name="in")


async def test_jobs_run_off_the_loop_in_submission_order() -> None:
    worker = HandlerThread()
    seen: list[tuple[int, str]] = []

    def job(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        return i * 10

    futures = [worker.submit(job, i) for i in range(20)]
    assert await asyncio.gather(*futures) == [i * 10 for i in range(20)]
    assert [i for i, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"ponos-handler"}
    assert threading.current_thread().name not in {name for _, name in seen}
    assert worker.started == 1  # one long-lived thread, not one per job


async def test_an_exception_in_a_job_reaches_the_awaiting_task() -> None:
    worker = HandlerThread()

    def boom() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        await worker.submit(boom)
    assert await worker.submit(lambda: 5) == 5  # the thread survived it


async def test_a_blocked_handler_stalls_neither_the_loop_nor_another_actor() -> None:
    release = threading.Event()

    def stuck(event: Event) -> Emit:
        release.wait(10)
        return Emit("late", event.payload)

    slow = runner_for(stuck, ("out",))
    fast = runner_for(lambda e: Emit("quick", e.payload), ("out",))
    slow_run = asyncio.ensure_future(slow.run([ev(1)]))
    try:
        started = time.monotonic()
        outcomes = await asyncio.wait_for(fast.run([ev(2)]), 5)
        assert time.monotonic() - started < 2  # not behind the stuck handler
        assert outcomes[0][0].fields[1] == "quick"
        assert not slow_run.done()
    finally:
        release.set()
    assert (await slow_run)[0][0].fields[1] == "late"


async def test_an_idle_thread_ends_and_the_next_job_starts_a_new_one() -> None:
    worker = HandlerThread(idle_exit=0.05)
    assert await worker.submit(lambda: 1) == 1
    await wait_for(lambda: not worker.alive, 5, "the idle thread to end")
    assert await worker.submit(lambda: 2) == 2
    assert worker.started == 2


async def test_a_job_cancelled_before_it_starts_is_skipped() -> None:
    worker = HandlerThread()
    gate = threading.Event()
    ran: list[str] = []

    def first() -> None:
        gate.wait(10)
        ran.append("first")

    def second() -> None:
        ran.append("second")

    blocker = worker.submit(first)
    skipped = worker.submit(second)
    skipped.cancel()
    gate.set()
    await blocker
    assert await worker.submit(lambda: "third") == "third"  # runs after the skipped one
    assert ran == ["first"]


async def test_an_explicit_executor_is_still_used() -> None:
    from concurrent.futures import ThreadPoolExecutor

    names: list[str] = []

    def handler(event: Event) -> Any:
        names.append(threading.current_thread().name)

    with ThreadPoolExecutor(1, thread_name_prefix="given") as pool:
        await runner_for(handler, ("out",), executor=pool).run([ev(1)])
    assert names and names[0].startswith("given")


async def test_no_job_is_stranded_when_it_arrives_as_the_idle_thread_ends() -> None:
    """Jobs submitted right around the idle exit (1 ms here) all run: the thread either
    sees them before it ends or the submitter sees it gone and starts a new one."""
    worker = HandlerThread(idle_exit=0.001)
    for i in range(300):
        assert await asyncio.wait_for(worker.submit(lambda i=i: i), 5) == i
        if i % 50 == 49:
            # Now and then the thread surely ends first: on a loaded machine the
            # submissions below may never land on the exit window by themselves.
            await wait_for(lambda: not worker.alive, what="the idle thread ended")
        elif i % 3 == 0:
            time.sleep(0.001)  # land some submissions on the exit window itself
    assert worker.started > 1  # the thread did end and restart along the way


async def test_a_posted_job_that_raises_is_logged_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = HandlerThread()

    def boom() -> None:
        raise RuntimeError("posted and failed")

    worker.post(boom)
    assert await worker.submit(lambda: "still here") == "still here"
    assert "posted and failed" in caplog.text
