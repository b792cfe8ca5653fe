"""Quiet hours: whether a time is inside a daily window, and when the window ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from watcher.core.quiet import quiet_until

BERLIN = ZoneInfo("Europe/Berlin")
NIGHT = ("22:00", "07:00")
WORK = ("09:00", "17:00")


@pytest.mark.parametrize(
    ("hours", "tz", "now", "expected"),
    [
        pytest.param(NIGHT, UTC, datetime(2026, 6, 1, 12, 0, tzinfo=UTC), None, id="midday: out"),
        pytest.param(
            NIGHT,
            UTC,
            datetime(2026, 6, 1, 23, 30, tzinfo=UTC),
            datetime(2026, 6, 2, 7, 0, tzinfo=UTC),
            id="before midnight: ends tomorrow",
        ),
        pytest.param(
            NIGHT,
            UTC,
            datetime(2026, 6, 2, 3, 0, tzinfo=UTC),
            datetime(2026, 6, 2, 7, 0, tzinfo=UTC),
            id="after midnight: ends today",
        ),
        pytest.param(
            NIGHT,
            UTC,
            datetime(2026, 6, 1, 22, 0, tzinfo=UTC),
            datetime(2026, 6, 2, 7, 0, tzinfo=UTC),
            id="the start is inside",
        ),
        pytest.param(NIGHT, UTC, datetime(2026, 6, 2, 7, 0, tzinfo=UTC), None, id="the end is out"),
        pytest.param(
            WORK,
            UTC,
            datetime(2026, 6, 1, 10, 0, tzinfo=UTC),
            datetime(2026, 6, 1, 17, 0, tzinfo=UTC),
            id="same-day window: inside",
        ),
        pytest.param(
            WORK, UTC, datetime(2026, 6, 1, 8, 59, tzinfo=UTC), None, id="same-day: before"
        ),
        pytest.param(
            WORK, UTC, datetime(2026, 6, 1, 18, 0, tzinfo=UTC), None, id="same-day: after"
        ),
        pytest.param(
            NIGHT,
            BERLIN,
            datetime(2026, 6, 1, 21, 0, tzinfo=UTC),  # 23:00 CEST
            datetime(2026, 6, 2, 5, 0, tzinfo=UTC),  # 07:00 CEST
            id="in the channel's zone",
        ),
        pytest.param(
            NIGHT, BERLIN, datetime(2026, 6, 1, 19, 0, tzinfo=UTC), None, id="21:00 there: out"
        ),
        pytest.param(
            NIGHT,
            BERLIN,
            datetime(2026, 3, 28, 22, 0, tzinfo=UTC),  # 23:00 CET, the night clocks go forward
            datetime(2026, 3, 29, 5, 0, tzinfo=UTC),  # 07:00 CEST: 7 h later, not 8
            id="DST starts overnight: still 07:00 local",
        ),
        pytest.param(
            NIGHT,
            BERLIN,
            datetime(2026, 10, 24, 21, 0, tzinfo=UTC),  # 23:00 CEST, the night clocks go back
            datetime(2026, 10, 25, 6, 0, tzinfo=UTC),  # 07:00 CET: 9 h later
            id="DST ends overnight: still 07:00 local",
        ),
        pytest.param(
            ("01:00", "02:30"),
            BERLIN,
            datetime(2026, 3, 29, 0, 30, tzinfo=UTC),  # 01:30 CET; 02:00-03:00 does not exist
            datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # 03:30 CEST: moved on by the gap
            id="an end the clocks skip",
        ),
        pytest.param(
            NIGHT,
            timezone(timedelta(hours=-5)),
            datetime(2026, 6, 2, 4, 0, tzinfo=UTC),  # 23:00 at -05:00
            datetime(2026, 6, 2, 12, 0, tzinfo=UTC),
            id="a fixed offset",
        ),
    ],
)
def test_quiet_until(
    hours: tuple[str, str], tz: timezone, now: datetime, expected: datetime | None
) -> None:
    """When the quiet hours around `now` end (None when outside them), on the local clock."""
    assert expected == quiet_until(hours, tz, now)


def test_a_bad_time_is_an_error() -> None:
    """A time that is not HH:MM is a ValueError (the config rejects it first)."""
    with pytest.raises(ValueError, match="time of day"):
        quiet_until(("25:00", "07:00"), UTC, datetime(2026, 6, 1, tzinfo=UTC))
