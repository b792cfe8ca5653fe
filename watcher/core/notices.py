"""Messages that are not one transition: conditions opening and resolving, reminders,
progress milestones, and the notices about the watcher itself. Pure.

A `Notice` is rendered when it is decided (its title and body are stored with its event);
channel templates apply to transitions only. Each notice names its subject's job id,
display name, kind and state in its event fields, so silences and the history can match it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from watcher.core import messages
from watcher.core.conditions import API_SUBJECT, Condition, ConditionName
from watcher.core.delivery import Channel, Event, OutboxEntry
from watcher.core.messages import (
    Message,
    api_message,
    api_text,
    format_duration,
    target_label,
    unreadable_message,
)
from watcher.core.model import JobSnapshot
from watcher.core.text import one_line
from watcher.core.transitions import names_match

#: Event kinds (the `events.kind` column); "" is a transition.
TRANSITION: Final = ""
CONDITION: Final = "condition"
RESOLVED: Final = "resolved"
REMINDER: Final = "reminder"
MILESTONE: Final = "milestone"
DIGEST: Final = "digest"
SUMMARY: Final = "summary"

#: The outbox `new_state` of each condition opening (and the apprise tone in messages).
CONDITION_STATES: Final = {
    ConditionName.STALLED: messages.STALLED,
    ConditionName.PENDING: messages.PENDING_TOO_LONG,
    ConditionName.MAX_RUNTIME: messages.MAX_RUNTIME,
    ConditionName.UNREADABLE: messages.UNREADABLE,
    ConditionName.API_DOWN: messages.API_DOWN,
}
#: The outbox `new_state` of a condition that resolved (API and unreadable keep their own).
RESOLVED_STATES: Final = {
    ConditionName.UNREADABLE: messages.READABLE,
    ConditionName.API_DOWN: messages.API_UP,
}
RESOLVED_STATE: Final = messages.RESOLVED
REMINDER_STATE: Final = messages.REMINDER
MILESTONE_STATE: Final = messages.MILESTONE
DIGEST_STATE: Final = messages.DIGEST

_TITLES: Final = {
    ConditionName.STALLED: "stalled",
    ConditionName.PENDING: "waiting too long",
    ConditionName.MAX_RUNTIME: "running too long",
    ConditionName.UNREADABLE: "unreadable",
    ConditionName.API_DOWN: "unreachable",
}
_OWN: Final = frozenset({ConditionName.UNREADABLE, ConditionName.API_DOWN})


_EVERYONES: Final = frozenset({ConditionName.UNREADABLE.value, ConditionName.API_DOWN.value})


@dataclass(frozen=True, slots=True)
class Notice:
    """A rendered message about one subject for the channels that hear it.

    Attributes:
        job_key: the outbox job key (its rows keep their order with the job's transitions).
        message: title and body.
        new_state: the outbox state (it sets the apprise tone).
        kind: the event kind.
        fields: subject fields for silences and the history (`job_id`, `display_name`,
            `kind`, `job_state`, `condition`).
        channels: the channel names that hear it; None means every channel whose job globs
            match.
    """

    job_key: str
    message: Message
    new_state: str
    kind: str
    fields: tuple[tuple[str, str], ...] = ()
    channels: frozenset[str] | None = None

    def event(self, now: datetime) -> Event:
        """The stored form: its text and subject fields."""
        text = (("title", self.message.title), ("body", self.message.body))
        return Event(self.job_key, "", self.new_state, now, (*text, *self.fields), True, self.kind)


def subject_fields(job: JobSnapshot | None, subject: str) -> tuple[tuple[str, str], ...]:
    """The fields that let silences and the history match a notice about `subject`."""
    if job is None:
        kind, _, job_id = subject.partition("/")
        return (
            ("job_id", job_id or subject),
            ("display_name", ""),
            ("kind", kind),
            ("job_state", ""),
        )
    return (
        ("job_id", job.ref.job_id),
        ("display_name", job.display_name),
        ("kind", str(job.ref.kind)),
        ("job_state", job.state),
    )


def _name(job: JobSnapshot | None, subject: str) -> str:
    if job is None:
        return api_text(target_label(subject))
    if job.display_name and job.display_name != job.ref.job_id:
        return api_text(f"{job.display_name} ({job.ref.job_id})", 200)
    return api_text(job.ref.job_id)


def condition_wording(name: ConditionName) -> str:
    """How a condition reads after "is": "stalled", "waiting too long"..."""
    return _TITLES[name]


def condition_notice(
    condition: Condition,
    job: JobSnapshot | None,
    *,
    resolved_at: datetime | None = None,
    api_label: str = "the Fireworks API",
) -> Notice:
    """A condition opening (or, with `resolved_at`, resolving) as a message."""
    fields = (*subject_fields(job, condition.subject), ("condition", str(condition.name)))
    if condition.name in _OWN:
        # The watcher's own trouble keeps the wording it has always had.
        if condition.name is ConditionName.API_DOWN:
            detail = condition.detail if resolved_at is None else "answering again"
            message = api_message(down=resolved_at is None, detail=detail, base_url=api_label)
        else:
            error = condition.detail if resolved_at is None else ""
            message = unreadable_message(condition.subject, error)
        state = (CONDITION_STATES if resolved_at is None else RESOLVED_STATES)[condition.name]
        kind = CONDITION if resolved_at is None else RESOLVED
        return Notice(condition.subject, message, state, kind, fields)
    name = _name(job, condition.subject)
    detail = api_text(condition.detail)
    if resolved_at is None:
        title = f"{name}: {_TITLES[condition.name]}: {one_line(detail, 120)}"
        body = f"**{name}** is {_TITLES[condition.name]}: {detail}."
        state = CONDITION_STATES[condition.name]
        kind = CONDITION
    else:
        lasted = format_duration((resolved_at - condition.opened_at).total_seconds())
        what = _TITLES[condition.name]
        title = f"{name}: no longer {what}"
        body = f"**{name}** is no longer {what} (it was for {lasted}: {detail})."
        if job is not None:
            body += f" Now {job.state}" + (f" at {job.progress}%." if job.progress else ".")
        state = RESOLVED_STATES.get(condition.name, RESOLVED_STATE)
        kind = RESOLVED
    return Notice(condition.subject, Message(api_text(title, 250), body), state, kind, fields)


def reminder_notice(
    subject: str,
    job: JobSnapshot | None,
    *,
    what: str,
    since: datetime,
    now: datetime,
    channel: str,
    condition: str = "",
) -> Notice:
    """ "still FAILED after 4h": a reminder to one channel of a state or an open condition."""
    name = _name(job, subject)
    lasted = format_duration((now - since).total_seconds())
    title = api_text(f"Reminder: {name} still {what} ({lasted})", 250)
    body = f"Reminder: **{name}** has been {api_text(what)} for {lasted}."
    if job is not None and job.status_message and not condition:
        body += f"\n\n> {api_text(job.status_message)}"
    fields = (*subject_fields(job, subject), ("condition", condition))
    return Notice(
        subject, Message(title, body), REMINDER_STATE, REMINDER, fields, frozenset({channel})
    )


def milestone_notice(
    job: JobSnapshot, *, milestone: int, eta: float | None, channels: frozenset[str]
) -> Notice:
    """ "my-sft reached 50% (ETA 1h 10m)"."""
    name = _name(job, job.ref.key)
    eta_text = f", ETA {format_duration(eta)}" if eta is not None else ""
    title = f"{name}: {milestone}% done{eta_text}"
    body = f"**{name}** has reached {api_text(job.progress)}% (milestone {milestone}%){eta_text}."
    fields = (*subject_fields(job, job.ref.key), ("milestone", str(milestone)))
    return Notice(
        job.ref.key,
        Message(api_text(title, 250), body),
        MILESTONE_STATE,
        MILESTONE,
        fields,
        channels,
    )


def api_condition(*, detail: str, opened_at: datetime) -> Condition:
    """The API-down condition."""
    return Condition(API_SUBJECT, ConditionName.API_DOWN, opened_at, detail)


def hears(channel: Channel, notice: Notice) -> bool:
    """Whether a channel hears a notice: named by it, or its job globs match the subject."""
    if notice.channels is not None:
        return channel.name in notice.channels
    return routes(channel, dict(notice.fields))


def routes(channel: Channel, fields: Mapping[str, str]) -> bool:
    """Whether a channel's job globs let through a notice with these subject fields."""
    # The watcher's own trouble (API down, cannot read) is every channel's business.
    if fields.get("condition") in _EVERYONES:
        return True
    job_id, name = fields.get("job_id", ""), fields.get("display_name", "")
    return names_match(channel.rules.job_globs, job_id, name)


def notice_entries(
    channels: Sequence[Channel], notice: Notice, event: Event, *, now: datetime
) -> list[OutboxEntry]:
    """One outbox row for every URL of every channel that hears the notice."""
    return [
        OutboxEntry(
            job_key=notice.job_key,
            channel=channel.name,
            url_key=target.url_key,
            url_display=target.url_display,
            title="",
            body="",
            old_state="",
            new_state=notice.new_state,
            created_at=now,
            event=event,
        )
        for channel in channels
        if hears(channel, notice)
        for target in channel.targets
    ]
