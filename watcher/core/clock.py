"""The host's wall clock (`utcnow`, the one place it is read), and wall-clock time that a
step of the host's clock cannot move.

The host's wall clock can be set anywhere at any moment (an operator, a VM resumed, NTP
stepping). Stored times (an outbox row's `created_at` and `next_attempt_at`) are compared
with later readings, so a step back of a day would hold every retry for a day, and a step
forward would make each look overdue and give deliveries up. `SteadyClock` follows the wall
clock while it keeps pace with the monotonic clock, and ignores a step: time goes on at the
monotonic pace from where it was, and `offset` says how far the host clock is away.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

#: The largest difference between the wall clock's and the monotonic clock's progress between
#: two readings that is still followed (NTP slews by well under a millisecond a second).
MAX_STEP = 2.0


def utcnow() -> datetime:
    """The host's wall clock, timezone-aware: the default clock of everything that is given
    one (the core itself only ever takes `now` as an argument)."""
    return datetime.now(UTC)


def steady_reading(
    last: datetime, elapsed: float, wall: datetime, *, max_step: float = MAX_STEP
) -> datetime:
    """The next steady time: `wall` when it moved by about `elapsed` seconds since `last`,
    else (the host clock stepped) `last` moved on by `elapsed`."""
    expected = last + timedelta(seconds=max(elapsed, 0.0))
    if abs((wall - expected).total_seconds()) <= max_step:
        return wall
    return expected


class SteadyClock:
    """A wall clock (timezone-aware) immune to steps of the host clock.

    Args:
        wall: the host's wall clock.
        monotonic: monotonic seconds, the pace kept across a step.
        max_step: differences in progress up to this many seconds are followed.
    """

    def __init__(
        self,
        wall: Callable[[], datetime],
        monotonic: Callable[[], float],
        *,
        max_step: float = MAX_STEP,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._max_step = max_step
        self._last_mono = monotonic()
        self._last = wall()
        #: Seconds the host clock is ahead of this one (negative: behind); 0 until it steps.
        self.offset = 0.0

    def __call__(self) -> datetime:
        mono, wall = self._monotonic(), self._wall()
        now = steady_reading(self._last, mono - self._last_mono, wall, max_step=self._max_step)
        self._last, self._last_mono = now, mono
        self.offset = (wall - now).total_seconds()
        return now
