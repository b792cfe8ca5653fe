"""One decision per batch of answers or tick: `Alerts.decide` returns one frozen `Decision`
holding the snapshots, the moves, the outbox rows, conditions and reminders, and changes
nothing until the poller hands it back (`applied`)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from watcher.core.conditions import Since
from watcher.core.delivery import Channel, ChannelPolicy, Target
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef, JobSnapshot
from watcher.core.notices import REMINDER
from watcher.runtime.alert_memory import Alerts, Timed
from watcher.runtime.plan import WatchPlan

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
JOB = JobRef(JobKind.SFT, "tune")
TEAM = Channel("team", (Target("k", "json://team"),), policy=ChannelPolicy(repeat_interval=10.0))
PLAN = WatchPlan(refs=(JOB,), channels=(TEAM,))


def running() -> tuple[Alerts, dict[str, JobSnapshot]]:
    """The memory of a job seen running for a minute."""
    alerts = Alerts()
    alerts.load({JOB.key: Since(T0 - timedelta(minutes=1), T0 - timedelta(minutes=1))}, [], {})
    return alerts, {JOB.key: snap("RUNNING")}


def snap(state: str) -> JobSnapshot:
    return JobSnapshot(JOB, "acct", state, display_name="tune", status_message="out of memory")


def test_a_failure_is_one_frozen_value_with_its_move_its_row_and_its_times() -> None:
    alerts, last = running()
    decision = alerts.decide(PLAN, last, [snap("FAILED")], now=T0, timed=Timed())

    assert [s.state for s in decision.snapshots] == ["FAILED"]
    assert [(t.old_state, t.new_state) for t in decision.transitions] == [("RUNNING", "FAILED")]
    assert [(e.channel, e.new_state) for e in decision.entries] == [("team", "FAILED")]
    assert decision.since[JOB.key] == Since(T0, T0, entered=True)  # its first reminder's start
    assert decision.timed
    assert not decision.empty
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.now = T0  # type: ignore[misc]


def test_deciding_changes_nothing_until_the_decision_is_applied() -> None:
    alerts, last = running()
    first = alerts.decide(PLAN, last, [snap("FAILED")], now=T0, timed=Timed())
    again = alerts.decide(PLAN, last, [snap("FAILED")], now=T0, timed=Timed())
    assert first == again

    alerts.applied(first, watch=PLAN)
    last = {JOB.key: first.snapshots[0]}
    quiet = alerts.decide(PLAN, last, [], now=T0 + timedelta(seconds=5), timed=Timed())
    assert quiet.empty  # nothing moved, no reminder due yet
    due = alerts.decide(PLAN, last, [], now=T0 + timedelta(seconds=10), timed=Timed())
    assert [n.kind for n in due.notices] == [REMINDER]
    assert [(e.channel, e.new_state) for e in due.entries] == [("team", "REMINDER")]
    assert dict(due.reminders) == {("team", f"{JOB.key}|FAILED"): T0 + timedelta(seconds=20)}


def test_an_answer_between_ticks_decides_no_reminder() -> None:
    """Reminders and conditions are the timer's: an answer's decision (no `timed`) only
    stores and announces what moved."""
    alerts, last = running()
    decision = alerts.decide(PLAN, last, [snap("FAILED")], now=T0)
    assert not decision.timed
    assert not decision.reminders
    assert not decision.opened
    assert [(e.channel, e.new_state) for e in decision.entries] == [("team", "FAILED")]
