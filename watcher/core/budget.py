"""The daemon's API request budget: a token bucket over `max_requests_per_minute`.

The Fireworks rate limit is account-wide and shared with the team's inference traffic, so
every request the daemon sends (pages, retries, confirmations) draws from one budget. Pure
arithmetic over an injected monotonic clock; waiting is the caller's business.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping

from watcher.core.model import JobKind, JobRef

#: Seconds of budget that may be spent at once: small, so requests are spread, not burst.
BURST_SECONDS = 5.0


class RequestBudget:
    """At most `per_minute` requests a minute, with a burst of a few seconds' worth.

    Args:
        per_minute: the sustained rate.
        clock: monotonic seconds.
    """

    def __init__(self, per_minute: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0:
            msg = "per_minute must be > 0"
            raise ValueError(msg)
        self._rate = per_minute / 60.0
        self.capacity = max(1.0, self._rate * BURST_SECONDS)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()

    @property
    def per_minute(self) -> float:
        """The rate, in requests per minute."""
        return self._rate * 60.0

    def set_rate(self, per_minute: float) -> None:
        """Change the rate from now on (SIGHUP); tokens already earned are kept, up to the
        new burst."""
        if per_minute <= 0:
            msg = "per_minute must be > 0"
            raise ValueError(msg)
        self._refill()
        self._rate = per_minute / 60.0
        self.capacity = max(1.0, self._rate * BURST_SECONDS)
        self._tokens = min(self._tokens, self.capacity)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now

    def available(self) -> int:
        """Whole requests that may be sent now without waiting."""
        self._refill()
        return max(0, math.floor(self._tokens))

    def take(self) -> float:
        """Reserve one request; returns the seconds to wait before sending it (0 when free)."""
        self._refill()
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def seconds_until_available(self) -> float:
        """Seconds until one request may be sent without waiting."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1.0 - self._tokens) / self._rate


def effective_interval(requests_per_cycle: float, per_minute: float, poll_interval: float) -> float:
    """How often every job can really be polled: the interval, or longer if the budget is short."""
    return max(poll_interval, requests_per_cycle * 60.0 / per_minute)


def requests_per_cycle(
    refs: Iterable[JobRef], discovered: Collection[JobKind], pages: Mapping[JobKind, int]
) -> int:
    """Requests one full cycle costs: a LIST (its pages) per discovered kind, and for explicit
    jobs of other kinds the cheaper of one GET each or a LIST; an unknown list length counts
    as one page for a discovered kind and as one GET per job otherwise."""
    explicit = Counter(ref.kind for ref in refs if ref.kind not in discovered)
    return sum(pages.get(kind, 1) for kind in discovered) + sum(
        min(count, pages.get(kind, count)) for kind, count in explicit.items()
    )
