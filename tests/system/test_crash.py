"""Crash safety in CI: 20 SIGKILLs of the real daemon lose and repeat nothing (see tests/support/crash.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.support.crash import (
    KillMode,
    RepeatKind,
    classify_repeat,
    is_torn,
    parse_body,
    plan_steps,
    run,
    sender_of,
)


@pytest.mark.timeout(300)
def test_twenty_kills_lose_and_repeat_nothing(tmp_path: Path) -> None:
    """Killed 20 times at random moments, the daemon still announces every change, condition
    and reminder exactly once (but for sends in flight at a kill)."""
    report = run(kills=20, jobs=4, seed=0, workdir=tmp_path)

    details = "\n".join([report.table(), *report.problems, *report.notes])
    assert 20 == report.kills, details
    assert 0 == report.lost, details
    assert 0 == report.repeated, details
    assert 0 == report.unexpected, details
    assert report.transitions == report.expected, details
    # Conditions and reminders were in the mix, and none was lost or repeated.
    assert (0, 0) == (report.notices_lost, report.notices_repeated), details
    assert report.notice_kinds.get("condition", 0) > 0, details
    assert report.notice_kinds.get("reminder", 0) > 0, details


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_slow_channel_in_the_mix_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """A channel whose receiver answers after 5 s (past apprise's own 4 s read timeout for
    `json://`) gets each of its messages once, but for sends in flight at a kill: none is
    given up as failed and sent again by the same incarnation."""
    report = run(kills=10, jobs=4, seed=1, workdir=tmp_path, slow=5.0)

    details = "\n".join([report.table(), *report.problems, *report.notes])
    assert 10 == report.kills, details
    assert (0, 0, 0) == (report.lost, report.repeated, report.unexpected), details
    assert (0, 0) == (report.notices_lost, report.notices_repeated), details
    assert report.slow_expected >= 2, details
    # Every copy beyond the first is a send cut by a kill.
    assert report.slow_received == report.slow_expected + report.slow_resent_copies, details


@pytest.mark.parametrize(
    ("senders", "logged", "rows", "expected"),
    [
        ([0, 1], set(), 1, RepeatKind.IN_FLIGHT),
        ([0, 1], {1}, 1, RepeatKind.IN_FLIGHT),
        ([0, 1], {0, 1}, 1, RepeatKind.TRUE),
        ([0, 3], {2}, 1, RepeatKind.TRUE),
        ([2, 2], {2}, 1, RepeatKind.TRUE),
        ([2, 2], set(), 1, RepeatKind.TRUE),
        ([4, 5, 6], {6}, 1, RepeatKind.IN_FLIGHT),
        ([4, 5, 6], {5, 6}, 1, RepeatKind.TRUE),
        ([0, 1], {1}, 2, RepeatKind.TRUE),
    ],
    ids=[
        "killed-before-logging",
        "killed-before-logging-resent-and-logged",
        "logged-sent-then-resent",
        "a-later-incarnation-logged-sent",
        "same-incarnation-twice",
        "same-incarnation-twice-unlogged",
        "two-kills-in-flight",
        "second-copy-logged-then-third",
        "two-outbox-rows",
    ],
)
def test_classify_repeat(
    senders: list[int], logged: set[int], rows: int, expected: RepeatKind
) -> None:
    """A copy sent after a `notify.sent` for its row (or by the same incarnation) is a true repeat."""
    assert expected == classify_repeat(senders, logged, rows=rows)


def test_classify_repeat_needs_two_copies() -> None:
    """One copy is no repeat, so asking is a mistake."""
    with pytest.raises(ValueError, match="two copies"):
        classify_repeat([0], set())


@pytest.mark.parametrize(
    ("received_at", "expected"),
    [(0.5, -1), (1.0, 0), (2.9, 0), (3.0, 2), (9.0, 2)],
    ids=["before-any-start", "at-first-start", "before-second-start", "at-third-start", "late"],
)
def test_sender_of(received_at: float, expected: int) -> None:
    """A post belongs to the last incarnation that had started by then (one never started)."""
    assert expected == sender_of(received_at, [1.0, None, 3.0])


def test_plan_has_exactly_the_asked_kills() -> None:
    """The plan kills exactly K times over about 1.5 K steps, every change with its own token."""
    steps = plan_steps(random.Random(7), kills=40, jobs=4)

    tokens = [change.token for step in steps for change in step.changes]
    assert 60 == len(steps)
    assert 40 == sum(step.kill is not None for step in steps)
    assert len(tokens) == len(set(tokens))
    assert all(1 <= len(step.changes) <= 3 for step in steps)
    assert {KillMode.AT_ONCE, KillMode.RANDOM} <= {step.kill for step in steps}


def test_plan_is_reproducible() -> None:
    """The same seed gives the same plan."""
    assert plan_steps(random.Random(3), kills=10, jobs=3) == plan_steps(
        random.Random(3), kills=10, jobs=3
    )


@pytest.mark.parametrize(
    ("received_at", "killed_at", "expected"),
    [
        (10.5, 10.0, True),
        (10.0, 10.0, True),
        (5.0, 10.0, False),
        (20.0, 10.0, False),
        (5.0, None, False),
    ],
    ids=["just-after-kill", "at-kill", "long-before-kill", "long-after-kill", "never-killed"],
)
def test_is_torn(received_at: float, killed_at: float | None, expected: bool) -> None:
    """Only a post cut short right after its sender's SIGKILL is excused as torn."""
    assert expected == is_torn(received_at, killed_at)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("job-1|RUNNING|FAILED|step-3-job-1", ("job-1", "RUNNING", "FAILED", "step-3-job-1")),
        ("job-1|RUNNING|FAILED|step-3-job-1\n", ("job-1", "RUNNING", "FAILED", "step-3-job-1")),
        ("The API is unreachable", None),
    ],
    ids=["body", "trailing-newline", "not-ours"],
)
def test_parse_body(body: str, expected: tuple[str, str, str, str] | None) -> None:
    """A notification body splits into job, old state, new state and token."""
    assert expected == parse_body(body)
