"""Digests: when a channel's digest is due, and what it says. Pure.

A channel's `digest` is "hourly" (the previous whole local hour) or "HH:MM" (the 24 hours, or
23 or 25 across a change of daylight saving time, ending at the latest HH:MM local time). The
time zone comes in as a `tzinfo` (the runtime resolves the IANA name). Each period has a
stable id, its end as local ISO text ("2026-12-02T09:00+01:00"), stored per channel once its
digest is queued; so each period is sent once, across restarts.

First start: a channel without a stored id gets the latest period that has already ended as
its baseline, and sends nothing for it (a fresh deploy at 10:30 with `digest = "09:00"` sends
its first digest tomorrow at 09:00, covering the 24 hours before). A daemon that was down over
several period ends sends one digest, for the latest period only.

The content: jobs that moved into an outcome within the period (completed, failed with the
reason), jobs active now (with progress), open conditions, and the estimated cost where the
API reports one; filtered by the channel's rule (`core.rules`), each section bounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Final

from watcher.core.conditions import Condition, ConditionName
from watcher.core.delivery import Channel, Event
from watcher.core.durations import parse_clock
from watcher.core.kinds import JobKind, Meaning, meaning_of
from watcher.core.markdown import code_span
from watcher.core.messages import BODY_LIMIT, TITLE_LIMIT, Message, api_markdown, target_label
from watcher.core.model import JobSnapshot
from watcher.core.notices import DIGEST, DIGEST_STATE, Notice, everyones, subject_fields
from watcher.core.rules import Subject, matches
from watcher.core.text import cap, one_line

HOURLY: Final = "hourly"
#: The outbox job key of every digest.
DIGEST_KEY: Final = "digest"
#: Items shown per section; the rest are counted ("… and 3 more").
SECTION_LINES: Final = 20
#: One item's line is cut to this many characters.
LINE_LIMIT: Final = 300
#: The body keeps this much room for the cost and closing lines.
_RESERVE: Final = 600


@dataclass(frozen=True, slots=True)
class Period:
    """The span one digest covers, [start, end), as aware local times.

    Attributes:
        start: the beginning, in the digest's time zone.
        end: the end, in the digest's time zone.
        zone: the zone's name as shown ("UTC", "Europe/Paris").
        hourly: an hourly period (else daily).
    """

    start: datetime
    end: datetime
    zone: str
    hourly: bool = False

    @property
    def id(self) -> str:
        """The stable id: the end as local ISO text with its offset."""
        return self.end.isoformat(timespec="minutes")

    @property
    def length(self) -> timedelta:
        """How long it lasts (23 or 25 hours for a day over a change of DST)."""
        return _utc(self.end) - _utc(self.start)


def _utc(at: datetime) -> datetime:
    # Aware datetimes sharing a tzinfo compare and subtract by wall time; UTC is unambiguous.
    return at.astimezone(UTC)


def _real(local: datetime, tz: tzinfo) -> datetime:
    # A wall time in a DST gap becomes the instant it stands for (02:30 -> 03:30 CEST).
    return _utc(local).astimezone(tz)


def _hour_floor(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def period_at(schedule: str, tz: tzinfo, now: datetime) -> Period:
    """The latest period of `schedule` that has ended at or before `now`.

    Raises:
        ValueError: `schedule` is neither "hourly" nor a time of day, or `now` is naive.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    local = now.astimezone(tz)
    zone = str(tz)
    if schedule == HOURLY:
        end = _hour_floor(local)
        start = _hour_floor((_utc(end) - timedelta(hours=1)).astimezone(tz))
        return Period(start, end, zone, hourly=True)
    clock = time(*parse_clock(schedule))

    def at(day: int) -> datetime:
        return _real(datetime.combine(local.date() + timedelta(days=day), clock, tz), tz)

    end = at(0)
    back = -1 if _utc(end) > _utc(now) else 0
    return Period(at(back - 1), at(back), zone)


def parse_id(text: str | None) -> datetime | None:
    """The end a stored period id names, or None (no id, or one that is not a time)."""
    if text is None or len(text) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass(frozen=True, slots=True)
class Step:
    """What a channel's digest schedule asks for now.

    Attributes:
        send: the period to send a digest of, or None.
        mark: the period id to store as the channel's last, or None to keep it.
    """

    send: Period | None = None
    mark: str | None = None


def advance(schedule: str, tz: tzinfo, now: datetime, last_sent_id: str | None) -> Step:
    """The digest to send now and the id to store; see the module docstring for first start.

    An unreadable stored id counts as a first start (a baseline, nothing sent).
    """
    period = period_at(schedule, tz, now)
    last = parse_id(last_sent_id)
    if last is None:
        return Step(None, period.id)
    if _utc(period.end) <= _utc(last):
        return Step()
    return Step(period, period.id)


def due(schedule: str, tz: tzinfo, now: datetime, last_sent_id: str | None) -> Period | None:
    """The period to send a digest of now, or None (sent already, or a first start)."""
    return advance(schedule, tz, now, last_sent_id).send


# -- content ---------------------------------------------------------------------------------

_COST: Final = re.compile(r"(?:([A-Z]{3}) )?([0-9]{1,15}(?:\.[0-9]{1,9})?)")
_CONDITION_WORDS: Final = {
    ConditionName.STALLED: "stalled",
    ConditionName.PENDING: "waiting too long",
    ConditionName.MAX_RUNTIME: "running too long",
    ConditionName.UNREADABLE: "cannot be read",
    ConditionName.API_DOWN: "unreachable",
    ConditionName.KEY_REJECTED: "API key rejected",
}
_NOTHING: Final = (
    "Nothing to report: no job completed or failed, none is active, and no condition is open."
)


def parse_cost(text: str) -> tuple[str, Decimal] | None:
    """`"USD 12.50"` -> ("USD", Decimal("12.50")); `"3.5"` -> ("", 3.5); else None."""
    if len(text) > 40:
        return None
    match = _COST.fullmatch(text.strip())
    return None if match is None else (match[1] or "", Decimal(match[2]))


def _meaning(kind: str, state: str) -> Meaning:
    return JobKind(kind).spec.meaning(state) if kind in _KINDS else meaning_of(state)


_KINDS: Final = frozenset(kind.value for kind in JobKind)


def outcomes(events: Iterable[Event]) -> tuple[list[Event], list[Event]]:
    """The transition events into a success and into a failure, oldest first, the latest of
    each job per list. A status change within a state, or a first sight of a job that existed
    before the watcher, is not a move into an outcome."""
    found: dict[Meaning, dict[str, Event]] = {Meaning.SUCCESS: {}, Meaning.FAILURE: {}}
    for event in sorted(events, key=lambda e: _utc(e.observed_at)):
        fields = event.field_map()
        if event.notice or event.kind or event.old_state == event.new_state:
            continue
        if not event.old_state and not fields.get("new_job"):
            continue
        meaning = _meaning(fields.get("kind", ""), event.new_state)
        if meaning in found:
            found[meaning].pop(event.job_key, None)
            found[meaning][event.job_key] = event
    return list(found[Meaning.SUCCESS].values()), list(found[Meaning.FAILURE].values())


def active(jobs: Iterable[JobSnapshot]) -> list[JobSnapshot]:
    """The jobs in an active state, by key."""
    return sorted((j for j in jobs if j.meaning is Meaning.ACTIVE), key=lambda j: j.ref.key)


def _name(job_id: str, display_name: str) -> str:
    if display_name and display_name != job_id:
        return f"**{api_markdown(display_name, 120)}** ({code_span(api_markdown(job_id, 120))})"
    return f"**{api_markdown(job_id, 120)}**"


def _when(at: datetime, period: Period) -> str:
    local = at.astimezone(period.end.tzinfo)
    return f"{local:%H:%M}" if period.hourly else f"{local:%m-%d %H:%M}"


def _money(currency: str, amount: Decimal) -> str:
    return f"{currency} {amount:.2f}".strip()


@dataclass(frozen=True, slots=True)
class _Item:
    job_key: str
    line: str
    cost: tuple[str, Decimal] | None = None


def _outcome_item(event: Event, period: Period, *, failed: bool) -> _Item:
    fields = event.field_map()
    line = f"- {_name(fields.get('job_id', event.job_key), fields.get('display_name', ''))}"
    line += f" {api_markdown(event.new_state, 60)} at {_when(event.observed_at, period)}"
    if fields.get("duration"):
        line += f" after {api_markdown(fields['duration'], 40)}"
    cost = parse_cost(fields.get("estimated_cost", ""))
    if cost is not None:
        line += f" · {_money(*cost)}"
    reason = fields.get("reason") or fields.get("status_message", "")
    code = fields.get("status_code", "")
    if failed and reason:
        prefix = f"{code}: " if code and code != "OK" and not fields.get("reason") else ""
        line += f": {one_line(api_markdown(prefix + reason, 400))}"
    return _Item(event.job_key, cap(line, LINE_LIMIT), cost)


def _running_item(job: JobSnapshot) -> _Item:
    line = f"- {_name(job.ref.job_id, job.display_name)} {api_markdown(job.state, 60)}"
    if job.progress:
        line += f", {api_markdown(job.progress, 20)}%"
    cost = parse_cost(job.estimated_cost)
    if cost is not None:
        line += f" · {_money(*cost)}"
    return _Item(job.ref.key, cap(line, LINE_LIMIT), cost)


def _condition_item(condition: Condition, job: JobSnapshot | None, period: Period) -> _Item:
    name = (
        _name(job.ref.job_id, job.display_name)
        if job is not None
        else f"**{api_markdown(target_label(condition.subject), 120)}**"
    )
    words = _CONDITION_WORDS.get(condition.name, str(condition.name))
    line = f"- {name}: {words} since {_when(condition.opened_at, period)}"
    if condition.detail:
        line += f": {one_line(api_markdown(condition.detail, 400))}"
    return _Item(condition.subject, cap(line, LINE_LIMIT))


def _conditions_heard(
    channel: Channel, conditions: Sequence[Condition], jobs: Mapping[str, JobSnapshot]
) -> list[tuple[Condition, JobSnapshot | None]]:
    heard = []
    rule = channel.rule.any_state()
    for condition in sorted(conditions, key=lambda c: (_utc(c.opened_at), c.subject)):
        job = jobs.get(condition.subject)
        subject = Subject.of_fields(dict(subject_fields(job, condition.subject)))
        if everyones(condition.name) or matches(rule, subject):
            heard.append((condition, job))
    return heard


def _title(period: Period, counts: Sequence[tuple[int, str, str]]) -> str:
    end = period.end
    when = f"{end:%Y-%m-%d %H:%M}"
    if period.hourly:
        when = f"{period.start:%Y-%m-%d %H:%M}-{end:%H:%M}"
    said = [f"{n} {one if n == 1 else many}" for n, one, many in counts if n]
    return cap(f"Digest {when} ({period.zone}): {', '.join(said) or 'nothing to report'}", 250)


def _span(period: Period) -> str:
    hours = f"{period.length.total_seconds() / 3600:g}h"
    return f"{period.start:%Y-%m-%d %H:%M} to {period.end:%Y-%m-%d %H:%M} ({period.zone}, {hours})"


def _assemble(period: Period, sections: Sequence[tuple[str, list[_Item]]], tail: list[str]) -> str:
    lines = [f"Digest for {_span(period)}."]
    room = BODY_LIMIT - _RESERVE
    used = len(lines[0])
    for heading, items in sections:
        if not items:
            continue
        lines += ["", f"**{heading} ({len(items)})**"]
        used += len(lines[-1]) + 2
        shown = 0
        for item in items[:SECTION_LINES]:
            if used + len(item.line) + 1 > room:
                break
            lines.append(item.line)
            used += len(item.line) + 1
            shown += 1
        if shown < len(items):
            lines.append(f"… and {len(items) - shown} more")
            used += len(lines[-1]) + 1
    lines += tail
    return cap("\n".join(lines), BODY_LIMIT)


def build(
    period: Period,
    *,
    completed: Sequence[Event],
    failed: Sequence[Event],
    running: Sequence[JobSnapshot],
    conditions: Sequence[Condition],
    channel: Channel,
    jobs: Mapping[str, JobSnapshot] | None = None,
    cut: bool = False,
) -> Message | None:
    """A channel's digest of one period; None when there is nothing in it and the channel
    does not ask for empty digests (`digest_empty`).

    Args:
        completed, failed: moves into an outcome within the period (see `outcomes`).
        running: jobs active now (see `active`).
        conditions: the open conditions.
        channel: whose rule (its states aside) filters every section.
        jobs: the last snapshots by key, to name a condition's job.
        cut: the period's history was cut at its bound (the counts are from its newest part).
    """
    jobs = jobs or {}
    # A digest's lines are not moves: the channel's rule applies, its states aside.
    rule = channel.rule.any_state()

    def heard_event(e: Event) -> bool:
        fields = e.field_map()
        return matches(rule, Subject.of_fields({"job_id": e.job_key} | fields))

    done = [_outcome_item(e, period, failed=False) for e in completed if heard_event(e)]
    bad = [_outcome_item(e, period, failed=True) for e in failed if heard_event(e)]
    live = [_running_item(j) for j in running if matches(rule, Subject.of_job(j))]
    open_ = [_condition_item(c, j, period) for c, j in _conditions_heard(channel, conditions, jobs)]
    if not (done or bad or live or open_) and not channel.policy.digest_empty:
        return None
    title = _title(
        period,
        [
            (len(done), "completed", "completed"),
            (len(bad), "failed", "failed"),
            (len(live), "active", "active"),
            (len(open_), "open condition", "open conditions"),
        ],
    )
    tail: list[str] = []
    # A job's latest cost counts once: a job that completed and now runs again, as it runs.
    costs = {i.job_key: i.cost for i in (*done, *bad, *live) if i.cost is not None}
    totals: dict[str, Decimal] = {}
    for currency, amount in costs.values():
        totals[currency] = totals.get(currency, Decimal(0)) + amount
    if totals:
        money = ", ".join(_money(c, a) for c, a in sorted(totals.items()))
        jobs_word = "job" if len(costs) == 1 else "jobs"
        tail += ["", f"**Estimated cost**: {money} ({len(costs)} {jobs_word} with an estimate)"]
    if cut:
        tail += ["", "(Counted from the newest transitions only: the period had too many.)"]
    if not (done or bad or live or open_):
        tail += ["", _NOTHING]
    sections = [
        ("Completed", done),
        ("Failed", bad),
        ("Active", live),
        ("Open conditions", open_),
    ]
    return Message(cap(title, TITLE_LIMIT), _assemble(period, sections, tail))


def digest_notice(channel: str, period: Period, message: Message) -> Notice:
    """A digest as the notice one channel hears."""
    fields = (
        ("job_id", ""),
        ("kind", ""),
        ("job_state", ""),
        ("display_name", ""),
        ("period", period.id),
    )
    return Notice(DIGEST_KEY, message, DIGEST_STATE, DIGEST, fields, frozenset({channel}))
