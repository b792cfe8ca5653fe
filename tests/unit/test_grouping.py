"""Grouping and rate folding: which rows of a target go as one message, what the message
says, and what waits. Pure, so table-tested on plain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watcher.core.delivery import Channel, ChannelPolicy, Delivery, Event, OutboxEntry
from watcher.core.grouping import (
    QUIET,
    RATE,
    Candidate,
    plan_target,
    render_entry,
    select_claims,
    tone,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def row(
    id_: int,
    job: str,
    old: str,
    new: str,
    *,
    reason: str = "",
    message: str = "",
    notice: str = "",
    attempts: int = 0,
) -> Delivery:
    """A delivery of a transition of `job` (or, with `notice`, a notice titled so)."""
    if notice:
        fields = {"title": notice, "body": f"body of {notice}", "job_id": job, "kind": "sft"}
    else:
        fields = {
            "job_id": job,
            "display_name": job,
            "kind": "sft",
            "old_state": old,
            "new_state": new,
            "reason": reason,
            "status_message": message,
        }
    event = Event(f"sft/{job}", old, new, NOW, tuple(sorted(fields.items())), bool(notice))
    entry = OutboxEntry(f"sft/{job}", "team", "k", "json://x", old, new, NOW, event)
    return Delivery(id_, entry, attempts, NOW, "", "pending", "me")


def channel(**policy: object) -> Channel:
    return Channel("team", (), policy=ChannelPolicy(**policy))  # type: ignore[arg-type]


def titles(rows: list[Delivery], ch: Channel, **kw: object) -> list[str]:
    plan = plan_target(rows, ch, now=NOW, **kw)  # type: ignore[arg-type]
    return [b.message.title for b in plan.batches]


def c(id_: int, job: str, due: bool = True, free: bool = True, joinable: bool = False) -> Candidate:
    return Candidate(id_, job, due, free, joinable)


@pytest.mark.parametrize(
    ("candidates", "whole", "expected"),
    [
        pytest.param([c(1, "a"), c(2, "b")], False, [1, 2], id="all due"),
        pytest.param([c(1, "a", free=False), c(2, "a")], False, [], id="another's claim blocks"),
        pytest.param(
            [c(1, "a", due=False), c(2, "a"), c(3, "b")], False, [3], id="a retry wait blocks"
        ),
        pytest.param(
            [c(1, "a"), c(2, "a", due=False, joinable=True)], False, [1, 2], id="window rows join"
        ),
        pytest.param(
            [c(1, "a", due=False, joinable=True), c(2, "b")], False, [2], id="not another job's"
        ),
        pytest.param(
            [c(1, "a", due=False, joinable=True), c(2, "b")], True, [1, 2], id="whole target"
        ),
        pytest.param(
            [c(1, "a", due=False, joinable=True)], True, [], id="nothing due: nothing claimed"
        ),
        pytest.param(
            [c(1, "a", due=False, joinable=True), c(2, "a")], False, [1, 2], id="held go first"
        ),
    ],
)
def test_select_claims(candidates: list[Candidate], whole: bool, expected: list[int]) -> None:
    """Per job, rows in order up to the first that may not go; joinable ones only with a due
    one."""
    assert expected == select_claims(candidates, whole_target=whole)


PATH = [row(1, "my-job", "CREATING", "VALIDATING"), row(2, "my-job", "VALIDATING", "RUNNING")]
FAILED = [row(i, f"j{i:02d}", "RUNNING", "FAILED", reason="OOM") for i in range(40)]
MIXED = [row(i, f"m{i}", "RUNNING", "FAILED" if i < 3 else "COMPLETED") for i in range(7)]
TWELVE = [row(i, f"r{i:02d}", "RUNNING", "COMPLETED") for i in range(12)]


@pytest.mark.parametrize(
    ("rows", "ch", "kw", "expected"),
    [
        pytest.param(
            PATH,
            channel(),
            {},
            ["my-job: CREATING → VALIDATING", "my-job: VALIDATING → RUNNING"],
            id="no policy: a message a row",
        ),
        pytest.param(
            PATH, channel(group_wait=30), {}, ["my-job: CREATING → VALIDATING → RUNNING"], id="path"
        ),
        pytest.param(
            [*PATH, row(3, "my-job", "RUNNING", "FAILED", reason="OOM")],
            channel(group_wait=30),
            {},
            ["my-job: CREATING → VALIDATING → RUNNING → FAILED: OOM"],
            id="path ending in a failure: its reason",
        ),
        pytest.param(
            [*PATH, row(3, "other", "RUNNING", "COMPLETED")],
            channel(group_wait=30),
            {},
            ["my-job: CREATING → VALIDATING → RUNNING", "other: RUNNING → COMPLETED"],
            id="per job",
        ),
        pytest.param(
            FAILED,
            channel(group_wait=30, group_by_account=True),
            {},
            ["40 jobs FAILED: j00, j01, j02, … and 37 more"],
            id="a burst of one state",
        ),
        pytest.param(
            MIXED,
            channel(group_by_account=True),
            {},
            ["7 jobs moved: 3 FAILED, 4 COMPLETED"],
            id="a burst of two states",
        ),
        pytest.param(
            PATH,
            channel(group_wait=30, group_by_account=True),
            {},
            ["my-job: CREATING → VALIDATING → RUNNING"],
            id="account of one job: its path",
        ),
        pytest.param(
            [row(1, "a", "", "STALLED", notice="a: stalled: no progress for 30m"), FAILED[0]],
            channel(group_by_account=True),
            {},
            ["2 jobs updated: 1 FAILED, 1 STALLED"],
            id="notices count as updates",
        ),
        pytest.param(
            TWELVE,
            channel(max_per_minute=5),
            {},
            [
                *(f"r{i:02d}: RUNNING → COMPLETED" for i in range(4)),
                (
                    "8 more notifications: r04 COMPLETED, r05 COMPLETED, r06 COMPLETED, "
                    "r07 COMPLETED, r08 COMPLETED, r09 COMPLETED, r10 COMPLETED, r11 COMPLETED"
                ),
            ],
            id="past the allowance: a summary",
        ),
        pytest.param(
            TWELVE[:5],
            channel(max_per_minute=5),
            {},
            [f"r{i:02d}: RUNNING → COMPLETED" for i in range(5)],
            id="within the allowance",
        ),
        pytest.param(
            TWELVE[:3],
            channel(max_per_minute=5),
            {"recent": [NOW - timedelta(seconds=s) for s in (10, 20, 30, 40)]},
            ["3 more notifications: r00 COMPLETED, r01 COMPLETED, r02 COMPLETED"],
            id="one left: all in the summary",
        ),
        pytest.param(
            TWELVE[:3],
            channel(max_per_minute=5),
            {"recent": [NOW - timedelta(seconds=s) for s in (10, 20, 30, 40, 61, 90)]},
            ["3 more notifications: r00 COMPLETED, r01 COMPLETED, r02 COMPLETED"],
            id="older sends do not count",
        ),
    ],
)
def test_titles(
    rows: list[Delivery], ch: Channel, kw: dict[str, object], expected: list[str]
) -> None:
    """The messages a target's due rows become, by their titles."""
    assert expected == titles(rows, ch, **kw)


def test_a_row_alone_renders_as_without_grouping() -> None:
    """One row in a grouping channel is the same message as in any other."""
    (batch,) = plan_target([PATH[0]], channel(group_wait=30), now=NOW).batches
    assert render_entry(PATH[0].entry, channel()) == batch.message


def test_a_path_body_lists_steps_then_the_last_details() -> None:
    """The body of a path: each step with its status message, then the last one's details."""
    rows = [
        row(1, "my-job", "CREATING", "VALIDATING", message="checking dataset"),
        row(2, "my-job", "VALIDATING", "RUNNING"),
    ]
    (batch,) = plan_target(rows, channel(group_wait=30), now=NOW).batches
    last = render_entry(rows[-1].entry, channel()).body
    assert (
        "Steps:\n- CREATING → VALIDATING: checking dataset\n- VALIDATING → RUNNING\n\n" + last
        == batch.message.body
    )


def test_an_account_body_is_capped_at_fifty_lines() -> None:
    """Forty jobs fit; a hundred show fifty lines and how many more."""
    hundred = [row(i, f"j{i:03d}", "RUNNING", "FAILED", reason="OOM") for i in range(100)]
    (batch,) = plan_target(hundred, channel(group_by_account=True), now=NOW).batches
    lines = batch.message.body.splitlines()
    assert 51 == len(lines)
    assert "- j000: RUNNING → FAILED: OOM" == lines[0]
    assert "- … and 50 more" == lines[-1]
    assert "failure" == batch.tone
    assert 100 == len(batch.rows)


def test_no_allowance_holds_until_the_minute_frees() -> None:
    """With five sends in the last minute, everything waits until the oldest is a minute old."""
    recent = [NOW - timedelta(seconds=s) for s in (5, 15, 25, 35, 45)]
    plan = plan_target(TWELVE[:2], channel(max_per_minute=5), now=NOW, recent=recent)
    assert () == plan.batches
    assert [(0, NOW + timedelta(seconds=15), RATE), (1, NOW + timedelta(seconds=15), RATE)] == [
        (d.id, at, why) for d, at, why in plan.holds
    ]


def test_quiet_hours_hold_all_but_failures_and_what_led_to_them() -> None:
    """In quiet hours an info message waits; a failure goes now, with its job's earlier rows."""
    morning = NOW + timedelta(hours=8)
    rows = [
        row(1, "a", "PENDING", "RUNNING"),
        row(2, "b", "PENDING", "RUNNING"),
        row(3, "a", "RUNNING", "FAILED", reason="OOM"),
        row(4, "c", "RUNNING", "COMPLETED"),
    ]
    plan = plan_target(rows, channel(), now=NOW, quiet_until=morning)
    assert ["a: PENDING → RUNNING", "a: RUNNING → FAILED: OOM"] == [
        b.message.title for b in plan.batches
    ]
    assert [(2, morning, QUIET), (4, morning, QUIET)] == [(d.id, t, w) for d, t, w in plan.holds]


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        pytest.param(["COMPLETED", "RUNNING"], "info", id="info beats success"),
        pytest.param(["COMPLETED", "CANCELLED", "RUNNING"], "warning", id="warning"),
        pytest.param(["COMPLETED", "FAILED", "CANCELLED"], "failure", id="failure"),
        pytest.param(["COMPLETED"], "success", id="success"),
    ],
)
def test_tone_is_the_worst(states: list[str], expected: str) -> None:
    """A batch's apprise type is its worst row's."""
    assert expected == tone([row(i, "a", "X", s) for i, s in enumerate(states)])


def test_an_unrenderable_row_costs_only_its_batch() -> None:
    """A template that cannot render gives up its row; the others are still planned."""
    bad = Channel("team", (), title="{nope}")
    plan = plan_target(PATH, bad, now=NOW)
    assert [1, 2] == [d.id for d, _ in plan.unrenderable]
    assert () == plan.batches
