"""The request budget: a token bucket over max_requests_per_minute, and what a cycle costs."""

from __future__ import annotations

import pytest

from watcher.core.budget import RequestBudget, effective_interval, requests_per_cycle
from watcher.core.model import JobKind, JobRef


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_five_seconds_then_the_sustained_rate() -> None:
    """At 60/min, 5 requests go at once; the 6th waits a second, the 7th two."""
    clock = Clock()
    budget = RequestBudget(60, clock=clock)

    assert 5 == budget.available()
    assert [0.0] * 5 == [budget.take() for _ in range(5)]
    assert [1.0, 2.0] == [budget.take(), budget.take()]
    assert 0 == budget.available()
    assert 3.0 == budget.seconds_until_available()


def test_refills_with_time_up_to_the_burst() -> None:
    """Tokens come back at the sustained rate and never pile up beyond the burst."""
    clock = Clock()
    budget = RequestBudget(600, clock=clock)
    for _ in range(50):
        budget.take()
    clock.now += 2.0
    assert 20 == budget.available()
    clock.now += 3600
    assert 50 == budget.available()


def test_a_minute_never_spends_more_than_the_budget_plus_the_burst() -> None:
    """Taking as fast as allowed, one minute sends at most per_minute + burst requests."""
    clock = Clock()
    budget = RequestBudget(60, clock=clock)
    sent = 0
    start = clock.now
    while clock.now - start < 60:
        wait = budget.take()
        clock.now += wait
        if clock.now - start < 60:
            sent += 1

    assert 60 <= sent <= 65


def test_rejects_a_zero_budget() -> None:
    """A budget must allow something."""
    with pytest.raises(ValueError, match="per_minute"):
        RequestBudget(0)


DPO, SFT, RFT = JobKind.DPO, JobKind.SFT, JobKind.RFT


def refs(kind: JobKind, count: int) -> list[JobRef]:
    return [JobRef(kind, f"job-{i}") for i in range(count)]


@pytest.mark.parametrize(
    ("explicit", "discovered", "pages", "expected"),
    [
        pytest.param(refs(DPO, 3), [], {}, 3, id="unknown list: GETs"),
        pytest.param(refs(DPO, 1000), [], {DPO: 5}, 5, id="explicit 1000 in a 5-page list"),
        pytest.param(refs(DPO, 2), [], {DPO: 50}, 2, id="2 jobs in a big account: GETs"),
        pytest.param([], [DPO], {DPO: 50}, 50, id="discover 10,000"),
        pytest.param([], [DPO], {}, 1, id="discover, length unknown"),
        pytest.param(refs(DPO, 7), [DPO], {DPO: 2}, 2, id="explicit jobs ride the discover list"),
        pytest.param(refs(SFT, 4) + refs(DPO, 1), [RFT], {RFT: 3}, 8, id="kinds add up"),
    ],
)
def test_requests_per_cycle(
    explicit: list[JobRef], discovered: list[JobKind], pages: dict[JobKind, int], expected: int
) -> None:
    """A cycle costs the cheaper of GETs or a LIST per kind, and a LIST per discovered kind."""
    assert expected == requests_per_cycle(explicit, discovered, pages)


@pytest.mark.parametrize(
    ("requests", "per_minute", "poll", "expected"),
    [(51, 60, 60, 60.0), (51, 60, 30, 51.0), (1000, 60, 30, 1000.0), (5, 6000, 30, 30.0)],
)
def test_effective_interval(requests: int, per_minute: int, poll: float, expected: float) -> None:
    """When a cycle costs more than the budget allows per interval, the interval stretches."""
    assert expected == effective_interval(requests, per_minute, poll)
