"""Reminders: a channel with `repeat_interval` hears again, every interval, of each job that
stays in a failure or attention state and of each open condition, until it is resolved,
resumed, deleted or silenced. Pure: subjects, stored times and now in; notices and the
times to store out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from watcher.core.conditions import Condition, Since
from watcher.core.delivery import Channel
from watcher.core.kinds import Meaning
from watcher.core.model import JobSnapshot
from watcher.core.notices import (
    Notice,
    condition_wording,
    everyones,
    reminder_notice,
    subject_fields,
)
from watcher.core.rules import Subject, matches

#: Outcomes a person chose are not worth a reminder.
_CHOSEN: Final = frozenset({"CANCELLED", "CANCELLING"})
_REMIND: Final = frozenset({Meaning.FAILURE, Meaning.ATTENTION})


@dataclass(frozen=True, slots=True)
class Remindable:
    """Something a channel may be reminded of.

    Attributes:
        subject: its reminder key: `dpo/x|FAILED` for a state, `dpo/x|stalled` for a condition.
        job_key: the job (or `api`, `list:KIND`) it is about.
        job: the job's snapshot, when it is a job.
        what: the state, or the condition's wording.
        since: when the state began or the condition opened.
        condition: the condition's name; "" for a state.
    """

    subject: str
    job_key: str
    job: JobSnapshot | None
    what: str
    since: datetime
    condition: str = ""


def remindables(
    last: Mapping[str, JobSnapshot],
    since: Mapping[str, Since],
    conditions: Iterable[Condition],
) -> list[Remindable]:
    """Jobs the watcher saw enter a failure or attention state (FAILED, EXPIRED, PAUSED; not
    CANCELLED, which a person chose, nor a state found at first sight), and open conditions."""
    found: list[Remindable] = []
    for key, job in last.items():
        began = since.get(key)
        if began is None or not began.entered:
            continue
        if job.meaning in _REMIND and job.state not in _CHOSEN:
            found.append(Remindable(f"{key}|{job.state}", key, job, job.state, began.state))
    for condition in conditions:
        what = condition_wording(condition.name)
        found.append(
            Remindable(
                f"{condition.subject}|{condition.name}",
                condition.subject,
                last.get(condition.subject),
                what,
                condition.opened_at,
                str(condition.name),
            )
        )
    return found


def _wants(channel: Channel, item: Remindable) -> bool:
    # A state is reminded of as its move was announced: by the whole rule, states too; a
    # condition is not a move.
    if everyones(item.condition):
        return True
    rule = channel.rule.any_state() if item.condition else channel.rule
    return matches(rule, Subject.of_fields(dict(subject_fields(item.job, item.job_key))))


@dataclass(frozen=True, slots=True)
class ReminderPlan:
    """Reminders to queue now, and the stored times to change (None: drop)."""

    notices: tuple[Notice, ...] = ()
    times: dict[tuple[str, str], datetime | None] = field(default_factory=dict)


def plan_reminders(
    items: Sequence[Remindable],
    channels: Sequence[Channel],
    times: Mapping[tuple[str, str], datetime],
    *,
    now: datetime,
    silenced: Callable[[Channel, Remindable], bool],
) -> ReminderPlan:
    """Who is reminded of what now.

    The first reminder is due one interval after the state began (or the condition opened),
    each next one an interval after the last; after a long downtime one reminder goes out,
    not a burst. A silenced subject is skipped while its silence lasts (its time is kept, so
    it is reminded as soon as the silence ends). Stored times of subjects that are gone
    (resolved, resumed, deleted) are dropped.
    """
    notices: list[Notice] = []
    changed: dict[tuple[str, str], datetime | None] = {}
    live: set[tuple[str, str]] = set()
    for channel in channels:
        every = channel.policy.repeat_interval
        if every <= 0:
            continue
        interval = timedelta(seconds=every)
        for item in items:
            key = (channel.name, item.subject)
            live.add(key)
            due = times.get(key, item.since + interval)
            if due > now or not _wants(channel, item) or silenced(channel, item):
                continue
            notices.append(
                reminder_notice(
                    item.job_key,
                    item.job,
                    what=item.what,
                    since=item.since,
                    now=now,
                    channel=channel.name,
                    condition=item.condition,
                )
            )
            changed[key] = now + interval
    changed |= {key: None for key in times if key not in live}
    return ReminderPlan(tuple(notices), changed)
