"""Rendering transitions into notifications."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watcher.core.messages import (
    MESSAGE_FIELDS,
    console_url,
    format_duration,
    message_fields,
    notify_type,
    render,
)
from watcher.core.model import JobKind, JobRef, JobSnapshot, Transition

AT = datetime(2026, 11, 27, 13, 2, 5, tzinfo=UTC)


def moved(old: str | None, new: str, *, kind: JobKind = JobKind.DPO, **details: str) -> Transition:
    ref = JobRef(kind, "my-job")
    before = None if old is None else JobSnapshot(ref=ref, account_id="acme", state=old)
    after = JobSnapshot(ref=ref, account_id="acme", state=new, **details)
    return Transition(old=before, new=after, observed_at=AT)


def test_fields_cover_the_contract() -> None:
    """Every field the design promises to templates is filled in, and no other."""
    fields = message_fields(moved("RUNNING", "COMPLETED"))

    assert set(MESSAGE_FIELDS) == set(fields)


def test_default_message_names_the_move_and_the_reason() -> None:
    """A failure's title names the job and both states; its body carries the status message."""
    message = render(
        moved(
            "RUNNING",
            "FAILED",
            status_code="INTERNAL",
            status_message="CUDA out of memory at step 412",
            display_name="Big run",
            create_time="2026-11-27T12:00:00Z",
            completed_time="2026-11-27T13:02:05Z",
            wandb_url="https://wandb.ai/acme/p/runs/1",
        )
    )

    assert "Big run (my-job): RUNNING → FAILED: CUDA out of memory at step 412" == message.title
    assert "INTERNAL: CUDA out of memory at step 412" in message.body
    assert "**RUNNING → FAILED**" in message.body
    assert "Duration: 1h 02m 05s" in message.body
    assert "W&B run: https://wandb.ai/acme/p/runs/1" in message.body


def test_default_message_without_status_message() -> None:
    """No status line appears when the job has no status message."""
    message = render(moved("PENDING", "RUNNING", status_code="OK"))

    assert "my-job: PENDING → RUNNING" == message.title
    assert ">" not in message.body


def test_first_sight_reads_naturally() -> None:
    """A first sighting (notify_initial) says so instead of showing an empty old state."""
    assert "my-job: (first seen) → RUNNING" == render(moved(None, "RUNNING")).title


def test_templates_use_the_fields() -> None:
    """A channel's own templates are filled from the message fields."""
    message = render(
        moved("RUNNING", "COMPLETED", output_model="accounts/acme/models/out"),
        title="{job_id} is {new_state}",
        body="{output_model} ({old_state}) {kind}",
    )

    assert "my-job is COMPLETED" == message.title
    assert "accounts/acme/models/out (RUNNING) dpo" == message.body


def test_duration_runs_to_completion_time() -> None:
    """A finished job's duration ends at its completion time, not at the observation."""
    fields = message_fields(
        moved(
            "RUNNING",
            "COMPLETED",
            create_time="2026-11-27T10:00:00Z",
            completed_time="2026-11-27T10:30:00Z",
        )
    )

    assert "30m 00s" == fields["duration"]


def test_bad_times_give_no_duration() -> None:
    """An unparseable creation time leaves the duration empty instead of failing."""
    assert "" == message_fields(moved("A", "B", create_time="yesterday"))["duration"]


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(5, "5s"), (65, "1m 05s"), (3725, "1h 02m 05s"), (90061, "1d 01h 01m"), (-1, "")],
)
def test_format_duration(seconds: float, expected: str) -> None:
    """Durations read like a person would write them."""
    assert expected == format_duration(seconds)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("COMPLETED", "success"),
        ("FAILED", "failure"),
        ("NOT_FOUND", "failure"),
        ("CANCELLED", "warning"),
        ("RUNNING", "info"),
        ("BRAND_NEW", "info"),
        ("READY", "success"),
        ("ACTIVE", "success"),
        ("DEPLOYED", "success"),
        ("BUILD_FAILED", "failure"),
        ("DELETED", "failure"),
        ("PAUSED", "warning"),
        ("UNREADABLE", "failure"),
        ("READABLE", "success"),
        ("API_UNREACHABLE", "failure"),
    ],
)
def test_notify_type(state: str, expected: str) -> None:
    """Outcomes map to apprise's success, failure and warning types."""
    assert expected == notify_type(state)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (JobKind.SFT, "https://app.fireworks.ai/dashboard/fine-tuning/supervised/my-job"),
        (JobKind.RFT, "https://app.fireworks.ai/dashboard/fine-tuning/reinforcement/my-job"),
        (JobKind.DPO, "https://app.fireworks.ai/dashboard/fine-tuning"),
        (JobKind.DEPLOYMENT, "https://app.fireworks.ai/dashboard/deployments"),
        (JobKind.DATASET, "https://app.fireworks.ai/dashboard/datasets"),
    ],
)
def test_console_url(kind: JobKind, expected: str) -> None:
    """SFT and RFT link their job page; kinds without a documented page link the list."""
    assert expected == console_url(moved("A", "B", kind=kind).new)


@pytest.mark.parametrize(
    ("kind", "new", "details", "expected"),
    [
        pytest.param(
            JobKind.BATCH_INFERENCE,
            "COMPLETED",
            {"create_time": "2026-11-27T10:00:00Z", "update_time": "2026-11-27T10:45:00Z"},
            "45m 00s",
            id="outcome without completedTime ends at updateTime",
        ),
        pytest.param(
            JobKind.EVALUATION,
            "FAILED",
            {"create_time": "2026-11-27T10:00:00Z"},
            "",
            id="outcome without any end time is unknown, never growing",
        ),
        pytest.param(
            JobKind.SFT,
            "RUNNING",
            {"create_time": "2026-11-27T12:00:00Z", "update_time": "2026-11-27T12:01:00Z"},
            "1h 02m 05s",
            id="active runs to now",
        ),
        pytest.param(
            JobKind.RFT,
            "PAUSED",
            {"create_time": "2026-11-27T13:00:00Z"},
            "2m 05s",
            id="paused still counts",
        ),
    ],
)
def test_duration_stops_at_an_outcome(
    kind: JobKind, new: str, details: dict[str, str], expected: str
) -> None:
    """`duration` uses completedTime, else updateTime in an outcome; it grows only while active."""
    assert expected == message_fields(moved("RUNNING", new, kind=kind, **details))["duration"]


def test_kind_fields_reach_templates_and_the_default_body() -> None:
    """Progress, cost, replicas, model and reason fill their fields and the default body."""
    transition = moved(
        "UPDATING",
        "FAILED",
        kind=JobKind.DEPLOYMENT,
        model="accounts/acme/models/m",
        replica_count="3",
        reason="QUOTA_EXCEEDED",
        status_message="not enough H100s in us-iowa-1 to scale up",
        progress="",
    )
    fields = message_fields(transition)
    message = render(transition)

    assert ("3", "accounts/acme/models/m", "QUOTA_EXCEEDED", "") == (
        fields["replica_count"],
        fields["model"],
        fields["reason"],
        fields["progress"],
    )
    assert "my-job: UPDATING → FAILED: QUOTA_EXCEEDED" == message.title
    assert "(deployment `my-job`)" in message.body
    assert "- Replicas: 3" in message.body
    assert "- Model: accounts/acme/models/m" in message.body
    sft = render(
        moved("RUNNING", "RUNNING", kind=JobKind.SFT, progress="42", estimated_cost="USD 12.50"),
        title="{job_id} {progress} {estimated_cost}",
    )
    assert "my-job 42% USD 12.50" == sft.title
    assert "- Progress: 42%" in render(moved("A", "RUNNING", kind=JobKind.SFT, progress="42")).body


def test_long_failure_reasons_are_cut_in_the_title() -> None:
    """A title's reason is cut so a phone push still shows the job and the move."""
    title = render(moved("RUNNING", "FAILED", status_message="x" * 500)).title

    assert title.startswith("my-job: RUNNING → FAILED: xxx")
    assert title.endswith("…")
    assert len("my-job: RUNNING → FAILED: ") + 80 == len(title)


def test_a_success_title_carries_no_reason() -> None:
    """Only failures put the status message into the title."""
    assert (
        "my-job: RUNNING → COMPLETED"
        == render(moved("RUNNING", "COMPLETED", status_message="all good")).title
    )
