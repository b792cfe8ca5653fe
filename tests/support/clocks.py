"""The wall and monotonic clocks of a daemon test, moved by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.support.servers import FakeClock

#: 08:00 in Paris: the digest at 09:00 covers the day before it.
T0 = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)


class Clocks:
    """One fake monotonic clock for the simulator and the watcher's wall time."""

    def __init__(self) -> None:
        self.mono = FakeClock()
        self._mono0 = self.mono.now

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.mono.now - self._mono0)

    def until(self, at: datetime) -> None:
        self.mono.now += (at - self.wall()).total_seconds()
