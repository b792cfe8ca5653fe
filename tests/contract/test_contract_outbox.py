"""The contract of the outbox, on both backends: claims keep each job's order per target,
leases end, settles under a lost claim change nothing, silences are announced once; and
three replicas draining one outbox at once deliver every row exactly once, in order."""

from __future__ import annotations

import random
import sqlite3
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from tests.support.backends import OpenStore, Store
from watcher.core.conditions import Condition, ConditionName
from watcher.core.decision import Decision
from watcher.core.delivery import Delivery, Event, Mark, MarkKind, OutboxEntry
from watcher.core.errors import LeaseLost
from watcher.core.silences import Silence
from watcher.stores.aio import AsyncStore

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
TARGET = "target-1"
OTHER = "target-2"


def entry(
    job: str = "dpo/a",
    *,
    url_key: str = TARGET,
    minutes: int = 0,
    new_state: str = "RUNNING",
    event: Event | None = None,
    not_before: datetime | None = None,
) -> OutboxEntry:
    """An outbox entry for `job` at target `url_key`, created `minutes` after T0."""
    created = T0 + timedelta(minutes=minutes)
    return OutboxEntry(
        job_key=job,
        channel="team",
        url_key=url_key,
        url_display=f"json://{url_key}",
        old_state="PENDING",
        new_state=new_state,
        created_at=created,
        event=event
        or Event(job, "PENDING", new_state, created, (("job", job), ("n", str(minutes)))),
        not_before=not_before,
    )


def ids(deliveries: list[Delivery]) -> list[int]:
    return [d.id for d in deliveries]


async def raw(store: Store, statement: str) -> None:
    """Run one statement on the store's database as another tool would."""
    if isinstance(store, AsyncStore):
        await anyio.to_thread.run_sync(_sqlite, store.sync.path, statement)
    else:
        async with store.db.tx() as conn:
            await conn.execute(statement)


def _sqlite(path: Path, statement: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(statement)
    finally:
        conn.close()


async def test_claim_keeps_each_jobs_order_per_target(any_store: Store) -> None:
    """A job's later row waits for its earlier one at that target, even while it is retried;
    other jobs and other targets go on."""
    store = any_store
    await store.record(Decision([], [entry("dpo/a"), entry("dpo/a", minutes=1)], now=T0))
    await store.record(Decision([], [entry("dpo/b"), entry("dpo/a", url_key=OTHER)], now=T0))
    later = T0 + timedelta(minutes=2)

    first = await store.claim(later, holder="d", lease=LEASE)
    await store.mark_retry(1, next_attempt_at=later + timedelta(minutes=5), error="503", claim="d")
    await store.mark_delivered(3, now=later, claim="d")
    await store.mark_delivered(4, now=later, claim="d")
    while_retrying = await store.claim(later, holder="d", lease=LEASE)
    retried = await store.claim(later + timedelta(minutes=5), holder="d", lease=LEASE)
    await store.mark_delivered(1, now=later, claim="d")
    after = await store.claim(later + timedelta(minutes=5), holder="d", lease=LEASE)

    assert [1, 3, 4] == ids(first)
    assert {"d"} == {d.claim for d in first}
    assert ([], [1], [2]) == (ids(while_retrying), ids(retried), ids(after))
    assert 1 == retried[0].attempts


async def test_a_claimed_row_is_not_claimed_again_while_its_lease_runs(stores: OpenStore) -> None:
    """Two replicas: the second finds nothing the first holds."""
    one, two = await stores(), await stores()
    await one.record(Decision([], [entry("dpo/a"), entry("dpo/b")], now=T0))

    first = await one.claim(T0, holder="d1", lease=LEASE)
    again = await two.claim(T0 + timedelta(seconds=1), holder="d2", lease=LEASE)
    target = await two.claim_target(TARGET, T0, holder="d2", lease=LEASE)

    assert ([1, 2], [], []) == (ids(first), ids(again), ids(target))


async def test_busy_targets_are_skipped(any_store: Store) -> None:
    """Rows of a target with a send in flight are left for its own lane."""
    await any_store.record(Decision([], [entry("dpo/a"), entry("dpo/b", url_key=OTHER)], now=T0))

    assert [2] == ids(await any_store.claim(T0, holder="d", lease=LEASE, busy=[TARGET]))


async def test_claim_limit_takes_the_oldest(any_store: Store) -> None:
    """At most `limit` rows, oldest first; the rest stay claimable."""
    await any_store.record(Decision([], [entry(f"dpo/{n}") for n in range(5)], now=T0))

    first = await any_store.claim(T0, holder="d", lease=LEASE, limit=2)
    rest = await any_store.claim(T0, holder="d", lease=LEASE)

    assert ([1, 2], [3, 4, 5]) == (ids(first), ids(rest))


async def test_an_expired_lease_is_claimed_again_and_the_old_mark_refused(
    stores: OpenStore,
) -> None:
    """A holder presumed dead loses its rows: another replica's claim takes them, and the
    late mark fails and changes nothing."""
    old, new = await stores(), await stores()
    await old.record(Decision([], [entry("dpo/a")], now=T0))
    (mine,) = await old.claim(T0, holder="old", lease=LEASE)

    (theirs,) = await new.claim(T0 + LEASE + timedelta(seconds=1), holder="new", lease=LEASE)
    with pytest.raises(LeaseLost):
        await old.mark_delivered(mine.id, now=T0, claim="old")
    (still,) = await new.undelivered()
    await new.mark_delivered(theirs.id, now=T0, claim="new")

    assert ("pending", "new") == (still.status, still.claim)
    assert [] == await old.undelivered()


@pytest.mark.parametrize("settle", ["delivered", "retry", "dead", "hold", "silenced"])
async def test_a_settle_under_a_lost_claim_changes_nothing(any_store: Store, settle: str) -> None:
    """Every mark names its claim: under another one it raises LeaseLost, row untouched."""
    store = any_store
    await store.record(Decision([], [entry("dpo/a")], now=T0))
    await store.claim(T0, holder="owner", lease=LEASE)
    later = T0 + timedelta(hours=1)

    settles = {
        "delivered": lambda: store.mark_delivered(1, now=later, claim="thief"),
        "retry": lambda: store.mark_retry(1, next_attempt_at=later, error="x", claim="thief"),
        "dead": lambda: store.mark_dead(1, now=later, error="x", claim="thief"),
        "hold": lambda: store.hold(1, until=later, claim="thief"),
        "silenced": lambda: store.mark_silenced(1, silence_id=7, now=later, claim="thief"),
    }

    with pytest.raises(LeaseLost):
        await settles[settle]()
    (row,) = await store.undelivered()

    assert ("pending", "owner", 0, T0, "") == (
        row.status,
        row.claim,
        row.attempts,
        row.next_attempt_at,
        row.last_error,
    )


async def test_marks_of_a_settled_or_unknown_row_raise(any_store: Store) -> None:
    """A row no longer pending (or never there) cannot be marked again."""
    await any_store.record(Decision([], [entry("dpo/a")], now=T0))
    await any_store.mark_delivered(1, now=T0)

    with pytest.raises(LeaseLost):
        await any_store.mark_dead(1, now=T0, error="late")
    with pytest.raises(LeaseLost):
        await any_store.mark_delivered(99, now=T0)


async def test_settle_many_is_all_or_none(any_store: Store) -> None:
    """A batch one of whose rows is no longer under the claim settles none of them."""
    store = any_store
    await store.record(Decision([], [entry("dpo/a"), entry("dpo/b"), entry("dpo/c")], now=T0))
    await store.claim(T0, holder="d", lease=LEASE)
    await store.mark_delivered(2, now=T0, claim="d")
    retry_at = T0 + timedelta(minutes=3)

    with pytest.raises(LeaseLost, match="1 of 2"):
        await store.settle_many([1, 2], Mark(MarkKind.DELIVERED, T0), "d")
    untouched = ids(await store.undelivered())
    await store.settle_many([1, 3], Mark(MarkKind.RETRY, retry_at, error="503"), "d")
    retried = await store.undelivered()
    await store.settle_many([], Mark(MarkKind.DEAD, T0), "d")

    assert [1, 3] == untouched
    assert [(1, 1, retry_at, "503", None), (3, 1, retry_at, "503", None)] == [
        (d.id, d.attempts, d.next_attempt_at, d.last_error, d.claim) for d in retried
    ]
    claimed = await store.claim(retry_at, holder="e", lease=LEASE)
    await store.settle_many(ids(claimed), Mark(MarkKind.DEAD, retry_at, error="gone"), "e")
    assert [("dead", 2, "gone")] * 2 == [
        (d.status, d.attempts, d.last_error) for d in await store.undelivered()
    ]


async def test_claim_target_leaves_rows_behind_another_claim(stores: OpenStore) -> None:
    """Rows under another holder's live claim are left, and so are their job's later rows;
    a row waiting for its group window joins only with `whole_target`."""
    store, other = await stores(), await stores()
    await store.record(Decision([], [entry("dpo/b")], now=T0))  # 1
    await other.claim(T0, holder="x", lease=LEASE)  # 1 is x's
    await store.record(
        Decision(
            [],
            [
                entry("dpo/a"),  # 2: due
                entry("dpo/a", minutes=1),  # 3: due
                entry("dpo/b", minutes=1),  # 4: behind 1
                entry("dpo/c", not_before=T0 + timedelta(hours=1)),  # 5: waits for its window
                entry("dpo/d", url_key=OTHER),  # 6: another target
            ],
            now=T0 + timedelta(minutes=1),
        )
    )
    now = T0 + timedelta(minutes=1)

    per_job = await store.claim_target(TARGET, now, holder="d", lease=LEASE, limit=1)
    blocked = await store.claim_target(TARGET, now, holder="d", lease=LEASE)
    await store.settle_many([2], Mark(MarkKind.DELIVERED, now), "d")
    whole = await store.claim_target(TARGET, now, holder="e", lease=LEASE, whole_target=True)

    assert ([2], [], [3, 5]) == (ids(per_job), ids(blocked), ids(whole))
    assert {"e"} == {d.claim for d in whole}


@pytest.mark.parametrize("backend", ["postgresql"])  # row locks are PostgreSQL's
async def test_claim_target_counts_a_row_locked_by_another_replica_as_not_free(
    stores: OpenStore, backend: str
) -> None:
    """On PostgreSQL a replica's claim in progress locks rows: another replica's claim_target
    skips them and their job's later rows, instead of waiting or overtaking them."""
    store, other = await stores(), await stores()
    assert not isinstance(store, AsyncStore)
    await store.record(
        Decision([], [entry("dpo/a"), entry("dpo/a", minutes=1), entry("dpo/b")], now=T0)
    )
    now = T0 + timedelta(minutes=1)

    with anyio.fail_after(10):  # waiting for the lock would be a deadlock: the test holds it
        async with store.db.tx() as conn:
            await conn.execute("SELECT id FROM outbox WHERE id = 1 FOR UPDATE")
            while_locked = await other.claim_target(TARGET, now, holder="d", lease=LEASE)
            plain = await other.claim(now, holder="e", lease=LEASE)
    after = await other.claim_target(TARGET, now, holder="f", lease=LEASE)

    assert ([3], [], [1, 2]) == (ids(while_locked), ids(plain), ids(after))


async def test_a_held_row_waits_untried_then_goes(any_store: Store) -> None:
    """Quiet hours or a rate limit hold a row without counting an attempt."""
    store = any_store
    await store.record(Decision([], [entry("dpo/a")], now=T0))
    await store.claim(T0, holder="d", lease=LEASE)
    until = T0 + timedelta(hours=2)

    await store.hold(1, until=until, claim="d", why="quiet hours")
    during = await store.claim(until - timedelta(seconds=1), holder="d", lease=LEASE)
    (held,) = await store.claim(until, holder="d", lease=LEASE)

    assert [] == during
    assert (0, until, "held: quiet hours") == (held.attempts, held.next_attempt_at, held.last_error)


def condition_entry(url_key: str = TARGET) -> OutboxEntry:
    """A notice that a condition opened for dpo/a (stalled)."""
    event = Event(
        "dpo/a",
        "RUNNING",
        "RUNNING",
        T0,
        (("body", "b"), ("condition", "stalled"), ("title", "t")),
        notice=True,
        kind="condition",
    )
    return entry("dpo/a", url_key=url_key, event=event)


STALLED = Condition("dpo/a", ConditionName.STALLED, T0, "no progress")


async def test_a_silenced_condition_still_open_is_announced_once(stores: OpenStore) -> None:
    """When its silence ends, a condition it muted that is still open is queued afresh, once,
    however many replicas' dispatchers look; one already closed is not."""
    one, two = await stores(), await stores()
    await one.record(
        Decision([], [condition_entry(), condition_entry(OTHER)], now=T0, opened=[STALLED])
    )
    silence = Silence(id=0, job="a", ends_at=T0 + timedelta(hours=1))
    silence_id = await one.add_silence(silence, now=T0)
    await one.claim(T0, holder="d", lease=LEASE)
    await one.mark_silenced(1, silence_id=silence_id, now=T0, claim="d")
    await one.mark_silenced(2, silence_id=silence_id, now=T0, claim="d")
    end = T0 + timedelta(hours=1)

    before = await one.announce_after_silences(end - timedelta(seconds=1))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            results: list[dict[int, int]] = []

            async def announce(store: Store) -> None:
                results.append(await store.announce_after_silences(end))

            tg.start_soon(announce, one)
            tg.start_soon(announce, two)
    again = await two.announce_after_silences(end + timedelta(hours=1))
    queued = await one.undelivered()

    assert {} == before
    assert [{}, {silence_id: 2}] == sorted(results, key=len)
    assert {} == again
    assert [(3, TARGET), (4, OTHER)] == [(d.id, d.entry.url_key) for d in queued]
    assert {("pending", 0)} == {(d.status, d.attempts) for d in queued}
    assert queued[0].entry.event == condition_entry().event
    assert (2, [2, 1]) == (
        (await one.silenced())[0],
        [s.id for s in (await one.silenced())[1]],
    )


async def test_a_resolved_condition_is_not_announced(any_store: Store) -> None:
    """A silence ends after its condition closed: nothing is queued, the silence is done."""
    store = any_store
    await store.record(Decision([], [condition_entry()], now=T0, opened=[STALLED]))
    silence_id = await store.add_silence(Silence(id=0, job="a", ends_at=T0 + LEASE), now=T0)
    await store.claim(T0, holder="d", lease=LEASE)
    await store.mark_silenced(1, silence_id=silence_id, now=T0, claim="d")
    await store.record(Decision([], [], now=T0, resolved=[STALLED]))
    await store.expire_silence(silence_id, now=T0 + timedelta(seconds=1))

    assert {silence_id: 0} == await store.announce_after_silences(T0 + timedelta(seconds=1))
    assert [] == await store.undelivered()


async def test_prune_deletes_delivered_rows_before_the_cut(any_store: Store) -> None:
    """Delivered rows settled before the cut go; later, pending and dead ones stay."""
    store = any_store
    await store.record(Decision([], [entry(f"dpo/{n}") for n in range(4)], now=T0))
    await store.mark_delivered(1, now=T0)
    await store.mark_delivered(2, now=T0 + timedelta(hours=2))
    await store.mark_dead(3, now=T0, error="gone")

    assert 1 == await store.prune(delivered_before=T0 + timedelta(hours=1))
    assert 0 == await store.prune(delivered_before=T0 + timedelta(hours=1))
    assert [3, 4] == ids(await store.undelivered())


async def test_stats_and_next_due(any_store: Store) -> None:
    """Pending rows only; a claimed row is next due when its lease ends."""
    store = any_store
    assert ((0, None), None) == (await store.outbox_stats(), await store.next_due_at())
    await store.record(
        Decision(
            [],
            [entry("dpo/a", minutes=1), entry("dpo/b", minutes=2), entry("dpo/c", minutes=3)],
            now=T0,
        )
    )
    await store.mark_delivered(1, now=T0)
    assert (2, T0 + timedelta(minutes=2)) == await store.outbox_stats()
    assert T0 + timedelta(minutes=2) == await store.next_due_at()

    await store.claim(T0 + timedelta(minutes=3), holder="d", lease=LEASE)

    assert T0 + timedelta(minutes=3) + LEASE == await store.next_due_at()


async def test_release_claims_voids_every_claim(any_store: Store) -> None:
    """For a single-process store at start: claims left by a dead process end at once."""
    await any_store.record(Decision([], [entry("dpo/a")], now=T0))
    await any_store.claim(T0, holder="dead", lease=LEASE)

    assert 1 == await any_store.release_claims()
    assert [1] == ids(await any_store.claim(T0, holder="alive", lease=LEASE))


async def test_an_unreadable_row_is_quarantined_dead(stores: OpenStore) -> None:
    """A claimed row whose event does not decode is given up, said once, and no longer holds
    up its job's later rows."""
    told: list[tuple[str, str]] = []
    store = await stores(on_unreadable=lambda row, why: told.append((row, why)))
    await store.record(Decision([], [entry("dpo/a"), entry("dpo/a", minutes=1)], now=T0))
    await raw(store, "UPDATE events SET fields = '[1]' WHERE id = 1")

    first = await store.claim(T0 + LEASE, holder="d", lease=LEASE)
    second = await store.claim(T0 + LEASE, holder="d", lease=LEASE)
    await raw(store, "UPDATE events SET fields = '{}' WHERE id = 1")  # to read it back
    dead = [d for d in await store.undelivered() if d.status == "dead"]

    assert ([], [2]) == (ids(first), ids(second))
    assert [(1, "")] == [(d.id, d.claim or "") for d in dead]
    assert dead[0].last_error.startswith("unreadable row: events.fields")
    assert [("outbox 1", dead[0].last_error.removeprefix("unreadable row: "))] == told


JOBS = ("dpo/j0", "dpo/j1", "dpo/j2")
NOW = T0 + timedelta(hours=1)
TARGETS = tuple(f"target-{n}" for n in range(10))


async def _seed(store: Store) -> None:
    """300 pending rows: 10 per (target, job), over 10 targets and 3 jobs, interleaved."""
    rows = [
        entry(job, url_key=target, minutes=n)
        for n in range(10)
        for target in TARGETS
        for job in JOBS
    ]
    random.Random(12).shuffle(rows)
    await store.record(Decision([], rows, now=T0))


async def _check_drained(store: Store, sent: list[tuple[str, str, int]]) -> None:
    by_lane: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for target, job, id_ in sent:
        by_lane[(target, job)].append(id_)
    assert 300 == len(sent)
    assert list(range(1, 301)) == sorted(id_ for *_, id_ in sent)
    assert 30 == len(by_lane)
    assert all(lane == sorted(lane) for lane in by_lane.values())
    assert ((0, None), []) == (await store.outbox_stats(), await store.undelivered())


async def test_three_replicas_claiming_at_once_deliver_each_row_once_in_order(
    stores: OpenStore,
) -> None:
    """3 stores on one database claim and settle concurrently until the outbox is empty:
    every row is sent once, and each (target, job) hears its rows in id order."""
    replicas = [await stores() for _ in range(3)]
    await _seed(replicas[0])
    sent: list[tuple[str, str, int]] = []
    senders: set[str] = set()
    # Each holds its first claim until all three have one: however the threads or the
    # connections are scheduled, the three claim side by side (7 rows each of 300).
    everyone_claimed = anyio.Event()

    async def dispatcher(store: Store, name: str) -> None:
        while (await store.outbox_stats())[0]:
            claimed = await store.claim(NOW, holder=name, lease=LEASE, limit=7)
            if claimed and name not in senders:
                senders.add(name)
                if len(senders) == len(replicas):
                    everyone_claimed.set()
                await everyone_claimed.wait()
            for delivery in claimed:
                sent.append((delivery.entry.url_key, delivery.entry.job_key, delivery.id))
                await store.mark_delivered(delivery.id, now=NOW, claim=name)

    with anyio.fail_after(50):
        async with anyio.create_task_group() as tg:
            for n, store in enumerate(replicas):
                tg.start_soon(dispatcher, store, f"replica-{n}")

    await _check_drained(replicas[1], sent)
    assert 3 == len(senders)  # they did run at once


async def test_three_replicas_claiming_whole_targets_at_once(stores: OpenStore) -> None:
    """The same with claim_target and settle_many, each replica going through the targets
    in its own order: one message per claimed batch, in order per (target, job)."""
    replicas = [await stores() for _ in range(3)]
    await _seed(replicas[0])
    sent: list[tuple[str, str, int]] = []

    async def dispatcher(store: Store, name: str, seed: int) -> None:
        targets = list(TARGETS)
        random.Random(seed).shuffle(targets)
        while (await store.outbox_stats())[0]:
            for target in targets:
                batch = await store.claim_target(target, NOW, holder=name, lease=LEASE, limit=4)
                sent.extend((d.entry.url_key, d.entry.job_key, d.id) for d in batch)
                await store.settle_many(ids(batch), Mark(MarkKind.DELIVERED, NOW), name)

    with anyio.fail_after(50):
        async with anyio.create_task_group() as tg:
            for n, store in enumerate(replicas):
                tg.start_soon(dispatcher, store, f"replica-{n}", n)

    await _check_drained(replicas[2], sent)
