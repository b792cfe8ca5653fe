"""Chaos in CI: 3 replicas on one PostgreSQL database through about 20 kills, stops, cuts and
one server restart lose and truly repeat nothing, and fail over within 2 poll intervals (see
tests/support/chaos.py)."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.chaos import (
    EventKind,
    classify_copies,
    event_kinds,
    holder_pid,
    peak_per_minute,
    plan_chaos,
    run,
    terms,
)
from tests.support.crash import RepeatKind


@pytest.mark.timeout(240)
@pytest.mark.restarts_postgres
def test_twenty_events_on_three_replicas_lose_and_repeat_nothing(
    pg_dsn: str, tmp_path: Path
) -> None:
    """Leaders killed and frozen, standbys killed, connections cut and PostgreSQL restarted:
    every change still arrives, none twice but for sends in flight, and a standby takes over
    within 2 poll intervals."""
    report = run(
        20, replicas=3, seed=0, poll=1.0, backend="postgresql", dsn=pg_dsn, workdir=tmp_path
    )

    details = "\n".join([report.table(), *report.problems, *report.notes])
    assert [] == report.problems, details
    assert 0 == report.lost, details
    assert 0 == report.true_repeats, details
    assert 0 == report.unexpected, details
    assert 0 == report.self_exits, details
    assert report.failover_max is not None, details
    assert report.failover_max <= 2 * report.poll, details
    assert 1 == report.events.get(EventKind.PG_RESTART), details
    assert set(event_kinds("postgresql", 3)) == set(report.events), details
    assert 20 == report.kills, details
    assert report.requests_per_minute <= report.budget, details
    assert 0 == report.stray_requests, details  # only the lease holder polled


def test_plan_has_every_kind_and_one_restart() -> None:
    """Twenty events hold every kind, the PostgreSQL restart exactly once, reproducibly."""
    kinds = event_kinds("postgresql", 3)
    plan = plan_chaos(random.Random(5), events=20, jobs=4, kinds=kinds)

    drawn = [step.kind for step in plan]
    assert 20 == len(plan)
    assert set(kinds) == set(drawn)
    assert 1 == drawn.count(EventKind.PG_RESTART)
    assert all(step.step.kill is not None for step in plan)
    assert plan == plan_chaos(random.Random(5), events=20, jobs=4, kinds=kinds)


def test_sqlite_has_no_standby_cut_or_restart() -> None:
    """One replica on a file: only the leader can be struck."""
    assert {EventKind.KILL_LEADER, EventKind.STOP_LEADER} == set(event_kinds("sqlite", 1))


def _never(incarnation: int, start: float, end: float, same: bool) -> bool:
    return False


def _struck(who: int, at: float, *, cut: bool = False):  # type: ignore[no-untyped-def]
    def disrupted(incarnation: int, start: float, end: float, same: bool) -> bool:
        if same and not cut:
            return False
        return incarnation in (who, -1) and start - 2 <= at <= end

    return disrupted


@pytest.mark.parametrize(
    ("copies", "logged", "disrupted", "expected"),
    [
        ([(0, 1.0), (1, 40.0)], {1: 40.1}, _struck(0, 1.2), RepeatKind.IN_FLIGHT),
        ([(0, 1.0), (1, 40.0)], {0: 1.1}, _struck(0, 1.2), RepeatKind.TRUE),
        ([(0, 1.0), (1, 40.0)], {}, _never, RepeatKind.TRUE),
        ([(0, 1.0), (1, 40.0)], {}, _struck(2, 1.2), RepeatKind.TRUE),
        ([(0, 1.0), (0, 40.0)], {}, _struck(0, 1.2), RepeatKind.TRUE),
        ([(0, 1.0), (0, 40.0)], {0: 40.1}, _struck(0, 1.2, cut=True), RepeatKind.IN_FLIGHT),
        ([(-1, 1.0), (1, 40.0)], {}, _struck(0, 1.2), RepeatKind.IN_FLIGHT),
        ([(0, 1.0), (1, 40.0)], {0: 1.1, 1: 40.1}, _struck(0, 1.2), RepeatKind.TRUE),
    ],
    ids=[
        "killed-in-flight-resent-by-another",
        "settled-then-resent",
        "nobody-struck",
        "another-replica-struck",
        "same-replica-after-a-kill",
        "same-replica-after-a-cut",
        "unattributed-first-copy-near-a-kill",
        "two-settles",
    ],
)
def test_classify_copies(
    copies: list[tuple[int, float]],
    logged: dict[int, float],
    disrupted: object,
    expected: RepeatKind,
) -> None:
    """A copy is allowed only after its earlier sender was struck and before any settle."""
    assert expected == classify_copies(copies, logged, disrupted)  # type: ignore[arg-type]


def test_classify_copies_needs_two_and_one_row() -> None:
    """One copy is no repeat; two outbox rows for one change are a repeat by themselves."""
    with pytest.raises(ValueError, match="two copies"):
        classify_copies([(0, 1.0)], {}, _never)
    assert RepeatKind.TRUE == classify_copies([(0, 1.0), (1, 2.0)], {}, _struck(0, 1.5), rows=2)


@pytest.mark.parametrize(
    ("holder", "expected"),
    [("web-1-4242-ab12", 4242), ("host-77-0f0f", 77), ("nonsense", None), ("h-x-ab12", None)],
)
def test_holder_pid(holder: str, expected: int | None) -> None:
    """The pid is the second field from the right of a holder's name."""
    assert expected == holder_pid(holder)


def test_peak_per_minute() -> None:
    """The busiest 60 s window, or the rate of a shorter run."""
    assert 0.0 == peak_per_minute([])
    assert 62.0 == pytest.approx(peak_per_minute([float(t) for t in range(31)]))  # 31 in 30 s
    bursty = [float(t) for t in range(0, 120, 2)] + [10.0 + t / 10 for t in range(50)]
    assert 80.0 == peak_per_minute(bursty)


def test_terms_run_from_acquired_to_a_step_down_or_the_kill() -> None:
    """A replica leads from `lease.acquired` to its step-down; a killed one until its kill."""
    events = ["lease.acquired", "notify.sent", "lease.expired", "lease.acquired", "lease.lost"]
    daemon = SimpleNamespace(
        events=[{"event": e} for e in [*events, "lease.acquired"]],
        seen_at=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        killed_at=9.0,
    )
    assert [(1.0, 3.0), (4.0, 5.0), (6.0, 9.0)] == terms(daemon)  # type: ignore[arg-type]
