"""The poller's pure decisions, table-tested: what to store, announce and queue; GET or LIST."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watcher.core.conditions import Condition, ConditionName
from watcher.core.decide import (
    Diff,
    diff,
    listed_flag,
    plan_fetch,
    within_budget,
)
from watcher.core.delivery import Channel, ChannelPolicy, Target
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef, JobSnapshot
from watcher.core.notices import api_condition, condition_notice

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
A = JobRef(JobKind.DPO, "a")
B = JobRef(JobKind.SFT, "b")
TEAM = Channel("team", (Target("k1", "json://one"), Target("k2", "json://two")))
NEWS = Channel("news", (Target("k3", "json://three"),), policy=ChannelPolicy(notify_new=True))


def snap(ref: JobRef, state: str, **details: str) -> JobSnapshot:
    return JobSnapshot(ref=ref, account_id="acme", state=state, **details)


def summary(decision: Diff) -> tuple[list[str], list[str], list[tuple[str, str, str]]]:
    """(stored keys, transitions as "key:old>new", rows as (job, channel, url_key))."""
    return (
        [s.ref.key for s in decision.snapshots],
        [f"{t.ref.key}:{t.old_state}>{t.new_state}" for t in decision.transitions],
        [(e.job_key, e.channel, e.url_key) for e in decision.entries],
    )


@pytest.mark.parametrize(
    ("last", "observed", "expected"),
    [
        pytest.param(
            {},
            [snap(A, "RUNNING")],
            (["dpo/a"], ["dpo/a:>RUNNING"], []),
            id="first sight: stored, silent",
        ),
        pytest.param(
            {A.key: snap(A, "RUNNING")},
            [snap(A, "RUNNING")],
            ([], [], []),
            id="unchanged: nothing to write",
        ),
        pytest.param(
            {A.key: snap(A, "RUNNING")},
            [snap(A, "COMPLETED")],
            (
                ["dpo/a"],
                ["dpo/a:RUNNING>COMPLETED"],
                [("dpo/a", "team", "k1"), ("dpo/a", "team", "k2")],
            ),
            id="a move: one row per URL",
        ),
        pytest.param(
            {A.key: snap(A, "RUNNING", progress="10")},
            [snap(A, "RUNNING", progress="20")],
            (["dpo/a"], [], []),
            id="progress only: stored, no transition",
        ),
        pytest.param(
            {A.key: snap(A, "RUNNING", display_name="A")},
            [snap(A, "NOT_FOUND")],
            (
                ["dpo/a"],
                ["dpo/a:RUNNING>NOT_FOUND"],
                [("dpo/a", "team", "k1"), ("dpo/a", "team", "k2")],
            ),
            id="vanished",
        ),
    ],
)
def test_decide(
    last: dict[str, JobSnapshot],
    observed: list[JobSnapshot],
    expected: tuple[list[str], list[str], list[tuple[str, str, str]]],
) -> None:
    """Each answer becomes what to store, what moved and whom to tell."""
    decision = diff(last, observed, channels=[TEAM], now=NOW)

    assert expected == summary(decision)
    assert decision.empty == (not expected[0])


@pytest.mark.parametrize(
    ("last", "observed", "new_job", "history"),
    [
        pytest.param({}, snap(A, "RUNNING"), False, [], id="a baseline is no event"),
        pytest.param({}, snap(B, "PENDING"), True, ["sft/b:>PENDING"], id="a new job is one"),
        pytest.param(
            {A.key: snap(A, "RUNNING")},
            snap(A, "FAILED"),
            False,
            ["dpo/a:RUNNING>FAILED"],
            id="a move",
        ),
    ],
)
def test_events_are_the_history(
    last: dict[str, JobSnapshot], observed: JobSnapshot, new_job: bool, history: list[str]
) -> None:
    """Moves and newly created jobs are events, heard by a channel or not; rows point at them."""
    decision = diff(
        last,
        [observed],
        channels=[NEWS],
        now=NOW,
        listed_before=frozenset({JobKind.SFT}) if new_job else frozenset(),
    )

    assert history == [f"{e.job_key}:{e.old_state}>{e.new_state}" for e in decision.events]
    assert all(entry.event in decision.events for entry in decision.entries)


def test_a_vanished_job_keeps_its_display_name() -> None:
    """A 404 carries no details; the stored snapshot keeps the ones known before."""
    decision = diff(
        {A.key: snap(A, "RUNNING", display_name="Big")},
        [snap(A, "NOT_FOUND")],
        channels=[],
        now=NOW,
    )

    assert ("NOT_FOUND", "Big") == (decision.snapshots[0].state, decision.snapshots[0].display_name)


@pytest.mark.parametrize(
    ("explicit", "listed_before", "heard"),
    [
        pytest.param(frozenset(), frozenset({JobKind.SFT}), True, id="created since the listing"),
        pytest.param(frozenset(), frozenset(), False, id="first listing: a baseline"),
        pytest.param(frozenset({B.key}), frozenset({JobKind.SFT}), False, id="named in config"),
    ],
)
def test_new_jobs(explicit: frozenset[str], listed_before: frozenset[JobKind], heard: bool) -> None:
    """A job unknown in a kind listed before is new: `notify_new` channels hear it."""
    decision = diff(
        {},
        [snap(B, "PENDING")],
        channels=[NEWS],
        now=NOW,
        explicit=explicit,
        listed_before=listed_before,
    )

    assert heard == bool(decision.entries)
    assert heard == decision.transitions[0].new_job


def test_flags_for_kinds_listed_for_the_first_time() -> None:
    """A kind listed in full for the first time is remembered; one listed before is not rewritten."""
    decision = diff(
        {},
        [],
        channels=[],
        now=NOW,
        listed_before=frozenset({JobKind.DPO}),
        listed_now=[JobKind.DPO, JobKind.SFT],
    )

    assert {listed_flag(JobKind.SFT): "1"} == decision.flags


def test_notices_reach_every_url() -> None:
    """An "API unreachable" or "cannot read" notice is one row per URL of every channel."""
    unreadable = ConditionName.UNREADABLE
    notices = [
        condition_notice(
            api_condition(detail="no answer in 3 cycles", opened_at=NOW),
            None,
            api_label="https://api",
        ),
        condition_notice(
            Condition("sft/x", unreadable, NOW, "HTTP 400 INVALID_ARGUMENT: bad"), None
        ),
        condition_notice(Condition("dpo/y", unreadable, NOW, "HTTP 400"), None, resolved_at=NOW),
    ]
    decision = diff({}, [], channels=[TEAM, NEWS], now=NOW, notices=notices)

    assert {} == dict(decision.flags)
    assert 9 == len(decision.entries)
    assert {"API_UNREACHABLE", "UNREADABLE", "READABLE"} == {e.new_state for e in decision.entries}
    assert 3 == len(decision.events)  # one event each, however many URLs hear it
    titles = {e.event.field_map()["title"] for e in decision.entries if e.event}
    assert "dpo/y is readable again" in titles
    assert any(t.startswith("cannot read sft/x: HTTP 400") for t in titles)


S = [JobRef(JobKind.SFT, f"s{i}") for i in range(5)]
D = [JobRef(JobKind.DPO, f"d{i}") for i in range(2)]


@pytest.mark.parametrize(
    ("due", "pages", "lists", "gets"),
    [
        pytest.param(S[:1], {}, [], S[:1], id="one job: a GET"),
        pytest.param(S[:3], {}, [(JobKind.SFT, 3)], [], id="length unknown, 3 due: LIST once"),
        pytest.param(S[:3], {JobKind.SFT: 1}, [(JobKind.SFT, 3)], [], id="1 page beats 3 GETs"),
        pytest.param(S[:3], {JobKind.SFT: 5}, [], S[:3], id="5 pages cost more than 3 GETs"),
        pytest.param(S[:3], {JobKind.SFT: 3}, [], S[:3], id="a tie: GETs"),
        pytest.param(S[:2] + D, {JobKind.DPO: 9}, [(JobKind.SFT, 2)], D, id="per kind"),
    ],
)
def test_plan_fetch(
    due: list[JobRef],
    pages: dict[JobKind, int],
    lists: list[tuple[JobKind, int]],
    gets: list[JobRef],
) -> None:
    """GET each due job, or LIST its kind when that costs fewer requests."""
    plan = plan_fetch(due, pages=pages)

    assert (lists, gets) == ([(k, len(w)) for k, w in plan.lists], list(plan.gets))


@pytest.mark.parametrize(
    ("available", "expected"),
    [(None, 5), (10, 5), (3, 3), (0, 1), (-2, 1)],
)
def test_within_budget(available: int | None, expected: int) -> None:
    """The GETs a cycle can afford, at least one so a dry budget still makes progress."""
    assert expected == len(within_budget(S, available))
