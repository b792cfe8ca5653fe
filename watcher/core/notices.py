"""Messages that are not one transition: conditions opening and resolving, reminders,
progress milestones, and the notices about the watcher itself. Pure.

A `Notice` is rendered when it is decided (its title and body are stored with its event);
channel templates apply to transitions only. Each notice names its subject's job id,
display name, kind and state in its event fields, so silences and the history can match it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from watcher.core import messages
from watcher.core.conditions import API_SUBJECT, Condition, ConditionName, subject_account
from watcher.core.delivery import Channel, Event, OutboxEntry
from watcher.core.messages import (
    Message,
    api_markdown,
    api_message,
    api_text,
    format_duration,
    target_label,
    unreadable_message,
)
from watcher.core.model import JobSnapshot
from watcher.core.owners import first_owner
from watcher.core.rules import Subject, matches
from watcher.core.text import escape_markdown, one_line, without_userinfo
from watcher.core.url_fields import channel_rows

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
    ConditionName.FLAPPING: messages.FLAPPING,
    ConditionName.UNREADABLE: messages.UNREADABLE,
    ConditionName.API_DOWN: messages.API_DOWN,
    ConditionName.KEY_REJECTED: messages.KEY_REJECTED,
}
#: The outbox `new_state` of a condition that resolved (the watcher's own keep their own).
RESOLVED_STATES: Final = {
    ConditionName.UNREADABLE: messages.READABLE,
    ConditionName.API_DOWN: messages.API_UP,
    ConditionName.KEY_REJECTED: messages.KEY_ACCEPTED,
}
RESOLVED_STATE: Final = messages.RESOLVED
REMINDER_STATE: Final = messages.REMINDER
MILESTONE_STATE: Final = messages.MILESTONE
DIGEST_STATE: Final = messages.DIGEST

_TITLES: Final = {
    ConditionName.STALLED: "stalled",
    ConditionName.PENDING: "waiting too long",
    ConditionName.MAX_RUNTIME: "running too long",
    ConditionName.FLAPPING: "flapping",
    ConditionName.UNREADABLE: "unreadable",
    ConditionName.API_DOWN: "unreachable",
    ConditionName.KEY_REJECTED: "with its API key rejected",
}
#: The watcher's own trouble: every channel's business, each with a message of its own.
_OWN: Final = frozenset(
    {ConditionName.UNREADABLE, ConditionName.API_DOWN, ConditionName.KEY_REJECTED}
)
_EVERYONES: Final = frozenset(name.value for name in _OWN)


@dataclass(frozen=True, slots=True)
class Notice:
    """A rendered message about one subject for the channels that hear it.

    Attributes:
        job_key: the outbox job key (its rows keep their order with the job's transitions).
        message: title and body.
        new_state: the outbox state (it sets the apprise tone).
        kind: the event kind.
        fields: subject fields for rules, silences and the history (`job_id`,
            `display_name`, `kind`, `job_state`, `owner`, `account_id`, `condition`).
        channels: the channel names that hear it; None means every channel whose rule
            lets its subject through (`hears`).
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
    """The fields that let rules, silences and the history match a notice about `subject`
    (`rules.Subject.of_fields` reads them)."""
    if job is None:
        kind, _, job_id = subject.partition("/")
        return (
            ("job_id", job_id or subject),
            ("display_name", ""),
            ("kind", kind),
            ("job_state", ""),
            ("owner", ""),
            ("account_id", ""),
        )
    return (
        ("job_id", job.ref.job_id),
        ("display_name", job.display_name),
        ("kind", str(job.ref.kind)),
        ("job_state", job.state),
        ("owner", first_owner(job)),
        ("account_id", job.account_id),
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
        elif condition.name is ConditionName.KEY_REJECTED:
            message = key_message(condition, rejected=resolved_at is None, base_url=api_label)
        else:
            error = condition.detail if resolved_at is None else ""
            message = unreadable_message(condition.subject, error)
        state = (CONDITION_STATES if resolved_at is None else RESOLVED_STATES)[condition.name]
        kind = CONDITION if resolved_at is None else RESOLVED
        return Notice(condition.subject, message, state, kind, fields)
    name = _name(job, condition.subject)
    detail = api_text(condition.detail)
    # Titles are plain text; the API's text in a body (Markdown) is escaped.
    shown, said = escape_markdown(name), escape_markdown(detail)
    if resolved_at is None:
        title = f"{name}: {_TITLES[condition.name]}: {one_line(detail, 120)}"
        body = f"**{shown}** is {_TITLES[condition.name]}: {said}."
        if condition.name is ConditionName.FLAPPING:
            body += (
                " Its transitions are recorded but not sent until it stays in one state; "
                "outcomes are always sent."
            )
        state = CONDITION_STATES[condition.name]
        kind = CONDITION
    elif condition.name is ConditionName.FLAPPING:
        lasted = format_duration((resolved_at - condition.opened_at).total_seconds())
        state_name = job.state if job is not None else "its state"
        title = f"{name}: stable again in {state_name}"
        body = (
            f"**{shown}** is stable again in {api_markdown(state_name)}; its transitions are "
            f"sent again (it was flapping for {lasted}: {said})."
        )
        state, kind = RESOLVED_STATE, RESOLVED
    else:
        lasted = format_duration((resolved_at - condition.opened_at).total_seconds())
        what = _TITLES[condition.name]
        title = f"{name}: no longer {what}"
        body = f"**{shown}** is no longer {what} (it was for {lasted}: {said})."
        if job is not None:
            progress = f" at {api_markdown(job.progress)}%." if job.progress else "."
            body += f" Now {api_markdown(job.state)}{progress}"
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
    body = f"Reminder: **{escape_markdown(name)}** has been {api_markdown(what)} for {lasted}."
    if job is not None and job.status_message and not condition:
        body += f"\n\n> {api_markdown(job.status_message)}"
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
    reached = f"{api_markdown(job.progress)}% (milestone {milestone}%){eta_text}"
    body = f"**{escape_markdown(name)}** has reached {reached}."
    fields = (*subject_fields(job, job.ref.key), ("milestone", str(milestone)))
    return Notice(
        job.ref.key,
        Message(api_text(title, 250), body),
        MILESTONE_STATE,
        MILESTONE,
        fields,
        channels,
    )


def key_message(condition: Condition, *, rejected: bool, base_url: str) -> Message:
    """The one message every channel gets when the API rejects an account's key, or accepts
    it again. The key itself is never in it: the detail is what the API answered."""
    account = api_text(subject_account(condition.subject) or condition.subject, 200)
    if rejected:
        return Message(
            title=key_headline(condition),
            body=f"{without_userinfo(base_url)} rejects the API key fireworks-watcher uses for "
            f"account **{escape_markdown(account)}**: {api_markdown(condition.detail)}. No job "
            "of this account is being seen; they will be reported once the key is accepted "
            "(check FIREWORKS_API_KEY or `api_key_file`).",
        )
    return Message(
        title=f"Fireworks accepts the API key for account {account} again",
        body=f"fireworks-watcher reads account **{escape_markdown(account)}** again. "
        "Transitions that happened meanwhile follow in their own messages.",
    )


def key_headline(condition: Condition) -> str:
    """ "Fireworks rejects the API key for account acme": the one line `status` starts with,
    the page's header and the notification's title say."""
    account = api_text(subject_account(condition.subject) or condition.subject, 200)
    return f"Fireworks rejects the API key for account {account}"


def key_rejections(conditions: Iterable[Condition]) -> list[Condition]:
    """The open key-rejected conditions among `conditions`, by account."""
    found = [c for c in conditions if c.name is ConditionName.KEY_REJECTED]
    return sorted(found, key=lambda c: c.subject)


def api_condition(*, detail: str, opened_at: datetime) -> Condition:
    """The API-down condition."""
    return Condition(API_SUBJECT, ConditionName.API_DOWN, opened_at, detail)


def hears(channel: Channel, notice: Notice) -> bool:
    """Whether a channel hears a notice: one naming its channels goes to them; the watcher's
    own trouble goes to every channel; any other when the channel's rule, its states aside,
    lets the notice's subject through."""
    if notice.channels is not None:
        return channel.name in notice.channels
    fields = dict(notice.fields)
    return everyones(fields.get("condition", "")) or matches(
        channel.rule.any_state(), Subject.of_fields(fields)
    )


def everyones(condition: str) -> bool:
    """The watcher's own trouble (the API down, a resource it cannot read, its key rejected)
    is every channel's business, whatever the channel's rule."""
    return condition in _EVERYONES


def notice_entries(
    channels: Sequence[Channel], notice: Notice, event: Event, *, now: datetime
) -> list[OutboxEntry]:
    """One outbox row for every URL of every channel that hears the notice (a templated
    URL's for the notice's subject fields: `core.url_fields`)."""
    return [
        row
        for channel in channels
        if hears(channel, notice)
        for row in channel_rows(
            channel,
            event,
            job_key=notice.job_key,
            old_state="",
            new_state=notice.new_state,
            created_at=now,
        )
    ]
