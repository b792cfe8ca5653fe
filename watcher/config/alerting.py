"""The validators of the alerting keys: durations, digest times, time zones, quiet hours,
a channel's kind globs."""

from __future__ import annotations

from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from watcher.core.durations import DURATION_RULE, parse_clock, parse_duration, parse_hours
from watcher.core.kinds import JobKind


def _duration(value: object) -> object:
    # Seconds as a number, or "90s", "30m", "2h": the unit people think in for these keys.
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"must be {DURATION_RULE}"
        raise ValueError(msg)  # noqa: TRY004 (pydantic reports ValueError, not TypeError)
    return value


def _digest(value: str) -> str:
    if value != "hourly":
        try:
            parse_clock(value)
        except ValueError:
            msg = 'must be "hourly" or a time of day like "09:00"'
            raise ValueError(msg) from None
    return value


def _time_zone(value: str) -> str:
    if value != "UTC":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            msg = 'must be a time zone name like "Europe/Paris" or "UTC"'
            raise ValueError(msg) from None
    return value


def _group_by(value: str) -> str:
    if value not in ("job", "account"):
        msg = 'must be "job" or "account"'
        raise ValueError(msg)
    return value


def _quiet_hours(value: object) -> object:
    if not isinstance(value, str):
        msg = 'must be a range of hours like "22:00-07:00"'
        raise ValueError(msg)  # noqa: TRY004 (pydantic reports ValueError, not TypeError)
    return parse_hours(value)


def _kind_glob(value: str) -> str:
    # Kind names are lower case with "-" (`batch-inference`), as `[[watch]] kind` forgives; a
    # glob that matches no kind is a typo, not a channel that should hear nothing.
    glob = value.strip().lower().replace("_", "-")
    if not glob or not any(fnmatchcase(kind, glob) for kind in JobKind):
        msg = f"matches no job kind ({', '.join(JobKind)})"
        raise ValueError(msg)
    return glob
