"""How long to wait after the n-th failure in a row of a step that talks to Redis."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Capped doubling delays (``first``, ``2 * first``, ... up to ``cap``).

    ``jitter`` draws each delay from its upper half, so clients that lost the
    server together do not all come back at the same instant.
    """

    def __init__(self, first: float, cap: float, *, jitter: bool = False) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.failures = 0  # in a row, since the last reset

    def next(self) -> float:
        """Count one more failure; the delay before the next try."""
        delay = min(self.cap, self.first * 2**self.failures)
        self.failures += 1
        return delay * random.uniform(0.5, 1.0) if self.jitter else delay

    def reset(self) -> None:
        """A try succeeded: the next failure starts from ``first`` again."""
        self.failures = 0
