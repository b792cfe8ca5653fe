"""The validators of the alerting keys: durations, digest times, time zones, quiet hours,
a channel's kind globs and owners, and the people directory's e-mails and ids."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from watcher.core.durations import DURATION_RULE, parse_clock, parse_duration, parse_hours
from watcher.core.kinds import JobKind
from watcher.core.rules import DIRECTORY

_EMAIL: Final = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}")
#: Slack member ids (`U012ABCDEF`; `W…` on Enterprise Grid) and Discord snowflakes.
_SLACK_MEMBER: Final = re.compile(r"[UW][A-Z0-9]{2,30}")
_DISCORD_USER: Final = re.compile(r"[0-9]{17,20}")


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


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError("must be an e-mail address (name@domain)")
    return value


def _slack_member(value: str) -> str:
    if not _SLACK_MEMBER.fullmatch(value):
        raise ValueError("must be a Slack member id: U or W, then letters and digits")
    return value


def _discord_user(value: str) -> str:
    if not _DISCORD_USER.fullmatch(value):
        raise ValueError("must be a Discord user id: 17 to 20 digits")
    return value


def _owners(value: object) -> object:
    # `owners = "directory"` is the people directory (`core.rules`); another string is a
    # glob that lost its brackets.
    if isinstance(value, str):
        if value != DIRECTORY:
            raise ValueError(f'must be an array of globs or "{DIRECTORY}"')
        return (value,)
    return value
