"""The leadership runtime on both backends: one of several replicas leads; a frozen or cut-off
leader is replaced, steps down when it wakes, and its writes are refused; a term of polling
ends by itself when the lease may have passed on; a clean stop hands the lease over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import pytest

from tests.support.backends import OpenStore, Store
from watcher.core.decision import Decision
from watcher.core.errors import Fenced
from watcher.core.lease import LEADER, POLLER, STANDBY, Lease
from watcher.core.model import JobKind, JobRef, JobSnapshot
from watcher.runtime.leadership import Leadership, replica_name

pytestmark = pytest.mark.anyio


class Seen:
    """An observer of lease checks (the health server's part)."""

    def __init__(self) -> None:
        self.checks: list[tuple[str, Lease | None, bool]] = []

    def leadership(self, role: str, lease: Lease | None, *, reachable: bool) -> None:
        self.checks.append((role, lease, reachable))


def replica(store: Store, name: str, *, ttl: float = 30.0, seen: Seen | None = None) -> Leadership:
    return Leadership(
        store,
        fence=store.fence,
        holder=name,
        ttl=ttl,
        started_at=datetime.now(UTC),
        observer=seen,  # type: ignore[arg-type]
    )


def snapshot(job: str) -> JobSnapshot:
    return JobSnapshot(ref=JobRef(JobKind.SFT, job), state="RUNNING", account_id="acme")


async def test_one_of_two_replicas_leads(stores: OpenStore) -> None:
    seen = Seen()
    a, b = replica(await stores(), "a", seen=seen), replica(await stores(), "b")

    await a.check()
    await b.check()

    assert (a.role, a.epoch, b.role) == (LEADER, 1, STANDBY)
    assert b.lease is not None
    assert b.lease.holder == "a"
    assert seen.checks[-1][0] == LEADER
    assert seen.checks[-1][2] is True


async def test_a_frozen_leader_is_replaced_steps_down_and_writes_nothing(
    stores: OpenStore,
) -> None:
    """A froze (it stopped renewing) past its lease; B takes over with the next epoch; when A
    wakes, its first write is refused, and its next check makes it a standby."""
    store_a, store_b = await stores(), await stores()
    a, b = replica(store_a, "a", ttl=0.0), replica(store_b, "b")
    await a.check()  # a lease of no time: expired as soon as taken

    await b.check()
    with pytest.raises(Fenced):
        await store_a.record(Decision([snapshot("stale")], [], now=datetime.now(UTC)))
    await a.check()

    assert (b.role, b.epoch) == (LEADER, 2)
    assert a.role == STANDBY
    assert await store_b.last_all() == {}


async def test_losing_the_lease_ends_the_term(stores: OpenStore) -> None:
    a, b = replica(await stores(), "a", ttl=0.0), replica(await stores(), "b")
    await a.check()
    a.ttl = 30.0  # its term, as it counts it, is long; the store says otherwise
    ended = anyio.Event()

    async def poll_in_term() -> None:
        async with a.term():
            await anyio.sleep_forever()
        ended.set()

    async with anyio.create_task_group() as tg:
        await a.check()  # renewed: its term now runs 30 s on its clock
        tg.start_soon(poll_in_term)
        await anyio.wait_all_tasks_blocked()
        await (await stores()).release_lease(POLLER, "a")  # as if it had expired
        await b.check()
        await a.check()
        with anyio.fail_after(5):
            await ended.wait()

    assert a.role == STANDBY
    assert b.role == LEADER


async def test_a_term_ends_by_itself_when_renewals_stop(any_store: Store) -> None:
    """No check succeeds (the database is gone, or the process froze): the term ends at the
    lease's end on the replica's own clock, without waiting for the next check."""
    a = replica(any_store, "a", ttl=0.2)
    await a.check()
    began = anyio.current_time()

    with anyio.fail_after(5):
        async with a.term():
            await anyio.sleep_forever()

    assert anyio.current_time() - began >= 0.15


async def test_a_clean_stop_hands_the_lease_over_at_once(stores: OpenStore) -> None:
    a, b = replica(await stores(), "a"), replica(await stores(), "b")
    await a.check()

    await a.release()
    await b.check()

    assert (a.role, b.role, b.epoch) == (STANDBY, LEADER, 2)


async def test_an_unreachable_store_is_told_and_changes_nothing(any_store: Store) -> None:
    seen = Seen()
    a = replica(any_store, "a", seen=seen)
    await a.check()
    await any_store.aclose()

    await a.check()

    assert a.role == LEADER  # until its term runs out (the term's deadline)
    assert seen.checks[-1][2] is False


async def test_heartbeats_name_every_replica_with_its_role(stores: OpenStore) -> None:
    from datetime import timedelta

    a, b = replica(await stores(), "a"), replica(await stores(), "b")
    await a.check()
    await b.check()

    found = await (await stores()).replicas(seen_within=timedelta(minutes=1))

    assert [(r.holder, r.role) for r in found] == [("a", LEADER), ("b", STANDBY)]


def test_replica_names_differ_between_processes_and_restarts() -> None:
    first, second = replica_name(), replica_name()

    assert first != second
    assert first.rsplit("-", 2)[0] == second.rsplit("-", 2)[0]  # the same host


async def test_an_exclusive_replica_keeps_polling_through_a_slow_renewal(any_store: Store) -> None:
    """One process on its own file (SQLite's lock): nobody could take over, so a renewal that
    comes late (a slow disk, a busy loop) never ends the term."""
    a = Leadership(
        any_store,
        fence=any_store.fence,
        holder="a",
        ttl=0.05,
        started_at=datetime.now(UTC),
        exclusive=True,
    )
    await a.check()

    with anyio.move_on_after(0.3) as waited:
        async with a.term():
            await anyio.sleep_forever()
    await a.check()

    assert waited.cancelled_caught  # the term outlived its lease time: ended by the test
    assert a.role == LEADER


class Silent:
    """A store whose answers stopped coming (a partition): lease calls wait forever."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.silent = False

    async def acquire_lease(self, name: str, holder: str, *, ttl: timedelta) -> Lease:
        if self.silent:
            await anyio.sleep_forever()
        return await self._store.acquire_lease(name, holder, ttl=ttl)

    async def beat(self, holder: str, *, role: str, started_at: datetime) -> None:
        if self.silent:
            await anyio.sleep_forever()
        await self._store.beat(holder, role=role, started_at=started_at)


@pytest.mark.slow  # waits out a lease check's own deadline (4 s a backend)
async def test_a_check_without_an_answer_gives_up_and_steps_down(
    any_store: Store,
) -> None:
    """No answer at all (not an error): each check gives up after two lease times (at least
    2 s), says the database is unreachable, and the leader whose lease has run out steps
    down."""
    seen = Seen()
    silent = Silent(any_store)
    a = Leadership(
        silent,  # type: ignore[arg-type]
        fence=any_store.fence,
        holder="a",
        ttl=0.2,
        started_at=datetime.now(UTC),
        observer=seen,  # type: ignore[arg-type]
    )
    await a.check()
    silent.silent = True

    with anyio.fail_after(10):
        await a.check()
        await a.check()

    assert a.role == STANDBY
    assert [reachable for _, _, reachable in seen.checks] == [True, False, False]
