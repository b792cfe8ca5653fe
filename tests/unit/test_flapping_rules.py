"""Flapping, table-tested: which changes count, when the condition opens and resolves, what
is folded, the messages, and the `flap_threshold` / `flap_window` keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from watcher import config
from watcher.cli import history
from watcher.core import notices
from watcher.core.conditions import (
    Condition,
    ConditionName,
    Since,
    StateChange,
    Thresholds,
    flap_detail,
    flapping,
    folds,
    recent_changes,
    stable_at,
    state_change,
    still_flapping,
)
from watcher.core.decide import FOLDED_FIELD, diff, fold
from watcher.core.delivery import Channel, Event, Target
from watcher.core.errors import ConfigError
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef, JobSnapshot, Transition
from watcher.stores.history_table import Entry

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DPO = JobRef(JobKind.DPO, "d")
DEFAULT = Thresholds()


def snap(state: str = "RUNNING", **details: str) -> JobSnapshot:
    return JobSnapshot(ref=DPO, account_id="acme", state=state, **details)


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def flips(count: int, every: float = 30.0, start: float = 30.0) -> list[StateChange]:
    """`count` RUNNING <-> PENDING changes, `every` seconds apart from `start`."""
    states = ("RUNNING", "PENDING")
    return [
        StateChange(seconds(start + n * every), states[n % 2], states[(n + 1) % 2])
        for n in range(count)
    ]


@pytest.mark.parametrize(
    ("old", "new", "counted"),
    [
        (snap("RUNNING"), snap("PENDING"), True),
        (snap("RUNNING"), snap("COMPLETED"), True),  # an outcome is a change of state too
        (None, snap("RUNNING"), False),  # first sight
        # A new status message within one state is not a flap (progress is reported there).
        (snap("RUNNING", status_message="a"), snap("RUNNING", status_message="b"), False),
    ],
)
def test_only_changes_of_state_count(
    old: JobSnapshot | None, new: JobSnapshot, counted: bool
) -> None:
    change = state_change(Transition(old, new, T0))

    assert counted == (change is not None)
    if change is not None:
        assert StateChange(T0, old.state if old else "", new.state) == change


@pytest.mark.parametrize(
    ("changes", "limit", "now", "opens"),
    [
        # The defaults: 6 changes in 30 minutes may pass, the 7th opens it.
        (flips(6), DEFAULT, 180, False),
        (flips(7), DEFAULT, 210, True),
        # Spread over more than the window: never more than 6 inside it.
        (flips(7, every=300), DEFAULT, 1830, False),
        (flips(7, every=299), DEFAULT, 1824, True),
        # 0 disables it, however many.
        (flips(100), Thresholds(flap_threshold=0), 3000, False),
        (flips(2), Thresholds(flap_threshold=1, flap_window=60), 60, True),
        (flips(1000), Thresholds(flap_threshold=1000), 30000, False),
        (flips(1001, every=1), Thresholds(flap_threshold=1000), 1030, True),
    ],
)
def test_flapping_opens_past_the_threshold_within_the_window(
    changes: list[StateChange], limit: Thresholds, now: float, opens: bool
) -> None:
    assert opens == (flapping(changes, limit, seconds(now)) is not None)


def test_the_changes_kept_are_those_that_can_decide() -> None:
    """Only changes within the window, and at most one more than the threshold (the
    latest): a job flapping all day keeps 7 changes in memory, not thousands."""
    limit = Thresholds(flap_threshold=6, flap_window=600)
    changes = flips(2000, every=1)

    kept = recent_changes(changes, limit, seconds(2029))

    assert changes[-7:] == list(kept)
    assert () == recent_changes(flips(5), limit, seconds(30 + 4 * 30 + 600))
    assert () == recent_changes(changes, Thresholds(flap_threshold=0), seconds(2029))


def test_the_message_lists_the_states_in_order_and_cuts_a_long_list() -> None:
    assert (
        "RUNNING → PENDING → RUNNING → PENDING → RUNNING → PENDING → RUNNING → PENDING "
        "(7 changes in 12m 00s)"
    ) == flap_detail(flips(7, every=120), seconds(30 + 6 * 120 + 0))
    long = flap_detail(flips(30), seconds(900))
    assert long.startswith("RUNNING → PENDING → RUNNING → PENDING → … → ")
    assert long.count("→") == 9
    assert long.endswith("(30 changes in 14m 30s)")


@pytest.mark.parametrize(
    ("entered", "now", "holds"),
    [
        (0, 1799, True),
        (0, 1800, False),  # a whole window in one state: stable again
        (100, 1800, True),
    ],
)
def test_it_resolves_after_a_window_in_one_state(entered: float, now: float, holds: bool) -> None:
    since = Since(seconds(entered), seconds(entered), entered=True)

    assert seconds(entered + 1800) == stable_at(since, DEFAULT)
    assert holds == still_flapping(since, DEFAULT, seconds(now))
    assert not still_flapping(since, Thresholds(flap_threshold=0), seconds(now))


@pytest.mark.parametrize(
    ("state", "folded"),
    [
        ("RUNNING", True),
        ("PENDING", True),
        ("PAUSED", True),
        ("COMPLETED", False),
        ("FAILED", False),
        ("CANCELLED", False),
        ("EXPIRED", False),
        ("NOT_FOUND", False),
        ("DELETED", False),
    ],
)
def test_outcomes_and_tombstones_are_never_folded(state: str, folded: bool) -> None:
    assert folded == folds(Transition(snap("RUNNING"), snap(state), T0))


def channel() -> Channel:
    return Channel(name="team", targets=(Target(url_key="k", url_display="json://h/x"),))


def test_fold_keeps_the_history_drops_the_sends_and_keeps_outcomes() -> None:
    other = JobSnapshot(ref=JobRef(JobKind.DPO, "calm"), account_id="acme", state="RUNNING")
    last = {DPO.key: snap("RUNNING"), other.ref.key: other}
    observed = [snap("PENDING"), JobSnapshot(other.ref, "acme", "PENDING")]
    decision = diff(last, observed, channels=[channel()], now=T0)

    folded = fold(decision, frozenset({DPO.key}))

    assert [other.ref.key] == [e.job_key for e in folded.entries]
    assert decision.snapshots == folded.snapshots
    marks = {e.job_key: e.field_map().get(FOLDED_FIELD) for e in folded.events}
    assert {DPO.key: "flapping", other.ref.key: None} == marks
    done = diff(last, [snap("COMPLETED")], channels=[channel()], now=T0)
    assert done == fold(done, frozenset({DPO.key}))
    assert decision == fold(decision, frozenset())


def test_the_flapping_and_stable_again_messages() -> None:
    job = snap("PENDING", display_name="Nightly DPO")
    condition = Condition(DPO.key, ConditionName.FLAPPING, T0, flap_detail(flips(7), seconds(210)))

    opened = notices.condition_notice(condition, job)
    resolved = notices.condition_notice(
        condition, snap("RUNNING", display_name="Nightly DPO"), resolved_at=seconds(7200)
    )

    assert (
        "Nightly DPO (d): flapping: RUNNING → PENDING → RUNNING → PENDING → RUNNING → "
        "PENDING → RUNNING → PENDING (7 changes in 3m 00s)"
    ) == opened.message.title
    assert ("FLAPPING", "condition") == (opened.new_state, opened.kind)
    assert "outcomes are always sent" in opened.message.body
    assert "Nightly DPO (d): stable again in RUNNING" == resolved.message.title
    assert "it was flapping for 2h 00m 00s" in resolved.message.body
    assert ("RESOLVED", "resolved") == (resolved.new_state, resolved.kind)
    assert ("condition", "flapping") in opened.fields


def parse_watch(**keys: Any) -> config.Settings:
    return config.parse(
        {"fireworks": {"account_id": "acme"}, "watch": [{"kind": "dpo", "jobs": ["j"], **keys}]},
        {"FIREWORKS_API_KEY": "k"},
    )


def test_the_keys_default_to_6_changes_in_30_minutes_and_take_durations() -> None:
    assert (6, 1800.0) == (parse_watch().watches[0].flap_threshold, DEFAULT.flap_window)
    assert (DEFAULT.flap_threshold, DEFAULT.flap_window) == (6, 1800.0)
    watch = parse_watch(flap_threshold=0, flap_window="3s").watches[0]
    assert (0, 3.0) == (watch.flap_threshold, watch.flap_window)
    assert 86400.0 == parse_watch(flap_window="1d").watches[0].flap_window
    assert 1000 == parse_watch(flap_threshold=1000).watches[0].flap_threshold


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"flap_threshold": -1}, "watch[0].flap_threshold: must be >= 0"),
        ({"flap_threshold": 1001}, "watch[0].flap_threshold: must be <= 1000"),
        ({"flap_threshold": "6"}, "watch[0].flap_threshold: must be an integer"),
        ({"flap_threshold": True}, "watch[0].flap_threshold: must be an integer"),
        ({"flap_window": 0}, "watch[0].flap_window: must be > 0"),
        ({"flap_window": "2d"}, "watch[0].flap_window: must be <= 86400"),
        ({"flap_window": "soon"}, "watch[0].flap_window: must be a duration"),
    ],
)
def test_bad_values_are_one_line_naming_the_key(keys: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_watch(**keys)

    assert problem in str(raised.value)
    assert 1 == len(str(raised.value).splitlines())


def test_history_shows_a_folded_transition_as_such() -> None:
    """`history` marks a transition recorded but not sent (its job was flapping)."""
    event = Event(DPO.key, "RUNNING", "PENDING", T0, ((FOLDED_FIELD, "flapping"),))

    assert history.line(Entry(1, event)).endswith("dpo/d  RUNNING → PENDING  [folded: flapping]")
    assert {"folded": "flapping"} == history.document(Entry(1, event))["details"]
