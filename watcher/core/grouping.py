"""Grouping and rate folding: what one target is sent now, as how many messages, and what
waits. Pure: the dispatcher claims a target's due rows, asks `plan_target`, sends each batch
as one message and settles its rows together.

- `group_wait`: one job's rows due together become one message showing the path
  (`my-job: CREATING → VALIDATING → RUNNING`).
- `group_by = "account"`: the rows of several jobs become one message
  (`40 jobs FAILED: a, b, c, … and 37 more`).
- `max_per_minute`: past the allowance, the rest is folded into one summary; with none
  left, everything waits for the minute to free. Nothing is dropped.
- quiet hours: non-failure rows wait until the hours end; a job's failure takes its earlier
  rows along, so the channel hears them in order.

A row alone renders exactly as it would without any of this (`render_entry`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from watcher.core.delivery import Channel, Delivery, OutboxEntry
from watcher.core.messages import (
    BODY_LIMIT,
    MESSAGE_FIELDS,
    TITLE_LIMIT,
    TITLE_REASON,
    Message,
    api_text,
    default_title,
    notify_type,
    render_fields,
)
from watcher.core.people import scheme_of
from watcher.core.text import cap, escape_markdown, one_line

#: A list in a grouped message shows at most this many lines, then "… and N more".
MAX_LINES: Final = 50
#: An account title names this many jobs, then "… and N more".
TITLE_NAMES: Final = 3
#: The window `max_per_minute` counts sends in.
MINUTE: Final = timedelta(seconds=60)
#: Why a row is held.
QUIET: Final = "quiet hours"
RATE: Final = "max_per_minute"
#: Tones from worst to best: a batch takes its worst row's.
TONES: Final = ("failure", "warning", "info", "success")


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows sent as one message; they are settled together."""

    rows: tuple[Delivery, ...]
    message: Message
    tone: str

    @property
    def lead(self) -> Delivery:
        """The row that stands for the batch when its send is settled: the oldest, with the
        most attempts of any (so a batch's backoff never restarts)."""
        return dataclasses.replace(self.rows[0], attempts=max(r.attempts for r in self.rows))


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with a target's claimed rows: send `batches` now, hold each of `holds` until
    its time (with why: `QUIET` or `RATE`); `unrenderable` rows cannot be rendered (with the
    reason) and are given up."""

    batches: tuple[Batch, ...] = ()
    holds: tuple[tuple[Delivery, datetime, str], ...] = ()
    unrenderable: tuple[tuple[Delivery, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Candidate:
    """A pending row of a target as `select_claims` sees it.

    Attributes:
        due: its next attempt is now or past.
        free: no other dispatcher holds a live claim on it.
        joinable: not due only because it waits for its group window or its quiet hours, so
            it may go with a due row (a row waiting to be retried may not).
    """

    id: int
    job_key: str
    due: bool
    free: bool
    joinable: bool


def select_claims(candidates: Sequence[Candidate], *, whole_target: bool) -> list[int]:
    """The ids to claim of a target's pending rows (oldest first).

    Per job, rows are taken in order up to the first that may not go (under another's claim,
    or waiting for a retry): a job's later message never overtakes an earlier one. Joinable
    rows go only with a due one: of their job, or of any job when the target groups as one
    (`whole_target`).
    """
    runs: dict[str, list[Candidate]] = {}
    blocked: set[str] = set()
    for row in candidates:
        if row.job_key in blocked:
            continue
        if row.free and (row.due or row.joinable):
            runs.setdefault(row.job_key, []).append(row)
        else:
            blocked.add(row.job_key)
    due_jobs = {job for job, run in runs.items() if any(r.due for r in run)}
    taken = [
        r.id
        for job, run in runs.items()
        if job in due_jobs or (whole_target and due_jobs)
        for r in run
    ]
    return sorted(taken)


def render_entry(entry: OutboxEntry, channel: Channel | None) -> Message:
    """The text of one delivery, rendered now from its event with the channel's templates (a
    notice keeps its stored text); `{owner_mention}` as the entry's target mentions the owner
    (its scheme: `core.people`)."""
    event = entry.event
    fields = event.field_map()
    if event.notice:
        return Message(fields.get("title", ""), fields.get("body", ""))
    if channel is None:  # removed by a reload: its URLs are unknown targets anyway
        return render_fields(fields)
    mention = channel.people.mention(fields.get("owner", ""), scheme_of(entry.url_display))
    return render_fields(fields, title=channel.title, body=channel.body, mention=mention)


def tone(rows: Sequence[Delivery]) -> str:
    """The apprise type of a batch: its worst row's (failure > warning > info > success)."""
    found = {notify_type(r.entry.new_state) for r in rows}
    return next((t for t in TONES if t in found), "info")


def plan_target(
    rows: Sequence[Delivery],
    channel: Channel,
    *,
    now: datetime,
    recent: Sequence[datetime] = (),
    quiet_until: datetime | None = None,
) -> Plan:
    """Plan the claimed, unsilenced rows of one target (oldest first).

    Args:
        rows: the target's rows due now (with any that joined them), of `channel`.
        channel: its templates and policy (`group_wait`, `group_by_account`,
            `max_per_minute`).
        now: the time of the plan.
        recent: when this target was sent messages (those in the last minute count).
        quiet_until: the end of the channel's quiet hours when `now` is in them, else None.
    """
    policy = channel.policy
    holds: list[tuple[Delivery, datetime, str]] = []
    ready = list(rows)
    if quiet_until is not None:
        released = _released(ready)
        holds += [(r, quiet_until, QUIET) for r in ready if r.id not in released]
        ready = [r for r in ready if r.id in released]
    units = _units(ready, channel)
    if policy.max_per_minute > 0 and units:
        window = sorted(t for t in recent if now - t < MINUTE)
        allowance = policy.max_per_minute - len(window)
        if allowance <= 0:
            frees = window[-policy.max_per_minute] + MINUTE if window else now
            holds += [(r, frees, RATE) for _, unit in units for r in unit]
            units = []
        elif len(units) > allowance:
            folded = tuple(r for _, unit in units[allowance - 1 :] for r in unit)
            units = [*units[: allowance - 1], ("summary", folded)]
    batches: list[Batch] = []
    broken: list[tuple[Delivery, str]] = []
    for kind, unit in units:
        try:
            message = _RENDER[kind](unit, channel)
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            # A stored event no template can render costs only its batch.
            broken += [(r, f"cannot render: {exc!r}"[:200]) for r in unit]
            continue
        batches.append(Batch(unit, message, tone(unit)))
    return Plan(tuple(batches), tuple(holds), tuple(broken))


def _released(rows: Sequence[Delivery]) -> set[int]:
    """In quiet hours: each job's rows up to its last failure (the failure goes now, after
    what led to it); the rest waits."""
    last_failure: dict[str, int] = {}
    for index, row in enumerate(rows):
        if notify_type(row.entry.new_state) == "failure":
            last_failure[row.entry.job_key] = index
    return {
        row.id for index, row in enumerate(rows) if index <= last_failure.get(row.entry.job_key, -1)
    }


Unit = tuple[str, tuple[Delivery, ...]]


def _units(rows: Sequence[Delivery], channel: Channel) -> list[Unit]:
    """The messages the rows make, before rate folding: (kind, rows) in order of their first
    row."""
    if not rows:
        return []
    policy = channel.policy
    jobs: dict[str, list[Delivery]] = {}
    for row in rows:
        jobs.setdefault(row.entry.job_key, []).append(row)
    if policy.group_by_account and len(jobs) > 1:
        return [("account", tuple(rows))]
    if policy.group_wait > 0:
        return [("job" if len(run) > 1 else "single", tuple(run)) for run in jobs.values()]
    return [("single", (row,)) for row in rows]


# -- text ------------------------------------------------------------------------------------


def _values(row: Delivery) -> dict[str, str]:
    """Every message field of a transition's event, as `render_fields` sees them."""
    fields = row.entry.event.field_map()
    return {name: api_text(fields.get(name, "")) for name in MESSAGE_FIELDS} | {
        "new_job": fields.get("new_job", "")
    }


def _is_transition(row: Delivery) -> bool:
    return not row.entry.event.notice


def _first(values: Mapping[str, str]) -> str:
    return "(new job)" if values["new_job"] else "(first seen)"


def _reason(values: Mapping[str, str]) -> str:
    return one_line(values["reason"] or values["status_message"], TITLE_REASON)


def row_line(row: Delivery) -> str:
    """One row as a line of a list: a transition's default title, a notice's stored title."""
    entry = row.entry
    if entry.event.notice:
        return one_line(entry.event.field_map().get("title", ""), TITLE_LIMIT)
    values = _values(row)
    return one_line(default_title(values, first=_first(values)), TITLE_LIMIT)


def _job_name(row: Delivery) -> str:
    """The short name of a row's job: its id (else its key: an old row's)."""
    fields = row.entry.event.field_map()
    return api_text(fields.get("job_id") or row.entry.job_key, 100)


def _path(run: Sequence[Delivery]) -> tuple[str, str] | None:
    """`name: A → B → C[: reason]` of a job's transitions, and their tone; None if none."""
    moves = [r for r in run if _is_transition(r)]
    if not moves:
        return None
    first, last = _values(moves[0]), _values(moves[-1])
    name = last["job_id"]
    if last["display_name"] != name:
        name = f"{last['display_name']} ({name})"
    path = " → ".join(
        [first["old_state"] or _first(first), *(_values(m)["new_state"] for m in moves)]
    )
    title = f"{name}: {path}"
    if _reason(last) and notify_type(last["new_state"]) == "failure":
        title += f": {_reason(last)}"
    return title, path


def _listed(lines: Sequence[str]) -> list[str]:
    # Each line is plain text (a title): escaped, it is one Markdown list item as it reads.
    shown = [f"- {escape_markdown(line)}" for line in lines[:MAX_LINES]]
    if len(lines) > MAX_LINES:
        shown.append(f"- … and {len(lines) - MAX_LINES} more")
    return shown


def _single(rows: tuple[Delivery, ...], channel: Channel) -> Message:
    return render_entry(rows[0].entry, channel)


def _job(rows: tuple[Delivery, ...], channel: Channel) -> Message:
    """One job's rows: the path in the title, each step in the body, then the last
    transition's details."""
    found = _path(rows)
    extra = sum(1 for r in rows if not _is_transition(r))
    if found is None:
        title = f"{row_line(rows[0])} (+{len(rows) - 1} more)"
    else:
        title = found[0] + (f" (+{extra} more)" if extra else "")
    steps: list[str] = []
    for row in rows:
        if _is_transition(row):
            values = _values(row)
            step = f"{values['old_state'] or _first(values)} → {values['new_state']}"
            why = one_line(values["reason"] or values["status_message"], 300)
            steps.append(f"{step}: {why}" if why else step)
        else:
            steps.append(row_line(row))
    body = ["Steps:", *_listed(steps)]
    moves = [r for r in rows if _is_transition(r)]
    if moves:
        body += ["", render_entry(moves[-1].entry, channel).body]
    return Message(cap(title, TITLE_LIMIT), cap("\n".join(body), BODY_LIMIT))


def _account(rows: tuple[Delivery, ...], channel: Channel) -> Message:
    """Several jobs' rows: how many jobs reached which state, then a line per job."""
    jobs: dict[str, list[Delivery]] = {}
    for row in rows:
        jobs.setdefault(row.entry.job_key, []).append(row)
    states = {key: run[-1].entry.new_state for key, run in jobs.items()}
    count = len(jobs)
    if len(set(states.values())) == 1:
        names = [_job_name(run[0]) for run in jobs.values()]
        listed = ", ".join(names[:TITLE_NAMES])
        more = f", … and {count - TITLE_NAMES} more" if count > TITLE_NAMES else ""
        title = f"{count} jobs {next(iter(states.values()))}: {listed}{more}"
    else:
        tally: dict[str, int] = {}
        for state in states.values():
            tally[state] = tally.get(state, 0) + 1
        order = sorted(tally, key=lambda s: (TONES.index(notify_type(s)), -tally[s]))
        verb = "moved" if all(_is_transition(r) for r in rows) else "updated"
        title = f"{count} jobs {verb}: " + ", ".join(f"{tally[s]} {s}" for s in order)
    lines = []
    for run in jobs.values():
        found = _path(run) if len(run) > 1 else None
        lines += [found[0]] if found is not None else [row_line(r) for r in run]
    return Message(cap(title, TITLE_LIMIT), cap("\n".join(_listed(lines)), BODY_LIMIT))


def _summary(rows: tuple[Delivery, ...], channel: Channel) -> Message:
    """The overflow past `max_per_minute`, folded into one message."""
    short = [f"{_job_name(r)} {r.entry.new_state}" for r in rows]
    title = one_line(f"{len(rows)} more notifications: " + ", ".join(short), TITLE_LIMIT)
    limit = channel.policy.max_per_minute
    head = f"More than {limit} messages a minute for this channel; the rest in one:"
    body = "\n".join([head, "", *_listed([row_line(r) for r in rows])])
    return Message(title, cap(body, BODY_LIMIT))


_RENDER: Final = {"single": _single, "job": _job, "account": _account, "summary": _summary}
