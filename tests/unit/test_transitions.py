"""The diff and the channel rules: pure, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watcher.core.decide import outbox_entries, transition_event
from watcher.core.delivery import Channel, ChannelPolicy, Target
from watcher.core.model import JobKind, JobRef, JobSnapshot, Transition
from watcher.core.rules import Rule
from watcher.core.transitions import diff, merge

AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
_T = (Target("k", "json://x"),)
REF = JobRef(JobKind.DPO, "my-job")


def snap(state: str, code: str = "OK", message: str = "", **details: str) -> JobSnapshot:
    return JobSnapshot(
        ref=REF, account_id="acme", state=state, status_code=code, status_message=message, **details
    )


@pytest.mark.parametrize(
    ("last", "observed", "expected_old_state"),
    [
        pytest.param(snap("PENDING"), snap("RUNNING"), "PENDING", id="pending->running"),
        pytest.param(snap("RUNNING"), snap("COMPLETED"), "RUNNING", id="running->completed"),
        pytest.param(
            snap("RUNNING"),
            snap("FAILED", "INTERNAL", "CUDA out of memory"),
            "RUNNING",
            id="running->failed with reason",
        ),
        pytest.param(
            snap("RUNNING"), snap("RUNNING", "OK", "resharding"), "RUNNING", id="status message"
        ),
        pytest.param(
            snap("RUNNING", "OK"), snap("RUNNING", "UNAVAILABLE"), "RUNNING", id="status code"
        ),
        pytest.param(snap("RUNNING"), snap("SOMETHING_NEW"), "RUNNING", id="unknown state"),
        pytest.param(snap("COMPLETED"), snap("RUNNING"), "COMPLETED", id="resumed after outcome"),
        pytest.param(snap("FAILED"), snap("RUNNING"), "FAILED", id="resumed after failure"),
        pytest.param(snap("RUNNING"), snap("NOT_FOUND", ""), "RUNNING", id="vanished"),
        pytest.param(snap("RUNNING"), snap("DELETED"), "RUNNING", id="deleted"),
        pytest.param(None, snap("RUNNING"), "", id="first sight"),
    ],
)
def test_diff_reports_changes(
    last: JobSnapshot | None, observed: JobSnapshot, expected_old_state: str
) -> None:
    """Every change of state or status, and a first sighting, is a transition."""
    transition = diff(last, observed, at=AT)

    assert transition is not None
    assert expected_old_state == transition.old_state
    assert observed.state == transition.new_state
    assert AT == transition.observed_at


@pytest.mark.parametrize(
    ("last", "observed"),
    [
        pytest.param(snap("RUNNING"), snap("RUNNING"), id="same"),
        pytest.param(snap("RUNNING"), snap("RUNNING", display_name="renamed"), id="details only"),
        pytest.param(snap("NOT_FOUND", ""), snap("NOT_FOUND", ""), id="not found twice"),
        pytest.param(
            snap("COMPLETED"),
            snap("COMPLETED", completed_time="2026-11-27T12:00:00Z"),
            id="completion time arrives later",
        ),
    ],
)
def test_diff_ignores_non_changes(last: JobSnapshot, observed: JobSnapshot) -> None:
    """A snapshot whose state and status did not move is no transition."""
    assert diff(last, observed, at=AT) is None


def test_not_found_keeps_known_details() -> None:
    """A 404 carries no details, so the transition keeps the display name known before."""
    last = snap("RUNNING", display_name="Nice name", base_model="llama")
    vanished = JobSnapshot(ref=REF, account_id="acme", state="NOT_FOUND")

    transition = diff(last, vanished, at=AT)

    assert transition is not None
    assert "Nice name" == transition.new.display_name
    assert "llama" == merge(last, vanished).base_model


def test_new_job_only_on_first_sight() -> None:
    """`new_job` marks only a first sighting; a later move of that job is an ordinary one."""
    first = diff(None, snap("PENDING"), at=AT, new_job=True)
    later = diff(snap("PENDING"), snap("RUNNING"), at=AT, new_job=True)

    assert first is not None
    assert later is not None
    assert (True, False) == (first.new_job, later.new_job)


def test_merge_is_observed_when_found() -> None:
    """Outside a 404 the stored snapshot is exactly the observed one."""
    observed = snap("RUNNING", display_name="new name")

    assert observed == merge(snap("RUNNING", display_name="old"), observed)


def transition(
    old: str | None, new: str, *, job_id: str = "my-job", name: str = "", new_job: bool = False
) -> Transition:
    ref = JobRef(JobKind.DPO, job_id)
    before = None if old is None else JobSnapshot(ref=ref, account_id="a", state=old)
    after = JobSnapshot(ref=ref, account_id="a", state=new, display_name=name)
    return Transition(old=before, new=after, observed_at=AT, new_job=new_job)


@pytest.mark.parametrize(
    ("channel", "moved", "expected"),
    [
        pytest.param(Channel("c", _T), transition("RUNNING", "FAILED"), True, id="default all"),
        pytest.param(Channel("c", _T), transition(None, "RUNNING"), False, id="baseline silent"),
        pytest.param(
            Channel("c", _T, policy=ChannelPolicy(notify_initial=True)),
            transition(None, "RUNNING"),
            True,
            id="notify_initial",
        ),
        pytest.param(
            Channel("c", _T, policy=ChannelPolicy(notify_new=True)),
            transition(None, "PENDING", new_job=True),
            True,
            id="notify_new hears a new job",
        ),
        pytest.param(
            Channel("c", _T, policy=ChannelPolicy(notify_new=True)),
            transition(None, "RUNNING"),
            False,
            id="notify_new ignores the baseline",
        ),
        pytest.param(
            Channel("c", _T),
            transition(None, "PENDING", new_job=True),
            False,
            id="new jobs silent by default",
        ),
        pytest.param(
            Channel("c", _T, Rule(states=("COMPLETED", "FAILED"))),
            transition("RUNNING", "FAILED"),
            True,
            id="to_states hit",
        ),
        pytest.param(
            Channel("c", _T, Rule(states=("COMPLETED", "FAILED"))),
            transition("PENDING", "RUNNING"),
            False,
            id="to_states miss",
        ),
        pytest.param(
            Channel("c", _T, Rule(jobs=("prod-*",))),
            transition("RUNNING", "FAILED", job_id="prod-7"),
            True,
            id="glob on id",
        ),
        pytest.param(
            Channel("c", _T, Rule(jobs=("prod-*",))),
            transition("RUNNING", "FAILED", job_id="x1", name="prod-big"),
            True,
            id="glob on display name",
        ),
        pytest.param(
            Channel("c", _T, Rule(jobs=("prod-*",))),
            transition("RUNNING", "FAILED", job_id="dev-1", name="dev"),
            False,
            id="glob miss",
        ),
        pytest.param(
            Channel("c", _T, Rule(jobs=("Prod-*",))),
            transition("RUNNING", "FAILED", job_id="prod-1"),
            False,
            id="glob is case-sensitive",
        ),
        pytest.param(
            Channel("c", _T, Rule(jobs=("prod-*",), states=("FAILED",))),
            transition("RUNNING", "COMPLETED", job_id="prod-1"),
            False,
            id="both rules must hold",
        ),
    ],
)
def test_channel_rules(channel: Channel, moved: Transition, expected: bool) -> None:
    """A channel hears a transition only when every one of its rules holds."""
    assert expected == bool(outbox_entries([channel], moved, transition_event(moved)))
