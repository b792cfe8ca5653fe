"""The retry schedule of failed sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watcher.core.delivery import RetryPolicy, next_attempt

CREATED = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempts", "low", "high"),
    [
        pytest.param(1, 0.5, 1.0, id="first retry about 1 s"),
        pytest.param(2, 1.0, 2.0, id="doubles"),
        pytest.param(4, 4.0, 8.0, id="keeps doubling"),
        pytest.param(7, 30.0, 60.0, id="capped at 60 s"),
        pytest.param(5000, 30.0, 60.0, id="huge attempt counts stay capped"),
    ],
)
@pytest.mark.parametrize("jitter", [0.0, 0.999])
def test_backoff_doubles_with_jitter(attempts: int, low: float, high: float, jitter: float) -> None:
    """Delays double from 1 s up to the cap, jittered within the upper half of the window."""
    now = CREATED + timedelta(seconds=5)

    retry_at = next_attempt(
        RetryPolicy(), attempts=attempts, created_at=CREATED, now=now, rand=lambda: jitter
    )

    assert retry_at is not None
    assert low <= (retry_at - now).total_seconds() <= high


def test_gives_up_after_the_deadline() -> None:
    """After `give_up_after` seconds a delivery is declared dead."""
    policy = RetryPolicy(give_up_after=3600)
    now = CREATED + timedelta(hours=1)

    assert next_attempt(policy, attempts=3, created_at=CREATED, now=now, rand=lambda: 0.5) is None
