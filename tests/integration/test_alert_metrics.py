"""The alerting metrics, scraped over real loopback HTTP: job states (with their switch and
cap), open conditions and silenced messages."""

from __future__ import annotations

import logging

import pytest

from tests.support.health import Clock, sample, samples, serving
from watcher.core.conditions import ConditionName
from watcher.web.health import Health

STATE = "fireworks_watcher_job_state"


async def scrape(health: Health) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with serving(health) as client:
        response = await client.get("/metrics")
    return samples(response.text)


def job_series(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    """`kind/job=STATE` for every job state series."""
    return {
        f"{labels['kind']}/{labels['job']}={labels['state']}"
        for (name, pairs), value in found.items()
        if name == STATE and value == 1.0
        for labels in [dict(pairs)]
    }


@pytest.fixture
def clock() -> Clock:
    """A clock standing still."""
    return Clock()


@pytest.fixture
def health(clock: Clock) -> Health:
    """A health observer that renders every scrape anew."""
    return Health(poll_interval=30, clock=clock, metrics_max_age=0)


@pytest.mark.parametrize(
    ("updates", "expected"),
    [
        pytest.param([{"dpo/a": ("dpo", "a", "RUNNING")}], {"dpo/a=RUNNING"}, id="one"),
        pytest.param(
            [{"dpo/a": ("dpo", "a", "RUNNING")}, {"dpo/a": ("dpo", "a", "COMPLETED")}],
            {"dpo/a=COMPLETED"},
            id="moved-old-series-gone",
        ),
        pytest.param(
            [
                {"dpo/a": ("dpo", "a", "RUNNING"), "sft/b": ("sft", "b", "PENDING")},
                {"dpo/a": ("dpo", "a", "")},
            ],
            {"sft/b=PENDING"},
            id="forgotten",
        ),
        pytest.param([{"dpo/a": ("dpo", "a", "")}], set(), id="forgetting-an-unknown-job"),
        pytest.param(
            [{"dpo/a": ("dpo", "a", "\x1b[2J" * 100)}], {"dpo/a=other"}, id="unknown-state"
        ),
        pytest.param([{"x/a": ("nope", "a", "RUNNING")}], {"other/a=other"}, id="unknown-kind"),
        pytest.param([{"dpo/a": ("dpo", "a b", "RUNNING")}], set(), id="not-an-id"),
        pytest.param(
            [{"dpo/a": ("dpo", "a", "JOB_STATE_FAILED")}], {"dpo/a=other"}, id="long-form"
        ),
    ],
)
async def test_job_state(
    health: Health, updates: list[dict[str, tuple[str, str, str]]], expected: set[str]
) -> None:
    """One series per job, 1 for its current state, labels from bounded sets."""
    for states in updates:
        health.job_states(states)

    assert expected == job_series(await scrape(health))


async def test_job_state_switch_off(clock: Clock) -> None:
    """With `job_state_metrics = false` there is no job state metric at all."""
    health = Health(poll_interval=30, clock=clock, job_state_metrics=False)
    health.job_states({"dpo/a": ("dpo", "a", "RUNNING")})

    found = await scrape(health)

    assert [] == [name for name, _ in found if name == STATE]


async def test_job_state_cap(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    """Past the cap new jobs get no series and one warning is logged; known jobs still move,
    and a forgotten job frees its place."""
    health = Health(poll_interval=30, clock=clock, metrics_max_age=0, max_job_series=2)
    with caplog.at_level(logging.WARNING):
        health.job_states({f"dpo/j{i}": ("dpo", f"j{i}", "RUNNING") for i in range(4)})
        health.job_states({"dpo/j0": ("dpo", "j0", "FAILED"), "dpo/j9": ("dpo", "j9", "PENDING")})
    assert {"dpo/j0=FAILED", "dpo/j1=RUNNING"} == job_series(await scrape(health))

    health.job_states({"dpo/j1": ("dpo", "j1", ""), "dpo/j3": ("dpo", "j3", "RUNNING")})

    assert {"dpo/j0=FAILED", "dpo/j3=RUNNING"} == job_series(await scrape(health))
    assert ["metrics.job_states_capped"] == [r.getMessage() for r in caplog.records]


async def test_conditions_open(health: Health) -> None:
    """Every condition name is exported, zeros included; each report replaces the last."""
    before = await scrape(health)
    health.conditions({"stalled": 3, "api_down": 1})
    health.conditions({"stalled": 2, "unreadable": 1})

    found = await scrape(health)

    name = "fireworks_watcher_conditions_open"
    assert {str(c): 0.0 for c in ConditionName} == {
        str(c): sample(before, name, condition=str(c)) for c in ConditionName
    }
    assert {"stalled": 2.0, "pending_too_long": 0.0, "max_runtime": 0.0, "unreadable": 1.0,
            "api_down": 0.0, "key_rejected": 0.0, "flapping": 0.0} == {
        str(c): sample(found, name, condition=str(c)) for c in ConditionName
    }  # fmt: skip


async def test_silenced_total(health: Health) -> None:
    """Each silenced message counts for its channel."""
    health.silenced("ml-team")
    health.silenced("ml-team")
    health.silenced("oncall")

    found = await scrape(health)

    assert (2.0, 1.0) == (
        sample(found, "fireworks_watcher_silenced_total", channel="ml-team"),
        sample(found, "fireworks_watcher_silenced_total", channel="oncall"),
    )
