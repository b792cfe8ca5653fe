"""Quiet hours: a daily window (`22:00-07:00`, in a channel's time zone) during which its
non-failure messages wait. Pure: the runtime resolves the zone name and hands in a tzinfo.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, tzinfo

from watcher.core.durations import parse_clock


def _clock(text: str) -> time:
    hour, minute = parse_clock(text)
    return time(hour, minute)


def quiet_until(hours: tuple[str, str], tz: tzinfo, now: datetime) -> datetime | None:
    """When the quiet hours around `now` end, or None when `now` is outside them.

    `hours` is (start, end) as "HH:MM" on the local clock of `tz`; a window whose start is
    later than its end crosses midnight. The end is a wall-clock time: on a day the clocks
    change, "07:00" is still seven in the morning there (a time the change skips is moved on
    by the gap). The result is in `tz`.

    Raises:
        ValueError: a time is not HH:MM.
    """
    start, end = _clock(hours[0]), _clock(hours[1])
    if start == end:
        return None
    local = now.astimezone(tz)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= clock < end
        day = local.date()
    elif clock >= start:  # before midnight: the hours end tomorrow
        inside, day = True, local.date() + timedelta(days=1)
    else:
        inside, day = clock < end, local.date()
    if not inside:
        return None
    # Through UTC and back: a wall time in a DST gap becomes a real instant (shifted by it).
    return datetime.combine(day, end, tzinfo=tz).astimezone(UTC).astimezone(tz)
