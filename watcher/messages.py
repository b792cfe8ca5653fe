"""Turn a transition into a notification: the message fields and the title/body templates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from watcher.model import JobKind, JobSnapshot, Transition

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
)

_FIRST_SIGHT = "(first seen)"
_NEW_JOB = "(new job)"
_FAILURE_STATES = frozenset(
    {"FAILED", "EXPIRED", "NOT_FOUND", "DELETED", "ARCHIVED", "API_UNREACHABLE"}
)
_SUCCESS_STATES = frozenset({"COMPLETED", "EARLY_STOPPED", "API_REACHABLE"})
_WARNING_STATES = frozenset({"CANCELLED", "CANCELLING", "PAUSED"})
_CONSOLE = "https://app.fireworks.ai/dashboard"
# Per-job console pages exist only for SFT and RFT; the others link the fine-tuning list.
_CONSOLE_PATHS: dict[JobKind, str] = {
    JobKind.SFT: "/fine-tuning/supervised/{job_id}",
    JobKind.RFT: "/fine-tuning/reinforcement/{job_id}",
}
_KIND_LABELS: dict[JobKind, str] = {
    JobKind.DPO: "DPO",
    JobKind.SFT: "SFT",
    JobKind.RFT: "RFT",
    JobKind.BATCH_INFERENCE: "batch inference",
    JobKind.EVALUATION: "evaluation",
}


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered notification."""

    title: str
    body: str


def notify_type(new_state: str) -> str:
    """The apprise notification type for a new state: success, failure, warning or info."""
    if new_state in _SUCCESS_STATES:
        return "success"
    if new_state in _FAILURE_STATES:
        return "failure"
    if new_state in _WARNING_STATES:
        return "warning"
    return "info"


def console_url(snapshot: JobSnapshot) -> str:
    """A link to the job in the Fireworks web app (the list page where no per-job page exists)."""
    path = _CONSOLE_PATHS.get(snapshot.ref.kind, "/fine-tuning")
    return _CONSOLE + path.format(job_id=snapshot.ref.job_id)


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


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def job_duration(snapshot: JobSnapshot, observed_at: datetime) -> str:
    """How long the job has run: creation to completion, or to now while it has no completion time."""
    started = _parse_time(snapshot.create_time)
    if started is None:
        return ""
    ended = _parse_time(snapshot.completed_time) or observed_at
    return format_duration((ended - started).total_seconds())


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
        "wandb_url": job.wandb_url,
        "console_url": console_url(job),
        "observed_at": transition.observed_at.astimezone(UTC).isoformat(timespec="seconds"),
    }


def default_title(fields: Mapping[str, str], *, first: str = _FIRST_SIGHT) -> str:
    """`my-job: RUNNING → FAILED`, with the display name when it differs from the id."""
    name = fields["job_id"]
    if fields["display_name"] != name:
        name = f"{fields['display_name']} ({name})"
    old = fields["old_state"] or first
    return f"{name}: {old} → {fields['new_state']}"


def default_body(fields: Mapping[str, str], kind: JobKind, *, first: str = _FIRST_SIGHT) -> str:
    """A Markdown body: the move, the status message when there is one, then the job's details."""
    old = fields["old_state"] or first
    job = f"**{fields['display_name']}** ({_KIND_LABELS[kind]} job `{fields['job_id']}`)"
    lines = [f"{job} moved **{old} → {fields['new_state']}**."]
    if fields["status_message"]:
        code = fields["status_code"]
        lines += ["", f"> {code + ': ' if code and code != 'OK' else ''}{fields['status_message']}"]
    details = [
        ("Base model", fields["base_model"]),
        ("Output model", fields["output_model"]),
        ("Dataset", fields["dataset"]),
        ("Created by", fields["created_by"]),
        ("Duration", fields["duration"]),
        ("W&B run", fields["wandb_url"]),
        ("Console", fields["console_url"]),
    ]
    lines.append("")
    lines += [f"- {label}: {value}" for label, value in details if value]
    return "\n".join(lines)


def render(transition: Transition, *, title: str | None = None, body: str | None = None) -> Message:
    """Render a transition with a channel's templates, or the defaults where it has none.

    Templates are validated against `MESSAGE_FIELDS` when the config is loaded.
    """
    fields = message_fields(transition)
    first = _NEW_JOB if transition.new_job else _FIRST_SIGHT
    return Message(
        title=title.format_map(fields) if title is not None else default_title(fields, first=first),
        body=body.format_map(fields)
        if body is not None
        else default_body(fields, transition.new.ref.kind, first=first),
    )


#: The outbox's job key and states for messages about the API itself, not about one job.
API_JOB_KEY = "api"
API_DOWN = "API_UNREACHABLE"
API_UP = "API_REACHABLE"


def api_message(*, down: bool, detail: str, base_url: str) -> Message:
    """The one message every channel gets when the API becomes unreachable, or comes back."""
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
