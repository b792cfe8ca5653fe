"""`silence add`, `silence list` and `silence expire`: silences in the state file.

They open the state file as `status` does, without the daemon's lock: SQLite's WAL and busy
timeout let them write while a daemon runs, and the daemon reads silences live. The config
is read for the state path and the channel names only, so no secret need be set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Final

from watcher.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, _error, has_state, with_state
from watcher.core.clock import utcnow as _now
from watcher.core.durations import parse_duration
from watcher.core.kinds import ALL_STATES, JobKind, short_state
from watcher.core.messages import format_duration, iso_time
from watcher.core.silences import Silence
from watcher.core.text import for_terminal

if TYPE_CHECKING:
    from watcher.config import WatcherSettings

#: The longest silence: longer is a typo, or a reason to change the config instead.
MAX_SILENCE: Final = timedelta(days=90)
MAX_GLOB: Final = 200
MAX_COMMENT: Final = 500
_KINDS: Final = tuple(kind.value for kind in JobKind)


class _Usage(ValueError):
    """Bad input: one line naming the flag, exit 2."""


def _state(args: argparse.Namespace) -> WatcherSettings:
    from watcher import config

    return config.load_watcher(args.config, os.environ)


def _stamp(value: datetime | None) -> str:
    return "" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def _checked_text(flag: str, value: str, limit: int, *, empty: bool = False) -> str:
    value = value.strip()
    if not value and not empty:
        raise _Usage(f"{flag}: must not be empty")
    if len(value) > limit:
        raise _Usage(f"{flag}: longer than {limit} characters")
    if for_terminal(value) != value:
        raise _Usage(f"{flag}: must not hold control characters")
    return value


def _silence(args: argparse.Namespace, now: datetime) -> Silence:
    """The silence the flags describe; `_Usage` naming the first bad flag."""
    job = _checked_text("--job", args.job, MAX_GLOB)
    try:
        seconds = parse_duration(args.duration)
    except ValueError as exc:
        raise _Usage(f"--for: {exc}") from None
    if seconds <= 0 or seconds > MAX_SILENCE.total_seconds():
        raise _Usage(f"--for: must be more than 0 and at most {MAX_SILENCE.days} days")
    # A kind glob, spelled as `[[channel]] kinds` are; one that matches no kind is a typo.
    kind = args.kind.strip().lower().replace("_", "-") if args.kind else ""
    if kind and not any(fnmatchcase(known, kind) for known in _KINDS):
        raise _Usage(f"--kind: unknown kind {for_terminal(args.kind, 40)!r} ({', '.join(_KINDS)})")
    state = short_state(args.state) if args.state and args.state.strip() else ""
    if args.state is not None and state not in ALL_STATES:
        raise _Usage(
            f"--state: unknown state {for_terminal(args.state, 40)!r}; use a name like "
            "COMPLETED, FAILED, RUNNING or READY"
        )
    return Silence(
        id=0,
        job=job,
        kind=kind,
        state=state,
        channel=_checked_text("--channel", args.channel or "", 100, empty=True),
        comment=_checked_text("--comment", args.comment, MAX_COMMENT),
        created_at=now,
        ends_at=now + timedelta(seconds=seconds),
        owner=_checked_text("--owner", args.owner or "", MAX_GLOB, empty=True),
    )


def _check_channel(args: argparse.Namespace, channel: str) -> None:
    from watcher import config

    if not channel:
        return
    names = config.channel_names(args.config, os.environ)
    if channel not in names:
        known = ", ".join(for_terminal(n, 100) for n in names) or "none"
        raise _Usage(
            f"--channel: no channel named {for_terminal(channel, 100)!r} (channels: {known})"
        )


def matcher(silence: Silence) -> str:
    """`job=prod-* owner=alice@* state=FAILED`: what a silence matches."""
    parts = [("job", silence.job), ("kind", silence.kind), ("owner", silence.owner)]
    parts += [("state", silence.state), ("channel", silence.channel)]
    return " ".join(f"{name}={for_terminal(value, MAX_GLOB)}" for name, value in parts if value)


def _cmd_silence_add(args: argparse.Namespace) -> int:
    now = _now()
    try:
        silence = _silence(args, now)
        settings = _state(args)
        _check_channel(args, silence.channel)
    except _Usage as exc:
        _error(str(exc))
        return EXIT_USAGE
    silence_id = with_state(settings, lambda store: store.add_silence(silence, now=now))
    ends_at = silence.ends_at or now
    ends = format_duration((ends_at - now).total_seconds())
    sys.stdout.write(
        f"silence {silence_id} added: {matcher(silence)}, until {_stamp(ends_at)} (in {ends})\n"
    )
    return EXIT_OK


def _cmd_silence_list(args: argparse.Namespace) -> int:
    settings = _state(args)
    now = _now()
    silences: list[Silence] = []
    if has_state(settings):
        silences = with_state(settings, lambda store: store.silences(now, include_ended=args.all))
    if args.json:
        sys.stdout.write(json.dumps([_document(s, now) for s in silences], indent=2) + "\n")
        return EXIT_OK
    if not silences:
        sys.stdout.write("no silences\n" if args.all else "no silence in force\n")
        return EXIT_OK
    sys.stdout.write(_table(silences, now))
    return EXIT_OK


def _document(silence: Silence, now: datetime) -> dict[str, object]:
    return {
        "id": silence.id,
        **silence.described(),
        "created_at": iso_time(silence.created_at),
        "ends_at": iso_time(silence.ends_at),
        "expired_at": iso_time(silence.expired_at),
        "active": silence.active(now),
    }


def ends_in(silence: Silence, now: datetime) -> str:
    """`1h 59m 58s`, or `ended 2026-12-02 11:14:03Z` / `expired ...` once it is over."""
    end = silence.end()
    if silence.active(now) and end is not None:
        return format_duration((end - now).total_seconds())
    if silence.expired_at is not None and silence.expired_at == end:
        return f"expired {_stamp(end)}"
    return f"ended {_stamp(end)}"


def _table(silences: list[Silence], now: datetime) -> str:
    rows = [
        (str(s.id), matcher(s), ends_in(s, now), for_terminal(s.comment, MAX_COMMENT))
        for s in silences
    ]
    header = ("ID", "MATCHER", "ENDS IN", "COMMENT")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip()
        for row in [header, *rows]
    ]
    return "".join(f"{line}\n" for line in lines)


def _cmd_silence_expire(args: argparse.Namespace) -> int:
    try:
        silence_id = int(args.id)
        if silence_id <= 0:
            raise ValueError
    except ValueError:
        _error(f"ID: {for_terminal(args.id, 40)!r} is not a silence id (see `silence list`)")
        return EXIT_USAGE
    settings = _state(args)
    expired = False
    if has_state(settings):
        expired = with_state(settings, lambda store: store.expire_silence(silence_id, now=_now()))
    if not expired:
        _error(f"no silence {silence_id} in force (see `silence list --all`)")
        return EXIT_FAILED
    sys.stdout.write(f"silence {silence_id} expired\n")
    return EXIT_OK
