"""How many events an actor reads at once, so that it holds a bounded number of bytes.

``XREADGROUP COUNT`` bounds events, not bytes: a batch of 1 MB events read 128 at
a time holds hundreds of MB. The actor therefore sizes each read from the size
of the entries it has seen: the largest of the last read counts at once, and an
estimate decays by half per read once entries shrink. Before the first read,
the newest entry of each input stream is measured, so a stream of large events
is read in small reads from the start. An actor holds at most two reads (one
being handled, one being committed), so a read gets half of ``max_batch_bytes``.
A jump in entry size is seen one read late: that read may overshoot once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

from topology.streams import Event

__all__ = ["ReadSizer"]

#: Bytes an entry costs beside its payload (id, name, topic, object headers).
ENTRY_OVERHEAD = 128


class ReadSizer:
    """Events per read for ``max_bytes`` in hand, at most ``most``."""

    def __init__(self, max_bytes: int, most: int) -> None:
        self.budget = max(1, max_bytes // 2)
        self.most = most
        #: Bytes one entry is expected to take (0: not known yet).
        self.entry = 0

    def count(self) -> int:
        if self.entry <= 0:
            return self.most
        return max(1, min(self.most, self.budget // self.entry))

    def measure(self, events: Sequence[Event]) -> None:
        if events:
            biggest = max(len(event.payload) for event in events) + ENTRY_OVERHEAD
            self.entry = max(biggest, self.entry // 2)

    async def sample(self, redis: Any, keys: Iterable[str]) -> None:
        """Measure the newest entry of each stream (best effort: a failure leaves it unknown)."""
        for key in keys:
            with contextlib.suppress(Exception):
                for _, fields in await redis.xrevrange(key, count=1):
                    size = sum(len(k) + len(v) for k, v in fields.items()) + ENTRY_OVERHEAD
                    self.entry = max(self.entry, size)
