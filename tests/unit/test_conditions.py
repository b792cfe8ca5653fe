"""Conditions from snapshots and time, table-tested: stalled, pending too long, max runtime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watcher.core.conditions import (
    Condition,
    ConditionName,
    Since,
    Thresholds,
    deadline,
    evaluate,
    job_conditions,
    next_since,
)
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef, JobSnapshot

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SFT = JobRef(JobKind.SFT, "s")
DPO = JobRef(JobKind.DPO, "d")
DEFAULT = Thresholds()
STALLED, PENDING, RUNTIME = (
    ConditionName.STALLED,
    ConditionName.PENDING,
    ConditionName.MAX_RUNTIME,
)


def snap(ref: JobRef = SFT, state: str = "RUNNING", **details: str) -> JobSnapshot:
    return JobSnapshot(ref=ref, account_id="acme", state=state, **details)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


@pytest.mark.parametrize(
    ("job", "state_for", "quiet_for", "limits", "expected"),
    [
        # An SFT job RUNNING at 0 % that has not moved for 31 minutes is stalled...
        (
            snap(progress="0"),
            60,
            31,
            DEFAULT,
            {STALLED: "no progress at 0% for 31m 00s in RUNNING"},
        ),
        # ...not after 29 minutes, nor when stall_after is 0.
        (snap(progress="0"), 60, 29, DEFAULT, {}),
        (snap(progress="0"), 60, 31, Thresholds(stall_after=0), {}),
        # DPO has no progress field: it counts once the job has been RUNNING that long.
        (snap(DPO), 31, 31, DEFAULT, {STALLED: "no progress for 31m 00s in RUNNING"}),
        (snap(DPO), 20, 20, DEFAULT, {}),
        # A job that moved recently is not stalled, whatever its age in the state.
        (snap(progress="40"), 300, 5, DEFAULT, {}),
        # Waiting states are pending_after's, not stall_after's.
        (snap(state="PENDING"), 119, 119, DEFAULT, {}),
        (snap(state="PENDING"), 121, 121, DEFAULT, {PENDING: "PENDING for 2h 01m 00s"}),
        (snap(state="RE_QUEUEING"), 121, 121, DEFAULT, {PENDING: "RE_QUEUEING for 2h 01m 00s"}),
        (snap(state="CREATING"), 121, 121, Thresholds(pending_after=0), {}),
        # Outcomes and attention states raise none of them.
        (snap(state="COMPLETED"), 999, 999, Thresholds(max_runtime=60), {}),
        (snap(state="PAUSED"), 999, 999, DEFAULT, {}),
        (snap(state="FAILED"), 999, 999, DEFAULT, {}),
    ],
)
def test_job_conditions(
    job: JobSnapshot,
    state_for: float,
    quiet_for: float,
    limits: Thresholds,
    expected: dict[ConditionName, str],
) -> None:
    now = T0 + minutes(500)
    since = Since(state=now - minutes(state_for), moved=now - minutes(quiet_for))

    assert expected == job_conditions(job, since, limits, now)


@pytest.mark.parametrize(
    ("create_time", "limit_hours", "expected"),
    [
        ("2026-12-01T00:00:00Z", 12, {}),  # 9 h of 12
        (
            "2026-11-30T20:00:00Z",
            12,
            {RUNTIME: "running for 13h 00m 00s, more than the limit of 12h 00m 00s"},
        ),
        ("", 1, {}),  # no createTime: from first sight, which is now
        ("not a time", 1, {}),
    ],
)
def test_max_runtime_counts_from_create_time(
    create_time: str, limit_hours: float, expected: dict[ConditionName, str]
) -> None:
    job = snap(progress="50", create_time=create_time)
    since = Since(T0, T0)
    limits = Thresholds(stall_after=0, max_runtime=limit_hours * 3600)

    assert expected == job_conditions(job, since, limits, T0)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (None, snap(), Since(T0, T0, entered=False)),  # first sight
        (snap(state="PENDING"), snap(), Since(T0, T0, entered=True)),  # new state, seen begin
        (snap(progress="1"), snap(progress="2"), Since(T0 - minutes(60), T0, entered=True)),
        (snap(update_time="a"), snap(update_time="b"), Since(T0 - minutes(60), T0, entered=True)),
        (snap(), snap(), Since(T0 - minutes(60), T0 - minutes(30), entered=True)),
    ],
)
def test_next_since(before: JobSnapshot | None, after: JobSnapshot, expected: Since) -> None:
    previous = Since(T0 - minutes(60), T0 - minutes(30), entered=True)

    assert expected == next_since(before, previous, after, T0)


def test_evaluate_opens_keeps_and_resolves() -> None:
    """A new one opens once; one still holding stays (not reopened); one gone resolves; the
    watcher's own conditions are left to their own bookkeeping."""
    stuck, moving = snap(JobRef(JobKind.SFT, "stuck")), snap(JobRef(JobKind.SFT, "moving"))
    old = Since(T0 - minutes(60), T0 - minutes(60))
    fresh = Since(T0 - minutes(60), T0)
    held = Condition("sft/held", STALLED, T0 - minutes(10), "x")
    gone = Condition("sft/moving", STALLED, T0 - minutes(10), "x")
    own = Condition("api", ConditionName.API_DOWN, T0 - minutes(10), "down")
    still = snap(JobRef(JobKind.SFT, "held"))
    jobs = [(stuck, old, DEFAULT), (moving, fresh, DEFAULT), (still, old, DEFAULT)]

    changes = evaluate(jobs, {c.key: c for c in (held, gone, own)}, now=T0)

    assert [("sft/stuck", STALLED)] == [c.key for c in changes.opened]
    assert [gone] == list(changes.resolved)


@pytest.mark.parametrize(
    ("job", "limits", "expected"),
    [
        # Running, quiet since 10 minutes ago: stalls 20 minutes from now.
        (snap(), DEFAULT, 20),
        # Waiting since 60 minutes ago: too long in 60 minutes; no stall clock for waiting.
        (snap(state="PENDING"), DEFAULT, 60),
        # The earliest of two: max_runtime from createTime (9 h ago, limit 9 h 05 m).
        (snap(create_time="2026-12-01T00:00:00Z"), Thresholds(max_runtime=9 * 3600 + 300), 5),
        # Already stalled (a deadline in the past) and nothing else to come: none.
        (snap(), Thresholds(stall_after=60), None),
        (snap(state="COMPLETED"), DEFAULT, None),
        (snap(), Thresholds(stall_after=0, pending_after=0), None),
    ],
)
def test_deadline(job: JobSnapshot, limits: Thresholds, expected: float | None) -> None:
    """When evaluating a quiet job again could first find something new (minutes from now)."""
    since = Since(state=T0 - minutes(60), moved=T0 - minutes(10))

    found = deadline(job, since, limits, T0)

    assert expected == (None if found is None else (found - T0).total_seconds() / 60)
