"""The actor loop's wake-ups: a retry queued from a settled chunk always wakes the loop."""

from __future__ import annotations

import asyncio
import time

from topology.runtime.pipeline import Chunk, InHand
from topology.runtime.retry import Retry, RetryQueue
from topology.streams import Event


def _event(n: int) -> Event:
    return Event(f"1-{n}", "e", b"{}", stream_name="s")


async def test_a_retry_queued_after_the_loop_chose_its_wait_still_wakes_it() -> None:
    """The handler thread settles a chunk with a retry while the loop is busy; the loop,
    with no read in flight, then waits for progress: the requeue must end that wait (a
    stalled actor otherwise: no read, no retry, ever)."""
    in_hand = InHand(RetryQueue())
    first, second = _event(1), _event(2)
    in_hand.handed(2)
    chunk = Chunk([first, second])
    chunk.retries = [Retry(time.monotonic() + 0.01, first, 1)]
    loop = asyncio.get_running_loop()
    in_hand.settle(chunk, loop.call_soon)  # as from the thread: the requeue runs on the loop later
    waits = in_hand.waits(None, False)  # the loop plans its wait before the requeue ran
    assert waits
    done, _ = await asyncio.wait(waits, timeout=2.0)
    assert done, "the requeued retry never woke the loop"
    assert len(in_hand.retries) == 1 and in_hand.in_lanes == 0
