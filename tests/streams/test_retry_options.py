"""The pieces declared once: the backoff, the retryable errors, the options' checks."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from redis.exceptions import ClusterDownError, ResponseError, TryAgainError

from topology.streams import RETRYABLE_ERRORS, Backoff, ReaderOptions, SinkOptions, pause


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_reset() -> None:
    backoff = Backoff(0.1, 0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff.failures == 5
    backoff.reset()
    assert (backoff.failures, backoff.next()) == (0, 0.1)


def test_a_jittered_backoff_stays_in_the_upper_half_of_each_delay() -> None:
    backoff = Backoff(1.0, 4.0, jitter=True)
    for expected in (1.0, 2.0, 4.0, 4.0):
        assert expected / 2 <= backoff.next() <= expected


async def test_pause_ends_early_when_woken() -> None:
    wake = asyncio.Event()
    asyncio.get_running_loop().call_soon(wake.set)
    started = time.monotonic()
    await pause(30.0, wake)
    assert time.monotonic() - started < 10  # woken, not the 30 s delay


def test_a_cluster_failing_over_is_retryable_and_a_plain_error_reply_is_not() -> None:
    assert isinstance(ClusterDownError("CLUSTERDOWN"), RETRYABLE_ERRORS)
    assert isinstance(TryAgainError("TRYAGAIN"), RETRYABLE_ERRORS)
    assert not isinstance(ResponseError("WRONGTYPE"), RETRYABLE_ERRORS)


def test_options_are_frozen_and_checked_where_they_are_made() -> None:
    options = SinkOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.count = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="ack_grace"):
        SinkOptions(ack_grace=0)
    with pytest.raises(ValueError, match="count"):
        ReaderOptions(count=0)
    with pytest.raises(ValueError, match="block"):
        SinkOptions(block=0)
    assert isinstance(options, ReaderOptions)  # a sink reads like a reader, and more
