"""When to try an API request again: the official SDK's rules, as pure functions.

Retried: 408, 409, 429 and every 5xx, and transport errors; `x-should-retry` overrides the
status; `retry-after-ms`, then `Retry-After`, set the pause; otherwise exponential backoff
with full jitter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

from watcher.core.schedule import doubling

#: Statuses worth another try inside one call, as the official SDK retries them: request
#: timeout, conflict (lock contention), rate limit and every server error.
RETRY_STATUSES: Final = frozenset({408, 409, 429})


def is_retryable(status: int) -> bool:
    """True for the statuses the official SDK retries: 408, 409, 429 and every 5xx."""
    return status in RETRY_STATUSES or status >= 500


@dataclass(frozen=True, slots=True)
class RequestRetry:
    """How often and how patiently one request is retried after a transient failure.

    Attributes:
        attempts: Total tries per request (1 means no retry).
        base_delay: The first backoff ceiling in seconds; it doubles on each try.
        max_delay: The largest backoff ceiling in seconds.
        max_retry_after: The longest server `Retry-After` waited for inside one call; a
            longer one ends the call with `ApiUnavailable(retry_after=...)` so the caller
            can reschedule instead of blocking a poll cycle.
    """

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        """Reject a policy that could never send or would wait a negative time."""
        if self.attempts < 1:
            msg = f"RequestRetry.attempts must be at least 1, got {self.attempts}"
            raise ValueError(msg)
        if min(self.base_delay, self.max_delay, self.max_retry_after) < 0:
            msg = "RequestRetry delays must not be negative"
            raise ValueError(msg)


DEFAULT_RETRY: Final = RequestRetry()


def backoff_delay(
    attempt: int, policy: RequestRetry, *, retry_after: float | None, rand: Callable[[], float]
) -> float:
    """Seconds to wait after failed try number `attempt` (1-based): exponential, full jitter.

    The jitter ceiling is `base_delay * 2 ** (attempt - 1)`, capped at `max_delay`; the wait is
    a uniform share of it (`rand()` in [0, 1)). A server hint wins when it is longer, and the
    result never exceeds `max_retry_after`.
    """
    ceiling = doubling(policy.base_delay, policy.max_delay, attempt)
    delay = ceiling * min(max(rand(), 0.0), 1.0)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, policy.max_retry_after)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Read a `Retry-After` header: delay-seconds or an HTTP-date, as seconds from `now`.

    Returns None when the header is absent or unreadable (including a negative or
    non-finite number); a date in the past gives 0.0. Never raises.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:  # "-0000" means UTC of unknown origin
            when = when.replace(tzinfo=UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        return max((when - now).total_seconds(), 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def retry_hint(headers: Mapping[str, str], *, now: datetime) -> float | None:
    """The server's retry hint in seconds: `retry-after-ms` first, then `Retry-After`, as the
    official SDK reads them; None when neither is usable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis)
        except ValueError:
            pass
        else:
            if math.isfinite(value) and value >= 0:
                return value / 1000
    return parse_retry_after(headers.get("retry-after"), now=now)
