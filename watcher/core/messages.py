"""Turn a transition into a notification: the message fields and the title/body templates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from watcher.core.kinds import NOT_FOUND, UNSUSPENDED, JobKind, Meaning, meaning_of
from watcher.core.markdown import code_span
from watcher.core.model import JobSnapshot, Transition
from watcher.core.text import (
    cap,
    defuse_mentions,
    escape_markdown,
    one_line,
    web_link,
    without_userinfo,
)
from watcher.core.transitions import status_change

#: The names a channel's `title` and `body` templates may use, as `{job_id}`.
MESSAGE_FIELDS: tuple[str, ...] = (
    "job_id",
    "job_name",
    "display_name",
    "kind",
    "account_id",
    "old_state",
    "new_state",
    "status_code",
    "status_message",
    "base_model",
    "output_model",
    "dataset",
    "created_by",
    "create_time",
    "completed_time",
    "duration",
    "wandb_url",
    "console_url",
    "observed_at",
    "progress",
    "epoch",
    "update_time",
    "estimated_cost",
    "accelerator_seconds",
    "replica_count",
    "account_state",
    "model",
    "reason",
    "owner",
    "owner_mention",
)
#: Rendered per target when sent (`render_fields`'s `mention`): `<@U012ABCDEF>` for Slack,
#: the person's name elsewhere; stored as the bare owner.
OWNER_MENTION = "owner_mention"

_FIRST_SIGHT = "(first seen)"
_NEW_JOB = "(new job)"
_CONSOLE = "https://app.fireworks.ai/dashboard"
#: The outbox's states for messages about the API itself, not about one job.
API_DOWN = "API_UNREACHABLE"
API_UP = "API_REACHABLE"
#: The subject of an account's key-rejected condition is this prefix and the account id.
ACCOUNT_PREFIX = "account:"
#: Outbox states for messages about an account whose API key the API rejects (or again accepts).
KEY_REJECTED = "API_KEY_REJECTED"
KEY_ACCEPTED = "API_KEY_ACCEPTED"


#: Outbox states for messages about a resource the watcher cannot read (or can again).
UNREADABLE = "UNREADABLE"
READABLE = "READABLE"
#: Outbox states of the other notices (`core.notices`).
STALLED = "STALLED"
PENDING_TOO_LONG = "PENDING_TOO_LONG"
MAX_RUNTIME = "MAX_RUNTIME"
FLAPPING = "FLAPPING"
RESOLVED = "RESOLVED"
REMINDER = "REMINDER"
MILESTONE = "MILESTONE"
DIGEST = "DIGEST"

_OWN_STATES: dict[str, str] = {
    API_DOWN: "failure",
    UNREADABLE: "failure",
    KEY_REJECTED: "failure",
    API_UP: "success",
    KEY_ACCEPTED: "success",
    READABLE: "success",
    # Conditions, reminders and the rest (`core.notices`): a condition is a warning, its end
    # good news, a reminder a warning again; milestones and digests are information.
    STALLED: "warning",
    PENDING_TOO_LONG: "warning",
    MAX_RUNTIME: "warning",
    FLAPPING: "warning",
    RESOLVED: "success",
    REMINDER: "warning",
    MILESTONE: "info",
    DIGEST: "info",
}
#: A failure outcome that a person chose: a warning, not an alarm.
_WARNING_STATES = frozenset({"CANCELLED", "CANCELLING"})
_TONES: dict[Meaning, str] = {
    Meaning.SUCCESS: "success",
    Meaning.FAILURE: "failure",
    Meaning.TOMBSTONE: "failure",
    Meaning.ATTENTION: "warning",
    Meaning.ACTIVE: "info",
}


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered notification."""

    title: str
    body: str


def notify_type(new_state: str) -> str:
    """The apprise notification type for a new state: success, failure, warning or info."""
    if new_state in _OWN_STATES:
        return _OWN_STATES[new_state]
    if new_state in _WARNING_STATES:
        return "warning"
    return _TONES[meaning_of(new_state)]


def console_url(snapshot: JobSnapshot) -> str:
    """A link to the resource in the Fireworks web app (its list page where no per-resource
    URL form is known; the account's page is no dashboard page)."""
    path = snapshot.ref.kind.spec.console_path.format(id=snapshot.ref.job_id)
    return path if path.startswith("https://") else _CONSOLE + path


def format_duration(seconds: float) -> str:
    """`3725` -> `1h 02m 05s`; the empty string for a negative duration."""
    if seconds < 0:
        return ""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def iso_time(value: datetime | None) -> str | None:
    """A time as RFC 3339 in UTC to the second (`2026-12-02T10:33:48+00:00`), None for None:
    the form every JSON document of the watcher gives."""
    return None if value is None else value.astimezone(UTC).isoformat(timespec="seconds")


def api_time(value: str) -> datetime | None:
    """An RFC 3339 time from the API as an aware datetime (UTC when it names no zone), or
    None when it is empty or not a time."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def job_duration(snapshot: JobSnapshot, observed_at: datetime) -> str:
    """How long the job has run: creation to completion, or to now while it is active.

    In an outcome, the end is `completedTime`, else `updateTime` (batch and evaluation jobs
    have no completedTime); with neither the duration is unknown rather than growing.
    """
    started = api_time(snapshot.create_time)
    if started is None:
        return ""
    if snapshot.meaning in (Meaning.ACTIVE, Meaning.ATTENTION):
        ended: datetime | None = observed_at
    else:
        ended = api_time(snapshot.completed_time) or api_time(snapshot.update_time)
    return format_duration((ended - started).total_seconds()) if ended is not None else ""


def message_fields(transition: Transition) -> dict[str, str]:
    """Every field a template may use, as strings ("" when unknown)."""
    job = transition.new
    return {
        "job_id": job.ref.job_id,
        "job_name": job.name,
        "display_name": job.display_name or job.ref.job_id,
        "kind": str(job.ref.kind),
        "account_id": job.account_id,
        "old_state": transition.old_state,
        "new_state": transition.new_state,
        "status_code": job.status_code,
        "status_message": job.status_message,
        "base_model": job.base_model,
        "output_model": job.output_model,
        "dataset": job.dataset,
        "created_by": job.created_by,
        "create_time": job.create_time,
        "completed_time": job.completed_time,
        "duration": job_duration(job, transition.observed_at),
        "wandb_url": web_link(job.wandb_url) or "",
        "console_url": console_url(job),
        "observed_at": transition.observed_at.astimezone(UTC).isoformat(timespec="seconds"),
        "progress": f"{job.progress}%" if job.progress else "",
        "epoch": job.epoch,
        "update_time": job.update_time,
        "estimated_cost": job.estimated_cost,
        "accelerator_seconds": job.accelerator_seconds,
        "replica_count": job.replica_count,
        "account_state": job.account_state,
        "model": job.model,
        "reason": job.reason,
        "owner": job.owner,
        OWNER_MENTION: job.owner,
    }


#: A title's reason is cut to this many characters: a phone push shows only the title.
TITLE_REASON = 80


def default_title(fields: Mapping[str, str], *, first: str = _FIRST_SIGHT) -> str:
    """`my-job: RUNNING → FAILED`, with the display name when it differs from the id; a
    change of status within one state is `my-job: status changed: NCCL timeout again`.

    A failure carries its short reason (the ErrorInfo reason, else the status message). The
    title is plain text: where a service reads it as Markdown, the sender escapes it.
    """
    if fields["kind"] == JobKind.ACCOUNT and (title := account_title(fields)) is not None:
        return title
    name = fields["job_id"]
    if fields["display_name"] != name:
        name = f"{fields['display_name']} ({name})"
    if _status_only(fields):
        return f"{name}: {status_change(fields['status_code'], fields['status_message'])}"
    old = fields["old_state"] or first
    title = f"{name}: {old} → {fields['new_state']}"
    reason = fields["reason"] or fields["status_message"]
    if reason and notify_type(fields["new_state"]) == "failure":
        title += f": {one_line(reason, TITLE_REASON)}"
    return title


def _status_only(fields: Mapping[str, str]) -> bool:
    """A transition that changed the status code or message, not the state."""
    return bool(fields["old_state"]) and fields["old_state"] == fields["new_state"]


def default_body(
    fields: Mapping[str, str], kind: JobKind | None, *, first: str = _FIRST_SIGHT
) -> str:
    """A Markdown body: the move, the status message when there is one, then the job's details.

    `fields` are as Markdown (`field_values(markdown=True)`): each line stays one line
    whatever the API said, and the status message is quoted line by line.
    """
    old = fields["old_state"] or first
    label = kind.spec.label if kind is not None else "resource"
    job = f"**{one_line(fields['display_name'])}** ({label} {code_span(fields['job_id'])})"
    new = one_line(fields["new_state"])
    if _status_only(fields):
        lines = [f"{job} status changed, still **{new}**."]
    elif kind is JobKind.ACCOUNT and (said := account_move(fields)) is not None:
        lines = [f"{job} {said}"]
    else:
        lines = [f"{job} moved **{one_line(old)} → {new}**."]
    if fields["status_message"]:
        code = one_line(fields["status_code"])
        said = f"{code + ': ' if code and code != 'OK' else ''}{fields['status_message']}"
        lines += ["", *(f"> {line}" for line in said.splitlines() if line.strip())]
    details = [
        ("Reason", fields["reason"]),
        ("Progress", fields["progress"]),
        ("Epoch", fields["epoch"]),
        ("Model", fields["model"] if fields["model"] != fields["base_model"] else ""),
        ("Base model", fields["base_model"]),
        ("Output model", fields["output_model"]),
        ("Dataset", fields["dataset"]),
        ("Replicas", fields["replica_count"]),
        ("Account state", fields["account_state"]),
        ("Estimated cost", fields["estimated_cost"]),
        ("Accelerator time", _seconds(fields["accelerator_seconds"])),
        ("Owner", fields["owner"] or fields["created_by"]),
        ("Duration", fields["duration"]),
        ("W&B run", fields["wandb_url"]),
        ("Console", fields["console_url"]),
    ]
    lines.append("")
    lines += [f"- {label}: {one_line(value)}" for label, value in details if value]
    return "\n".join(lines)


def _suspension(fields: Mapping[str, str]) -> tuple[str, str] | None:
    """(old, new) suspend states of an account's move between UNSUSPENDED and a suspension
    (or between two), "" for a first sight; None for any other move (a 404, say)."""
    old, new = fields["old_state"], fields["new_state"]
    if NOT_FOUND in (old, new) or (new == UNSUSPENDED and old in ("", UNSUSPENDED)):
        return None
    return old, new


def account_title(fields: Mapping[str, str]) -> str | None:
    """`account acme-prod suspended (CREDIT_DEPLETED)`, `account acme-prod no longer suspended
    (was CREDIT_DEPLETED)`; None where the generic title says it (a 404, a status change)."""
    moved = _suspension(fields) if not _status_only(fields) else None
    if moved is None:
        return None
    old, new = moved
    name = f"account {fields['job_id']}"
    if new == UNSUSPENDED:
        return f"{name} no longer suspended (was {old})"
    was = f", was {old}" if old not in ("", UNSUSPENDED) else ""
    title = f"{name} suspended ({new}{was})"
    if fields["status_message"]:
        title += f": {one_line(fields['status_message'], TITLE_REASON)}"
    return title


def account_move(fields: Mapping[str, str]) -> str | None:
    """The body's first sentence for an account's suspension or its end (Markdown fields)."""
    moved = _suspension(fields)
    if moved is None:
        return None
    old, new = (one_line(state) for state in moved)
    if new == UNSUSPENDED:
        return f"is no longer suspended (was **{old}**): its jobs can run again."
    was = f" (was {old})" if old not in ("", UNSUSPENDED) else ""
    return (
        f"is suspended: **{new}**{was}. Its jobs cannot run until this is resolved; "
        "running ones may be paused."
    )


def _seconds(text: str) -> str:
    try:
        return format_duration(float(text)) if text else ""
    except ValueError:
        return ""


#: The event field (beside MESSAGE_FIELDS) that says a first sighting is a job created since.
NEW_JOB_FIELD = "new_job"


def event_fields(transition: Transition) -> dict[str, str]:
    """What an event keeps of a transition: its message fields as of the observation (so
    `duration` never grows), and whether it is a newly created job."""
    return message_fields(transition) | {NEW_JOB_FIELD: "1" if transition.new_job else ""}


def render(transition: Transition, *, title: str | None = None, body: str | None = None) -> Message:
    """Render a transition with a channel's templates, or the defaults where it has none."""
    return render_fields(event_fields(transition), title=title, body=body)


#: Bounds of a rendered message. A field is cut first (the event keeps its whole text), then
#: the title and body; apprise's `overflow` then fits them to each service's own limits.
FIELD_LIMIT = 2000
TITLE_LIMIT = 250
BODY_LIMIT = 10_000


def api_text(text: str, limit: int = FIELD_LIMIT) -> str:
    """Text from the API as a plain-text title carries it: cut to `limit`, mentions defused."""
    return cap(defuse_mentions(text), limit)


def api_markdown(text: str, limit: int = FIELD_LIMIT) -> str:
    """Text that came from the API, as a Markdown body may carry it: mentions defused, escaped
    so that it renders as itself (no tag, link or image: `escape_markdown`), cut to `limit`."""
    return escape_markdown(defuse_mentions(text), limit)


#: Fields holding a link: sent only when http(s) (`web_link`), never escaped (percent-encoded).
LINK_FIELDS: tuple[str, ...] = ("wandb_url", "console_url")


def field_values(fields: Mapping[str, str], *, markdown: bool) -> dict[str, str]:
    """Every message field as a template gets it: for a Markdown body `api_markdown`, for a
    title `api_text`; a link only when it is http(s), as one link whatever reads it."""
    text = api_markdown if markdown else api_text
    values = {name: text(fields.get(name, "")) for name in MESSAGE_FIELDS}
    links = {name: web_link(cap(fields.get(name, ""), FIELD_LIMIT)) for name in LINK_FIELDS}
    return values | {name: link or "" for name, link in links.items()}


def render_fields(
    fields: Mapping[str, str],
    *,
    title: str | None = None,
    body: str | None = None,
    mention: str | None = None,
) -> Message:
    """Render a stored event's fields with a channel's templates, or the defaults.

    Templates are validated against `MESSAGE_FIELDS` when the config is loaded; a field an
    older event lacks renders as "". Every field value comes from the API (or is derived from
    it), so each is cut and has its mentions defused, and in the body (Markdown) escaped; a
    link is kept only when it is http(s). The channel's own template text is not touched, nor
    is `mention`: the owner's mention from the people directory (`core.people`), the user's
    own text, which becomes `{owner_mention}` as it is (None: the stored bare owner, as API
    text).
    """
    plain, markdown = field_values(fields, markdown=False), field_values(fields, markdown=True)
    if mention is not None:
        plain[OWNER_MENTION] = markdown[OWNER_MENTION] = mention
    first = _NEW_JOB if fields.get(NEW_JOB_FIELD) else _FIRST_SIGHT
    kind = JobKind(plain["kind"]) if plain["kind"] in _KINDS else None
    return Message(
        title=cap(
            title.format_map(plain) if title is not None else default_title(plain, first=first),
            TITLE_LIMIT,
        ),
        body=cap(
            body.format_map(markdown)
            if body is not None
            else default_body(markdown, kind, first=first),
            BODY_LIMIT,
        ),
    )


_KINDS = frozenset(kind.value for kind in JobKind)


def target_label(target: str) -> str:
    """`sft/x` as it is; `list:sft` (a LIST standing in for polls) -> `the sft list`;
    `account:acme` (a rejected key's subject) -> `account acme`."""
    if target.startswith("list:"):
        return f"the {target.split(':')[1]} list"
    if target.startswith(ACCOUNT_PREFIX):
        return f"account {target.removeprefix(ACCOUNT_PREFIX)}"
    return target


def unreadable_message(target: str, error: str) -> Message:
    """The one message every channel gets when a resource cannot be read ("" error: again)."""
    label = api_text(target_label(target))
    shown = escape_markdown(label)
    if error:
        return Message(
            title=api_text(f"cannot read {label}: {_short(error)}", TITLE_LIMIT),
            body=f"fireworks-watcher cannot read {shown}: {api_markdown(error)}. Its transitions "
            "are not being seen; they will be reported once it can be read again.",
        )
    return Message(
        title=f"{label} is readable again",
        body=f"fireworks-watcher reads {shown} again. Transitions that happened meanwhile "
        "follow in their own messages.",
    )


def _short(error: str, limit: int = 120) -> str:
    # "GET /v1/accounts/a/x/y: HTTP 400 ...": the request line is in the body; the title
    # keeps what the API said, cut for a phone's notification.
    _, sep, rest = error.partition(": ")
    return one_line(rest if sep and error.startswith("GET ") else error, limit)


def api_message(*, down: bool, detail: str, base_url: str) -> Message:
    """The one message every channel gets when the API becomes unreachable, or comes back.

    `base_url` is shown without its user and password (an authenticating proxy's)."""
    base_url = escape_markdown(without_userinfo(base_url))
    detail = api_markdown(detail)
    if down:
        return Message(
            title="Fireworks API unreachable",
            body=f"fireworks-watcher cannot reach {base_url}: {detail}. Job transitions are "
            "not being seen; they will be reported once the API answers again.",
        )
    return Message(
        title="Fireworks API reachable again",
        body=f"fireworks-watcher reaches {base_url} again ({detail}). Transitions that "
        "happened meanwhile follow in their own messages.",
    )
