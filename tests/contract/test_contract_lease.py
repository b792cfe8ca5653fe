"""The contract of the leadership lease and the fence, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import pytest

from tests.support.backends import OpenStore, Store
from watcher.core.decision import Decision
from watcher.core.errors import Fenced
from watcher.core.lease import LEADER, POLLER, STANDBY, Lease
from watcher.core.model import JobKind, JobRef, JobSnapshot
from watcher.stores.aio import AsyncStore
from watcher.stores.pg.store import PgStore

pytestmark = pytest.mark.anyio
TTL = timedelta(seconds=30)


def snapshot(job: str = "a", state: str = "RUNNING") -> JobSnapshot:
    return JobSnapshot(ref=JobRef(JobKind.SFT, job), state=state, account_id="acme")


async def test_the_first_taker_holds_the_lease_at_epoch_1(any_store: Store) -> None:
    lease = await any_store.acquire_lease(POLLER, "a", ttl=TTL)

    assert (lease.holder, lease.epoch) == ("a", 1)
    assert lease.expires_at > lease.renewed_at
    assert await any_store.lease(POLLER) == lease


async def test_another_replica_cannot_take_a_live_lease(stores: OpenStore) -> None:
    first, second = await stores(), await stores()
    await first.acquire_lease(POLLER, "a", ttl=TTL)

    seen = await second.acquire_lease(POLLER, "b", ttl=TTL)

    assert (seen.holder, seen.epoch) == ("a", 1)


async def test_renewing_keeps_the_epoch(any_store: Store) -> None:
    taken = await any_store.acquire_lease(POLLER, "a", ttl=TTL)
    renewed = await any_store.acquire_lease(POLLER, "a", ttl=TTL)

    assert renewed.epoch == taken.epoch
    assert renewed.expires_at >= taken.expires_at


async def test_a_released_lease_is_taken_over_with_the_next_epoch(stores: OpenStore) -> None:
    first, second = await stores(), await stores()
    await first.acquire_lease(POLLER, "a", ttl=TTL)
    await first.release_lease(POLLER, "a")

    taken = await second.acquire_lease(POLLER, "b", ttl=TTL)

    assert (taken.holder, taken.epoch) == ("b", 2)


async def test_an_expired_lease_is_taken_over(stores: OpenStore) -> None:
    first, second = await stores(), await stores()
    await first.acquire_lease(POLLER, "a", ttl=timedelta(0))

    taken = await second.acquire_lease(POLLER, "b", ttl=TTL)

    assert (taken.holder, taken.epoch) == ("b", 2)


async def test_release_by_another_holder_changes_nothing(any_store: Store) -> None:
    taken = await any_store.acquire_lease(POLLER, "a", ttl=TTL)
    await any_store.release_lease(POLLER, "b")

    assert await any_store.lease(POLLER) == taken


async def test_a_fenced_write_under_the_current_epoch_is_recorded(any_store: Store) -> None:
    lease = await any_store.acquire_lease(POLLER, "a", ttl=TTL)
    any_store.fence(lease.epoch)

    await any_store.record(Decision([snapshot()], [], now=datetime.now(UTC)))

    assert set(await any_store.last_all()) == {snapshot().ref.key}


async def test_a_deposed_leader_records_nothing(stores: OpenStore) -> None:
    """The leader froze past its lease; a standby took over; the old leader wakes up and
    tries to write what it polled: refused, and nothing of it is stored."""
    old, new = await stores(), await stores()
    deposed = await old.acquire_lease(POLLER, "a", ttl=timedelta(0))
    old.fence(deposed.epoch)
    current = await new.acquire_lease(POLLER, "b", ttl=TTL)
    new.fence(current.epoch)

    with pytest.raises(Fenced, match="epoch 2"):
        await old.record(Decision([snapshot("stale")], [], now=datetime.now(UTC), flags={"x": "1"}))
    with pytest.raises(Fenced):
        await old.forget(["sft/stale"])
    with pytest.raises(Fenced):
        await old.prune_history(datetime.now(UTC))
    await new.record(Decision([snapshot("fresh")], [], now=datetime.now(UTC)))

    assert set(await new.last_all()) == {snapshot("fresh").ref.key}
    assert await new.flag("x") is None


async def test_unfenced_writes_are_not_checked(any_store: Store) -> None:
    await any_store.record(Decision([snapshot()], [], now=datetime.now(UTC)))

    assert len(await any_store.last_all()) == 1


async def test_heartbeats_list_the_replicas_leader_first(stores: OpenStore) -> None:
    first, second = await stores(), await stores()
    started = datetime.now(UTC)
    await first.beat("b-standby", role=STANDBY, started_at=started)
    await second.beat("z-leader", role=LEADER, started_at=started)
    await first.beat("a-standby", role=STANDBY, started_at=started)

    replicas = await second.replicas(seen_within=timedelta(minutes=1))

    assert [(r.holder, r.role) for r in replicas] == [
        ("z-leader", LEADER),
        ("a-standby", STANDBY),
        ("b-standby", STANDBY),
    ]
    assert await first.replicas(seen_within=timedelta(0) - timedelta(seconds=5)) == []


async def test_a_heartbeat_updates_the_role(any_store: Store) -> None:
    started = datetime.now(UTC)
    await any_store.beat("a", role=STANDBY, started_at=started)
    await any_store.beat("a", role=LEADER, started_at=started)

    (replica,) = await any_store.replicas(seen_within=timedelta(minutes=1))

    assert replica.role == LEADER


async def test_replicas_racing_for_an_expired_lease_give_it_to_exactly_one(
    stores: OpenStore,
) -> None:
    """Five replicas on one database take the lease at the same moment: first when no one
    ever held it, then, round after round, when it has expired. Each time exactly one holds
    it, at exactly the next epoch, and the others see it held."""
    racers = [await stores() for _ in range(5)]
    for round_ in range(1, 7):
        seen: dict[str, Lease] = {}

        async def take(holder: str, store: Store, seen: dict[str, Lease] = seen) -> None:
            seen[holder] = await store.acquire_lease(POLLER, holder, ttl=TTL)

        async with anyio.create_task_group() as tg:
            for i, store in enumerate(racers):
                tg.start_soon(take, f"r{round_}-{i}", store)

        winners = [holder for holder, lease in seen.items() if lease.held_by(holder)]
        assert 1 == len(winners), seen
        assert {(winners[0], round_)} == {(lease.holder, lease.epoch) for lease in seen.values()}
        assert seen[winners[0]] == await racers[0].lease(POLLER)
        await racers[0].release_lease(POLLER, winners[0])


def hold_after_the_fence(
    store: Store, monkeypatch: pytest.MonkeyPatch, inside: anyio.Event, go: anyio.Event
) -> None:
    """Make `store`'s writes stop right after their fence check (inside the transaction)
    until `go` is set, having set `inside`."""
    if isinstance(store, PgStore):
        checked = store.lease_table.check_fence

        async def held(conn: Any) -> None:
            await checked(conn)
            inside.set()
            await go.wait()

        monkeypatch.setattr(store.lease_table, "check_fence", held)
        return
    assert isinstance(store, AsyncStore)
    checked_sync = store.sync.lease_table.check_fence

    def held_sync(conn: Any) -> None:
        checked_sync(conn)
        anyio.from_thread.run_sync(inside.set)
        anyio.from_thread.run(go.wait)

    monkeypatch.setattr(store.sync.lease_table, "check_fence", held_sync)


async def test_a_takeover_waits_for_a_write_under_the_old_epoch(
    stores: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader's write has passed its fence check when a standby takes the (expired) lease:
    the takeover waits for that write to end, so no write of the old epoch lands after the
    new epoch began; the old leader's next write is refused."""
    old, new = await stores(), await stores()
    deposed = await old.acquire_lease(POLLER, "a", ttl=timedelta(0))
    old.fence(deposed.epoch)
    inside, go, done = anyio.Event(), anyio.Event(), anyio.Event()
    hold_after_the_fence(old, monkeypatch, inside, go)
    taken: list[Lease] = []

    async def take_over() -> None:
        taken.append(await new.acquire_lease(POLLER, "b", ttl=TTL))
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(
            partial(old.record, Decision([snapshot("during")], [], now=datetime.now(UTC)))
        )
        try:
            await inside.wait()
            tg.start_soon(take_over)
            with anyio.move_on_after(0.5):
                await done.wait()
            assert [] == taken, "the takeover did not wait for the write holding the fence"
        finally:
            go.set()

    assert [("b", 2)] == [(lease.holder, lease.epoch) for lease in taken]
    assert {"sft/during"} == set(await new.last_all())
    with pytest.raises(Fenced, match="epoch 2"):
        await old.record(Decision([snapshot("after")], [], now=datetime.now(UTC)))
    assert {"sft/during"} == set(await new.last_all())
