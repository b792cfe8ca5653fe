"""`status [--json]`: every job's last known state, how long it has been in it, when it was
last polled and its open conditions; the conditions of the watcher itself (API down,
resources it cannot read); the silences in force; undelivered and silenced notifications.

A key the API rejects is the first line. Then what the page's header says of the daemon, as
far as the state shows it: its last poll and its readiness; the lease and the replicas when
they are shared (`state_url`). On a terminal the job table also shows progress and ETA.

The state file only: no channel secret (`${VAR}`), account or key is needed to read it, and
it is read while a daemon runs. A row the store cannot read is listed as such; it never
stops the rest being shown.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from watcher.cli.common import EXIT_OK
from watcher.core.conditions import Condition, ConditionName
from watcher.core.messages import format_duration
from watcher.core.notices import key_headline, key_rejections
from watcher.core.text import for_terminal
from watcher.core.urls import short_url
from watcher.views import Overview, job_doc, read_overview, status_document

if TYPE_CHECKING:
    from rich.console import Console

    from watcher.config import WatcherSettings
    from watcher.core.delivery import Delivery
    from watcher.core.model import JobSnapshot

# What the API said is shown escaped and cut: a status message may hold terminal controls.
_SHOWN: Final = 500
#: Silenced deliveries listed (all are counted): they pile up until `history_days` prunes them.
SILENCED_SHOWN: Final = 20
SILENCED_JSON: Final = 1000


async def _read(settings: WatcherSettings, now: datetime, *, silenced_limit: int) -> Overview:
    from watcher import backends

    state = Overview()
    async with backends.open_state(
        settings, on_unreadable=lambda row, error: state.bad_rows.append((row, error))
    ) as store:
        await read_overview(store, now, silenced_limit=silenced_limit, into=state)
    return state


def _stamp(value: datetime) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def _ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "-"
    return format_duration((now - value).total_seconds()) or "0s"


def _cmd_status(args: argparse.Namespace) -> int:
    from watcher import config
    from watcher.cli.common import _run_async

    settings = config.load_watcher(args.config, os.environ)
    path = settings.state_path
    now = datetime.now(UTC)
    if settings.state_url is None and not path.exists():
        if args.json:
            sys.stdout.write(json.dumps(status_document(Overview(where=str(path)), now)) + "\n")
        else:
            sys.stdout.write(f"no state yet at {path}\n")
        return EXIT_OK
    limit = SILENCED_JSON if args.json else SILENCED_SHOWN
    state = _run_async(lambda: _read(settings, now, silenced_limit=limit))
    if args.json:
        sys.stdout.write(json.dumps(status_document(state, now), indent=2) + "\n")
        return EXIT_OK
    _write_status(path, state, now, settings)
    if state.undelivered:
        _write_undelivered(state.undelivered)
    elif not any(row.startswith("outbox") for row, _ in state.bad_rows):
        sys.stdout.write("\nevery notification delivered\n")
    _write_silenced(state)
    return EXIT_OK


def _write_lease(state: Overview, now: datetime) -> None:
    """Who polls (the lease holder) and every replica seen lately, with its role."""
    out = sys.stdout
    lease = state.lease
    if lease is not None:
        left = (lease.expires_at - now).total_seconds()
        until = f"expires in {format_duration(left) or '0s'}" if left > 0 else "expired"
        holder = for_terminal(lease.holder, 200)
        out.write(f"lease: {holder}, epoch {lease.epoch}, {until}\n")
    for r in state.replicas:
        name = for_terminal(r.holder, 200)
        out.write(f"  replica {name}: {r.role}, seen {_ago(r.seen_at, now)} ago\n")


def readiness(state: Overview, now: datetime, settings: WatcherSettings) -> list[str]:
    """Why the daemon is not ready, as far as the state shows it (empty: ready): nobody holds
    the poller lease, no job polled lately, the API key rejected or the API unreachable. A
    job's poll time is rewritten at most every `POLLED_EVERY` while nothing else changes, so
    that much is allowed beyond the window `/readyz` uses."""
    from watcher.runtime.alert_memory import POLLED_EVERY
    from watcher.web.health import fresh_window

    reasons: list[str] = []
    lease = state.lease
    if lease is None:
        reasons.append("no daemon holds the poller lease")
    elif lease.expires_at <= now:
        reasons.append(
            f"no daemon holds the poller lease (expired {_ago(lease.expires_at, now)} ago)"
        )
    window = fresh_window(settings.poll_interval, settings.terminal_poll_interval)
    window += POLLED_EVERY.total_seconds()
    last = last_poll(state)
    if last is None:
        reasons.append("no job polled yet")
    elif (now - last).total_seconds() > window:
        reasons.append(f"no job polled in the last {format_duration(window)}")
    reasons += [key_headline(c) for c in key_rejections(state.conditions)]
    if any(c.name is ConditionName.API_DOWN for c in state.conditions):
        reasons.append("Fireworks API unreachable")
    return reasons


def last_poll(state: Overview) -> datetime | None:
    """When the daemon last read a job, as the state records it."""
    return max(state.polled.values(), default=None)


def _daemon_line(state: Overview, now: datetime, settings: WatcherSettings) -> tuple[str, bool]:
    """ "daemon: last poll 12s ago (…Z), ready", and whether it is ready."""
    last = last_poll(state)
    polled = f"last poll {_ago(last, now)} ago ({_stamp(last)})" if last else "no poll yet"
    reasons = readiness(state, now, settings)
    verdict = "ready" if not reasons else "not ready: " + "; ".join(reasons)
    return for_terminal(f"daemon: {polled}, {verdict}", 2 * _SHOWN), not reasons


def _write_status(path: Path, state: Overview, now: datetime, settings: WatcherSettings) -> None:
    out = sys.stdout
    tty = out.isatty()
    rejected = [
        for_terminal(f"{key_headline(c)} (since {_stamp(c.opened_at)}): {c.detail}", _SHOWN)
        for c in key_rejections(state.conditions)
    ]
    daemon, ready = _daemon_line(state, now, settings)
    if tty:
        _write_styled([(line, "bold red") for line in rejected])
    else:
        out.writelines(f"{line}\n" for line in rejected)
    out.write(f"state: {state.where or path}\n")
    if tty:
        _write_styled([(daemon, "green" if ready else "red")])
    else:
        out.write(f"{daemon}\n")
    if settings.state_url is not None:
        _write_lease(state, now)
    rows: list[tuple[str, ...]] = []
    for s in state.jobs:
        since = state.since.get(s.ref.key)
        status = f"{s.status_code}: {s.status_message}" if s.status_message else s.status_code
        name = s.display_name if s.display_name and s.display_name != s.ref.job_id else ""
        rows.append(
            (
                for_terminal(s.ref.key, 200),
                for_terminal(name, 60),
                for_terminal(s.state, 200),
                _ago(since.state if since else None, now),
                _ago(state.polled.get(s.ref.key), now),
                for_terminal(status, _SHOWN),
            )
        )
    header = ("JOB", "NAME", "STATE", "FOR", "POLLED", "STATUS")
    if tty:
        _write_table(header, rows, state, now)
    else:
        _write_plain(header, rows, state, now)
    _write_rest(state, now)


def _console() -> Console:
    from rich.console import Console

    return Console(file=sys.stdout, highlight=False, markup=False, emoji=False, soft_wrap=True)


def _write_styled(lines: list[tuple[str, str]]) -> None:
    """Lines in a style each (a terminal); the text is plain `Text`, never markup."""
    from rich.text import Text

    console = _console()
    for line, style in lines:
        console.print(Text(line, style=style))


def _progress(job: JobSnapshot, state: Overview, now: datetime) -> str:
    """ "42% ETA 1h 10m", as the page shows it (`views.job_doc`); "-" without progress."""
    doc = job_doc(job, state, now)
    if doc["percent"] is None:
        return "-"
    eta = doc["eta_seconds"]
    return f"{doc['percent']:.0f}%" + (f" ETA {format_duration(eta)}" if eta else "")


def _write_table(
    header: tuple[str, ...], rows: list[tuple[str, ...]], state: Overview, now: datetime
) -> None:
    """The jobs as a coloured table (a terminal): the state by its outcome, its progress and
    ETA, conditions in yellow under their job. Every cell is plain `Text`: API text is never
    rich markup."""
    from rich.table import Table
    from rich.text import Text

    from watcher.core.kinds import watch_exit

    table = Table(*header[:3], "PROGRESS", *header[3:], box=None, pad_edge=False)
    table.header_style = "bold"
    for row, job in zip(rows, state.jobs, strict=True):
        outcome = watch_exit(job.ref.kind, job.state)
        colour = {0: "green", 1: "red"}.get(outcome, "blue") if outcome is not None else "blue"
        cells = [Text(cell) for cell in row]
        cells[2].stylize(f"bold {colour}")
        cells[0].stylize("bold")
        table.add_row(*cells[:3], Text(_progress(job, state, now)), *cells[3:])
        for c in state.job_conditions(job.ref.key):
            table.add_row(
                "",
                "",
                Text("! " + str(c.name), style="yellow"),
                "",
                "",
                "",
                Text(_condition_line(c, now), style="yellow"),
            )
    _console().print(table)


def _write_plain(
    header: tuple[str, ...], rows: list[tuple[str, ...]], state: Overview, now: datetime
) -> None:
    out = sys.stdout
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]

    def write_row(row: tuple[str, ...]) -> None:
        cells = [f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[5]]).rstrip() + "\n")

    write_row(header)
    for row, job in zip(rows, state.jobs, strict=True):
        write_row(row)
        for c in state.job_conditions(job.ref.key):
            out.write(f"{'':<{widths[0]}}  ! {_condition_line(c, now)}\n")


def _write_rest(state: Overview, now: datetime) -> None:
    """The watcher's own conditions, unreadable resources, silences and unreadable rows."""
    out = sys.stdout
    keys = {s.ref.key for s in state.jobs}
    others = [
        c
        for c in state.conditions
        # Unreadable resources are listed next; a rejected key is the first line.
        if c.name not in (ConditionName.UNREADABLE, ConditionName.KEY_REJECTED)
        and c.subject not in keys
    ]
    if others:
        out.write(f"\n{len(others)} open condition(s) of the watcher:\n")
        out.writelines(
            f"  {for_terminal(c.subject, 200)}: {_condition_line(c, now)}\n" for c in others
        )
    unreadable = state.unreadable()
    if unreadable:
        out.write(f"\n{len(unreadable)} resource(s) the watcher cannot read:\n")
        for target, error in unreadable:
            out.write(f"  {for_terminal(target, 200)}: {for_terminal(error, _SHOWN)}\n")
    if state.silences:
        from watcher.cli.silence import ends_in, matcher

        out.write(f"\n{len(state.silences)} silence(s) in force:\n")
        for silence in state.silences:
            comment = for_terminal(silence.comment, _SHOWN)
            out.write(f"  {silence.id}  {matcher(silence)}  ends in {ends_in(silence, now)}")
            out.write(f"  {comment}\n")
    if state.bad_rows:
        out.write(f"\n{len(state.bad_rows)} row(s) of the state file cannot be read:\n")
        out.writelines(
            f"  {for_terminal(row, 200)}: {for_terminal(error, _SHOWN)}\n"
            for row, error in state.bad_rows
        )


def _condition_line(c: Condition, now: datetime) -> str:
    detail = for_terminal(c.detail, _SHOWN)
    return f"{c.name} for {_ago(c.opened_at, now)} (since {_stamp(c.opened_at)}): {detail}"


def _write_undelivered(undelivered: list[Delivery]) -> None:
    out = sys.stdout
    out.write(f"\n{len(undelivered)} undelivered notification(s):\n")
    for d in undelivered:
        e = d.entry
        when = "dead" if d.status == "dead" else f"next try {d.next_attempt_at:%Y-%m-%d %H:%M:%S}Z"
        line = (
            f"{e.job_key} {e.old_state or '-'} → {e.new_state} to {e.channel} "
            f"({short_url(e.url_display)}): {d.attempts} attempt(s), {when}; {d.last_error}"
        )
        out.write(f"  {for_terminal(line, 2 * _SHOWN)}\n")


def _write_silenced(state: Overview) -> None:
    if not state.silenced_count:
        return
    out = sys.stdout
    out.write(f"\n{state.silenced_count} silenced notification(s) (recorded, not sent)")
    more = state.silenced_count - len(state.silenced)
    out.write(f", the latest {len(state.silenced)}:\n" if more > 0 else ":\n")
    for d in state.silenced:
        by = f"silence {d.silence_id}" if d.silence_id is not None else "a silence"
        line = (
            f"{_stamp(d.created_at)} {d.job_key} {d.old_state or '-'} → {d.new_state} to "
            f"{d.channel} ({short_url(d.url_display)}): by {by}"
        )
        out.write(f"  {for_terminal(line, 2 * _SHOWN)}\n")
