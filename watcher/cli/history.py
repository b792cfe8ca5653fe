"""`history [JOB] [--since 24h] [--json]`: the timeline of what the watcher saw and said.

One line per event (transitions, conditions, reminders, milestones, digests, silences) with
what became of its deliveries per channel. Read from the state file while a daemon runs; the
config is read for the state path only. Never the fields blob, never a URL but its display
form.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Final

from watcher.cli.common import EXIT_OK, EXIT_USAGE, _error, has_state, state_where, with_state
from watcher.core.durations import parse_duration
from watcher.core.messages import iso_time
from watcher.core.text import for_terminal, mask_url, one_line

if TYPE_CHECKING:
    from watcher.backends import StateDb
    from watcher.stores.history_table import Entry, Trace

#: The event fields `history` shows (the rest of an event's fields stay in the store).
SHOWN_FIELDS: Final = (
    "display_name",
    "status_code",
    "status_message",
    "reason",
    "progress",
    "duration",
    "title",
    "condition",
    "milestone",
    "job_state",
    "action",
    "silence_id",
    "job",
    "state",
    "channel",
    "comment",
    "ends_at",
    "folded",
)
_GLOB: Final = frozenset("*?[")
#: Before any event: `history` looks this far back for whether a job was ever seen.
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SHOWN = 300


def job_matcher(pattern: str) -> Callable[[str], bool]:
    """What `history JOB` keeps: a job key (`dpo/x`), a job id (`x`, any kind), or a glob
    on either (`prod-*`, `sft/*`)."""
    if _GLOB & set(pattern):
        return lambda key: fnmatchcase(key, pattern) or fnmatchcase(_job_id(key), pattern)
    return lambda key: pattern in (key, _job_id(key))


def _job_id(key: str) -> str:
    return key.partition("/")[2] or key


def _stamp(value: datetime) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def kind_name(entry: Entry) -> str:
    """The event kind as shown: `transition`, `condition`, `reminder`, ..., `notice`."""
    event = entry.event
    return event.kind or ("notice" if event.notice else "transition")


def delivered(traces: tuple[Trace, ...]) -> str:
    """`ml-team: delivered; oncall: 1 dead, 1 delivered`: the deliveries per channel."""
    by_channel: dict[str, Counter[str]] = {}
    for trace in traces:
        by_channel.setdefault(trace.channel, Counter())[trace.status] += 1
    parts = []
    for channel, statuses in by_channel.items():
        shown = (
            next(iter(statuses))
            if len(statuses) == 1
            else ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
        )
        parts.append(f"{for_terminal(channel, 100)}: {for_terminal(shown, 100)}")
    return "; ".join(parts)


def line(entry: Entry) -> str:
    """One event as a line of the timeline."""
    event = entry.event
    fields = event.field_map()
    kind = kind_name(entry)
    if kind == "transition":
        what = f"{event.old_state or '-'} → {event.new_state}"
        reason = fields.get("status_message") or fields.get("reason", "")
        if reason:
            what += f"  ({one_line(reason, _SHOWN)})"
        if fields.get("folded"):  # recorded, not sent: its job was flapping
            what += f"  [folded: {one_line(fields['folded'], _SHOWN)}]"
    elif kind == "silence":
        what = f"silence {fields.get('silence_id', '?')} {event.new_state.lower()}: job=" + (
            fields.get("job", "")
        )
        for name in ("kind", "owner", "state", "channel"):
            if fields.get(name):
                what += f" {name}={fields[name]}"
        if fields.get("ends_at") and event.new_state == "ADDED":
            what += f" until {fields['ends_at'][:19].replace('T', ' ')}Z"
        if fields.get("comment"):
            what += f"  ({one_line(fields['comment'], _SHOWN)})"
    else:
        # "condition STALLED" says more than "condition"; "reminder REMINDER" does not.
        what = kind if event.new_state == kind.upper() else f"{kind} {event.new_state}"
        if fields.get("title"):
            what += f"  {one_line(fields['title'], _SHOWN)}"
    text = f"{_stamp(event.observed_at)}  {event.job_key}  {what}"
    deliveries = delivered(entry.deliveries)
    if deliveries:
        text += f"  → {deliveries}"
    return for_terminal(text, 4 * _SHOWN)


def document(entry: Entry) -> dict[str, object]:
    """One event as a JSON object: its kind, job, states, chosen fields and deliveries."""
    event = entry.event
    fields = event.field_map()
    return {
        "id": entry.id,
        "observed_at": iso_time(event.observed_at),
        "kind": kind_name(entry),
        "job": event.job_key,
        "old_state": event.old_state,
        "new_state": event.new_state,
        "details": {name: fields[name] for name in SHOWN_FIELDS if fields.get(name)},
        "deliveries": [
            {
                "channel": t.channel,
                "url": mask_url(t.url_display),
                "status": t.status,
                "delivered_at": iso_time(t.delivered_at),
                "attempts": t.attempts,
                "last_error": t.last_error,
                "silence_id": t.silence_id,
            }
            for t in entry.deliveries
        ],
    }


async def _read(store: StateDb, since: datetime, pattern: str) -> tuple[list[Entry], bool, bool]:
    """The events since `since` of the jobs `pattern` matches (all without one), whether older
    ones were cut, and whether the state knows any job `pattern` matches: one it holds a state
    of, or one with an event at any time."""
    matcher = job_matcher(pattern) if pattern else None
    entries, cut = await store.history(since=since, job=matcher)
    if matcher is None or entries:
        return entries, cut, True
    known = any(matcher(key) for key in await store.last_all())
    if not known:
        ever, more = await store.history(since=_EPOCH, job=matcher, limit=1)
        known = bool(ever) or more
    return entries, cut, known


def _cmd_history(args: argparse.Namespace) -> int:
    from watcher import config
    from watcher.stores.history_table import MAX_HISTORY

    try:
        seconds = parse_duration(args.since)
    except ValueError as exc:
        _error(f"--since: {exc}")
        return EXIT_USAGE
    if seconds <= 0:
        _error("--since: must be more than 0")
        return EXIT_USAGE
    pattern = args.job.strip() if args.job else ""
    if args.job is not None and (not pattern or len(pattern) > 200):
        _error("JOB: must be a job id, a job key (dpo/my-job) or a glob, up to 200 characters")
        return EXIT_USAGE
    settings = config.load_watcher(args.config, os.environ)
    path = state_where(settings)
    since = datetime.now(UTC) - timedelta(seconds=seconds)
    entries: list[Entry] = []
    cut = False
    bad_rows: list[tuple[str, str]] = []
    known = not pattern
    if has_state(settings):
        entries, cut, known = with_state(
            settings,
            lambda store: _read(store, since, pattern),
            on_unreadable=lambda row, error: bad_rows.append((row, error)),
        )
    if not known:
        # A job the state never saw is a typo, not a quiet job.
        what = "matching " if _GLOB & set(pattern) else ""
        _error(f"no job {what}{pattern} in the state ({path})")
        return EXIT_USAGE
    if args.json:
        out = {
            "state_path": str(path),
            "since": iso_time(since),
            "events": [document(e) for e in entries],
            "cut": cut,
            "unreadable_rows": [{"row": row, "error": error} for row, error in bad_rows],
        }
        sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK
    if cut:
        sys.stdout.write(
            f"(older events cut: the latest {MAX_HISTORY} are shown; narrow with --since or JOB)\n"
        )
    sys.stdout.writelines(f"{line(e)}\n" for e in entries)
    if not entries:
        sys.stdout.write(f"no events since {_stamp(since)}\n")
    for row, error in bad_rows:
        sys.stdout.write(f"unreadable {for_terminal(row, 200)}: {for_terminal(error, _SHOWN)}\n")
    return EXIT_OK
