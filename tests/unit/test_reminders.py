"""Reminders and progress milestones, table-tested: who hears what again, and when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watcher.core.conditions import Condition, ConditionName, Since
from watcher.core.delivery import Channel, ChannelPolicy, Target
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef, JobSnapshot
from watcher.core.progress import crossed, eta_seconds, milestones
from watcher.core.reminders import Remindable, plan_reminders, remindables
from watcher.core.rules import Rule

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
TEAM = Channel("team", (Target("k", "json://x"),), policy=ChannelPolicy(repeat_interval=3600))
QUIET = Channel("quiet", (Target("q", "json://q"),))
DONE_ONLY = Channel(
    "done",
    (Target("d", "json://d"),),
    rule=Rule(states=("COMPLETED",)),
    policy=ChannelPolicy(repeat_interval=3600),
)
PROD = Channel(
    "prod",
    (Target("p", "json://p"),),
    rule=Rule(jobs=("prod-*",)),
    policy=ChannelPolicy(repeat_interval=3600),
)


def snap(job_id: str, state: str, kind: JobKind = JobKind.SFT, **details: str) -> JobSnapshot:
    return JobSnapshot(ref=JobRef(kind, job_id), account_id="acme", state=state, **details)


def never(*_: object) -> bool:
    return False


@pytest.mark.parametrize(
    ("state", "entered", "expected"),
    [
        ("FAILED", True, ["sft/j|FAILED"]),
        ("EXPIRED", True, ["sft/j|EXPIRED"]),
        ("PAUSED", True, ["sft/j|PAUSED"]),
        ("CANCELLED", True, []),  # a person chose it
        ("FAILED", False, []),  # found failed at first sight: never announced, never reminded
        ("RUNNING", True, []),
        ("DELETED", True, []),
    ],
)
def test_what_is_remindable(state: str, entered: bool, expected: list[str]) -> None:
    job = snap("j", state)
    items = remindables({"sft/j": job}, {"sft/j": Since(T0, T0, entered)}, [])

    assert expected == [i.subject for i in items]


def test_open_conditions_are_remindable() -> None:
    stalled = Condition("sft/j", ConditionName.STALLED, T0, "no progress")
    (item,) = remindables({"sft/j": snap("j", "RUNNING")}, {}, [stalled])

    assert ("sft/j|stalled", "stalled", "stalled", T0) == (
        item.subject,
        item.what,
        item.condition,
        item.since,
    )


FAILED_JOB = Remindable("sft/j|FAILED", "sft/j", snap("j", "FAILED"), "FAILED", T0)
PROD_JOB = Remindable("sft/prod-1|FAILED", "sft/prod-1", snap("prod-1", "FAILED"), "FAILED", T0)


@pytest.mark.parametrize(
    ("items", "channels", "times", "now", "sent", "stored"),
    [
        # Due one interval after the state began; not before; only channels that ask.
        ([FAILED_JOB], [TEAM, QUIET], {}, T0 + 59 * timedelta(minutes=1), [], {}),
        (
            [FAILED_JOB],
            [TEAM, QUIET],
            {},
            T0 + HOUR,
            ["team"],
            {("team", "sft/j|FAILED"): T0 + 2 * HOUR},
        ),
        # After a long downtime: one reminder, the next an interval from now (no burst).
        (
            [FAILED_JOB],
            [TEAM],
            {},
            T0 + 30 * HOUR,
            ["team"],
            {("team", "sft/j|FAILED"): T0 + 31 * HOUR},
        ),
        # A stored time rules.
        ([FAILED_JOB], [TEAM], {("team", "sft/j|FAILED"): T0 + 3 * HOUR}, T0 + 2 * HOUR, [], {}),
        # A channel that does not hear FAILED transitions is not reminded of them...
        ([FAILED_JOB], [DONE_ONLY], {}, T0 + HOUR, [], {}),
        # ...nor one whose job globs leave the job out.
        (
            [FAILED_JOB, PROD_JOB],
            [PROD],
            {},
            T0 + HOUR,
            ["prod"],
            {("prod", "sft/prod-1|FAILED"): T0 + 2 * HOUR},
        ),
        # A subject that is gone (resumed, resolved, deleted) drops its stored time.
        (
            [],
            [TEAM],
            {("team", "sft/j|FAILED"): T0 + HOUR},
            T0,
            [],
            {("team", "sft/j|FAILED"): None},
        ),
    ],
)
def test_plan_reminders(
    items: list[Remindable],
    channels: list[Channel],
    times: dict[tuple[str, str], datetime],
    now: datetime,
    sent: list[str],
    stored: dict[tuple[str, str], datetime | None],
) -> None:
    plan = plan_reminders(items, channels, times, now=now, silenced=never)

    assert sent == [next(iter(n.channels or ())) for n in plan.notices]
    assert stored == plan.times


def test_a_silenced_subject_is_skipped_and_its_time_kept() -> None:
    plan = plan_reminders([FAILED_JOB], [TEAM], {}, now=T0 + HOUR, silenced=lambda *_: True)

    assert ((), {}) == (plan.notices, plan.times)


def test_reminder_text() -> None:
    job = snap("j", "FAILED", display_name="Nightly SFT", status_message="CUDA OOM")
    item = Remindable("sft/j|FAILED", "sft/j", job, "FAILED", T0)

    (notice,) = plan_reminders([item], [TEAM], {}, now=T0 + 4 * HOUR, silenced=never).notices

    assert "Reminder: Nightly SFT (j) still FAILED (4h 00m 00s)" == notice.message.title
    assert "> CUDA OOM" in notice.message.body


# --- milestones -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "every", "expected"),
    [
        (0, 24.9, 25, None),
        (20, 25, 25, 25),
        (20, 60, 25, 50),  # two passed at once: the highest is said
        (50, 50, 25, None),
        (70, 100, 25, 75),  # 100 is the completion's news
        (75, 99, 25, None),
        (0, 10, 10, 10),
        (5, 95, 0, None),  # off
    ],
)
def test_crossed(before: float, after: float, every: int, expected: int | None) -> None:
    assert expected == crossed(before, after, every)


def test_eta_from_the_rate_since_the_run_began() -> None:
    job = snap("j", "RUNNING", progress="25")
    since = Since(T0, T0, entered=True)

    assert 3 * 3600 == eta_seconds(job, since, 25.0, T0 + HOUR)


EVERY_25 = Channel("m", (Target("m", "json://m"),), policy=ChannelPolicy(progress_every=25))
EVERY_10 = Channel("t", (Target("t", "json://t"),), policy=ChannelPolicy(progress_every=10))


@pytest.mark.parametrize(
    ("before", "after", "kind", "expected"),
    [
        ("20", "30", JobKind.SFT, [(25, {"m"}), (30, {"t"})]),
        ("21", "24", JobKind.SFT, []),
        ("", "30", JobKind.SFT, []),  # progress not known before
        ("20", "30", JobKind.DPO, []),  # DPO reports no progress
    ],
)
def test_milestones(
    before: str, after: str, kind: JobKind, expected: list[tuple[int, set[str]]]
) -> None:
    previous = snap("j", "RUNNING", kind, progress=before)
    stored = snap("j", "RUNNING", kind, progress=after)
    since = Since(T0, T0, entered=True)

    found = milestones(previous, stored, since, [EVERY_25, EVERY_10], now=T0 + HOUR)

    assert expected == [(int(dict(n.fields)["milestone"]), set(n.channels or ())) for n in found]
    if found:
        assert found[0].message.title.startswith("j: 25% done, ETA ")
