"""Health of a replica by role, over real loopback HTTP: a standby does not poll, so its
liveness and readiness follow its lease checks; /readyz names the role and the lease holder;
`fireworks_watcher_leader` and `fireworks_watcher_lease_epoch` follow the checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.health import OK, Clock, serving
from watcher.core.lease import LEADER, POLLER, STANDBY, Lease
from watcher.web.health import Health

pytestmark = pytest.mark.anyio


def lease(holder: str, epoch: int, at: datetime) -> Lease:
    return Lease(POLLER, holder, epoch, at + timedelta(seconds=30), at)


def gauge(health: Health, name: str) -> float:
    for family in text_string_to_metric_families(health.metrics().decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no {name}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_a_standby_is_ready_and_alive_while_its_lease_checks_succeed(clock: Clock) -> None:
    health = Health(poll_interval=30, clock=clock)
    health.leadership(STANDBY, lease("pod-a", 3, clock.now), reachable=True)
    clock.advance(600)  # no poll cycle ever: a standby does not poll
    health.leadership(STANDBY, lease("pod-a", 3, clock.now), reachable=True)

    async with serving(health) as client:
        ready = await client.get("/readyz")
        alive = await client.get("/healthz")

    assert (ready.status_code, alive.status_code) == (200, 200)
    assert ready.text.splitlines() == ["ready", "role: standby", "lease holder: pod-a (epoch 3)"]
    assert gauge(health, "fireworks_watcher_leader") == 0
    assert gauge(health, "fireworks_watcher_lease_epoch") == 3


async def test_a_standby_that_cannot_reach_the_database_is_not_ready(clock: Clock) -> None:
    health = Health(poll_interval=30, clock=clock)
    health.leadership(STANDBY, lease("pod-a", 3, clock.now), reachable=True)
    clock.advance(30)
    health.leadership(STANDBY, lease("pod-a", 3, clock.now), reachable=False)

    ready, reasons = health.readiness()
    alive, _why = health.liveness()

    assert not ready
    assert "cannot reach the state database" in reasons[0]
    assert alive  # within the liveness window still
    clock.advance(600)
    assert health.liveness()[0] is False
    assert "no lease check" in health.liveness()[1]


async def test_a_leader_is_judged_by_its_polls(clock: Clock) -> None:
    health = Health(poll_interval=30, clock=clock)
    health.leadership(LEADER, lease("me", 4, clock.now), reachable=True)
    assert health.readiness() == (False, ["no successful poll yet"])

    health.cycle_done(OK, at=clock.now)

    assert health.readiness() == (True, [])
    assert health.warnings()[:2] == ["role: leader", "lease holder: me (epoch 4)"]
    assert gauge(health, "fireworks_watcher_leader") == 1


def test_one_process_without_a_lease_loop_says_nothing_of_roles() -> None:
    health = Health(poll_interval=30, clock=lambda: datetime.now(UTC))

    assert health.warnings() == []
