"""When targets are polled: intervals, slow polling, per-target and whole-API backoff.

Times are monotonic seconds (any origin: a boot-time clock of a few seconds or of a year).
"""

from __future__ import annotations

import pytest

from watcher.core.schedule import PollSchedule

T0 = 12_345.5


def at(seconds: float) -> float:
    return T0 + seconds


def schedule() -> PollSchedule:
    return PollSchedule(poll_interval=30, slow_interval=300)


def test_everything_is_due_at_first() -> None:
    """Targets never polled are due at once."""
    assert ["a", "b"] == schedule().due(["a", "b"], T0)


@pytest.mark.parametrize(
    ("settled", "due_after"),
    [
        pytest.param(False, 30, id="active: poll interval"),
        pytest.param(True, 300, id="settled: slow"),
    ],
)
def test_success_schedules_the_next_poll(settled: bool, due_after: float) -> None:
    """An answered poll waits the poll interval, or the slow interval for a settled job."""
    s = schedule()
    s.succeeded("a", T0, settled=settled)

    assert [] == s.due(["a"], at(due_after - 1))
    assert ["a"] == s.due(["a"], at(due_after))
    assert at(due_after) == s.next_at(["a"], T0)


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, 30), (2, 60), (3, 120), (4, 240), (5, 300), (60, 300)],
    ids=lambda v: str(v),
)
def test_failures_back_off_to_the_slow_interval(failures: int, delay: float) -> None:
    """Consecutive failures double the wait from the poll interval up to the slow interval."""
    s = schedule()
    for _ in range(failures):
        s.failed("a", T0)

    assert at(delay) == s.next_at(["a"], T0)


def test_success_resets_the_backoff() -> None:
    """After an answer, the next failure starts from the poll interval again."""
    s = schedule()
    for _ in range(4):
        s.failed("a", T0)
    s.succeeded("a", T0)
    s.failed("a", T0)

    assert at(30) == s.next_at(["a"], T0)


@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [
        pytest.param(None, 30, id="no hint: the first backoff step"),
        pytest.param(90.0, 90, id="retry-after longer than the backoff"),
        pytest.param(5.0, 30, id="retry-after shorter than the backoff"),
        pytest.param(86400.0, 300, id="a day's retry-after waits the slow interval"),
        pytest.param(1e20, 300, id="1e20 s neither overflows nor stalls"),
        pytest.param(float("inf"), 30, id="infinity is no hint"),
        pytest.param(float("nan"), 30, id="nan is no hint"),
        pytest.param(-5.0, 30, id="a negative hint is none"),
    ],
)
def test_failure_kinds(retry_after: float | None, delay: float) -> None:
    """A server's Retry-After is honoured when it asks for more than the backoff."""
    s = schedule()
    s.failed("a", T0, retry_after=retry_after)

    assert at(delay) == s.next_at(["a"], T0)


@pytest.mark.parametrize("retry_after", [86400.0, 1e20, 1e308], ids=["a day", "1e20 s", "1e308 s"])
def test_a_huge_retry_after_holds_the_api_back_one_slow_interval(retry_after: float) -> None:
    """The whole API waits at most the slow interval however long the server asks, and each
    such cycle still counts as down, so the outage is announced after `api_down_after`."""
    s = schedule()
    for cycle in range(3):
        s.cycle_done(at(300 * cycle), calls=1, unavailable=1, retry_after=retry_after)

    assert 3 == s.failed_cycles
    assert at(600 + 300) == s.next_at(["a"], at(600))


def test_a_dead_api_holds_every_target_back() -> None:
    """A cycle whose every call was unavailable pauses all polling, longer each time."""
    s = schedule()
    s.cycle_done(T0, calls=3, unavailable=3)
    assert 1 == s.failed_cycles
    assert [] == s.due(["never-polled"], at(29))
    assert ["never-polled"] == s.due(["never-polled"], at(30))

    s.cycle_done(at(30), calls=3, unavailable=3)
    assert 2 == s.failed_cycles
    assert at(90) == s.next_at(["never-polled"], at(30))


@pytest.mark.parametrize(
    ("calls", "unavailable", "expected_failed_cycles"),
    [
        pytest.param(0, 0, 2, id="no calls change nothing"),
        pytest.param(5, 4, 0, id="one answer means the API is up"),
        pytest.param(2, 2, 3, id="all unavailable counts"),
    ],
)
def test_cycle_accounting(calls: int, unavailable: int, expected_failed_cycles: int) -> None:
    """Only cycles in which calls were made and all failed count as the API being down."""
    s = schedule()
    s.cycle_done(T0, calls=1, unavailable=1)
    s.cycle_done(T0, calls=1, unavailable=1)

    s.cycle_done(T0, calls=calls, unavailable=unavailable)

    assert expected_failed_cycles == s.failed_cycles


def test_force_and_forget() -> None:
    """`force` makes everything due; `forget` drops a target's schedule and backoff."""
    s = schedule()
    s.succeeded("a", T0)
    s.cycle_done(T0, calls=1, unavailable=1)
    s.force()
    assert ["a"] == s.due(["a"], T0)

    s.failed("b", T0)
    s.failed("b", T0)
    s.forget(["b"])
    s.failed("b", T0)
    assert at(30) == s.next_at(["b"], T0)


def test_nothing_watched_wakes_after_an_interval() -> None:
    """With no targets the loop still wakes once per poll interval."""
    assert at(30) == schedule().next_at([], T0)


@pytest.mark.parametrize("origin", [0.0, 3.25, 86_400.0 * 365])
@pytest.mark.parametrize(
    ("events", "now", "due"),
    [
        pytest.param([("ok", 0)], 29.999, [], id="answered: not before the interval"),
        pytest.param([("ok", 0)], 30, ["a"], id="answered: due at the interval"),
        pytest.param([("settled", 0)], 299, [], id="settled: not before the slow interval"),
        pytest.param([("fail", 0), ("fail", 30)], 89, [], id="second failure waits 60 s"),
        pytest.param([("fail", 0), ("fail", 30)], 90, ["a"], id="then due"),
        pytest.param([("ok", 0), ("ok", 30), ("ok", 60)], 90, ["a"], id="a steady beat"),
    ],
)
def test_schedule_table_on_monotonic_seconds(
    origin: float, events: list[tuple[str, float]], now: float, due: list[str]
) -> None:
    """Due times are offsets on the monotonic clock, whatever its origin: no wall time enters."""
    s = schedule()
    for what, when in events:
        if what == "fail":
            s.failed("a", origin + when)
        else:
            s.succeeded("a", origin + when, settled=what == "settled")

    assert due == s.due(["a"], origin + now)
