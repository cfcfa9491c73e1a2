"""One exponential backoff for everything that retries: sends, commits, trainings.

>>> backoff = Backoff(base_s=0.5, max_s=2.0)
>>> backoff.ready(now=0.0)
True
>>> [backoff.failed(now=0.0) for _ in range(4)]
[0.5, 1.0, 2.0, 2.0]
>>> backoff.ready(now=1.0), backoff.ready(now=2.0)
(False, True)
>>> backoff.succeeded(); backoff.failures, backoff.ready(now=0.0)
(0, True)
"""

from __future__ import annotations


class Backoff:
    """Delays of ``base_s`` doubling up to ``max_s`` after consecutive failures."""

    def __init__(self, base_s: float, max_s: float) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.failures = 0
        self.retry_at = 0.0

    def failed(self, now: float) -> float:
        """Count a failure at ``now``; returns the delay before the next attempt."""
        self.failures += 1
        delay = min(self.base_s * 2 ** (self.failures - 1), self.max_s)
        self.retry_at = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.retry_at
