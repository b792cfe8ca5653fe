"""Durations as people write them (`90s`, `30m`, `2h`, `1d`, `1h30m`, or plain seconds) and
times of day (`09:00`, `22:00-07:00`). Pure parsing with one-line errors."""

from __future__ import annotations

import math
import re
from typing import Final

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
#: The longest duration anything accepts (a year): longer is a typo.
MAX_SECONDS: Final = 366 * 86400.0
DURATION_RULE: Final = 'a duration like "90s", "30m", "2h", "1d" or "1h30m", or seconds'


def parse_duration(text: str) -> float:
    """`"1h30m"` -> 5400.0; a bare number is seconds.

    Raises:
        ValueError: not a duration, or longer than a year.
    """
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ValueError(f"must be {DURATION_RULE}") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if math.isnan(seconds) or not 0 <= seconds <= MAX_SECONDS:
        raise ValueError("must be between 0 and a year")
    return seconds


def parse_clock(text: str) -> tuple[int, int]:
    """`"09:00"` -> (9, 0).

    Raises:
        ValueError: not HH:MM on a 24-hour clock.
    """
    match = _CLOCK.fullmatch(text.strip())
    if match is None:
        raise ValueError('must be a time of day like "09:00"')
    return int(match[1]), int(match[2])


def parse_hours(text: str) -> tuple[str, str]:
    """`"22:00-07:00"` -> ("22:00", "07:00"), each checked.

    Raises:
        ValueError: not two times of day joined by "-", or the same time twice.
    """
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError('must be a range of hours like "22:00-07:00"')
    try:
        parse_clock(start)
        parse_clock(end)
    except ValueError:
        raise ValueError('must be a range of hours like "22:00-07:00"') from None
    if start.strip() == end.strip():
        raise ValueError("must not start and end at the same time")
    return start.strip(), end.strip()
