"""The runtime's clocks: the wall clock for what people read, a monotonic one for pacing."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import structlog

from watcher.core.clock import SteadyClock, utcnow

__all__ = ["StepNotice", "monotonic", "utcnow"]

log = structlog.get_logger("watcher")


def monotonic() -> float:
    """Seconds on a clock no one can set: Linux's boot time counts a suspend, which a poll
    interval should (`time.monotonic` stands still through one)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class StepNotice:
    """Says once per step of the host clock that it stepped, and that it is not followed
    (times shown stay on the monotonic pace until a restart)."""

    def __init__(self) -> None:
        self._said = 0.0

    def read(self, clock: Callable[[], datetime]) -> datetime:
        """`clock()`, logging a step of the host clock it has ignored since the last one."""
        now = clock()
        offset = clock.offset if isinstance(clock, SteadyClock) else 0.0
        if abs(offset - self._said) > 1.0:
            log.warning("clock.stepped", host_clock_ahead_seconds=round(offset, 1))
            self._said = offset
        return now
