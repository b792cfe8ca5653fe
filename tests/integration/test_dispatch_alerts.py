"""The dispatch side of alerting, end to end with a real store, apprise and a receiver:
silences at send time (and announcing what is still open when they end), quiet hours,
grouping, rate folding; and the store operations under them."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from tests.support.servers import FakeClock, JsonReceiver
from tests.support.waiting import wait_until_async
from watcher.core.conditions import Condition, ConditionName
from watcher.core.decision import Decision
from watcher.core.delivery import (
    Channel,
    ChannelPolicy,
    Event,
    Mark,
    MarkKind,
    OutboxEntry,
    RetryPolicy,
)
from watcher.core.errors import LeaseLost
from watcher.core.notices import condition_notice, notice_entries
from watcher.core.silences import Silence
from watcher.notify.apprise_sender import AppriseNotifier
from watcher.ports import NullObserver
from watcher.runtime.dispatcher import Dispatcher
from watcher.stores.aio import AsyncStore
from watcher.stores.sqlite import StateStore

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

T = TypeVar("T")
T0 = datetime(2026, 6, 1, 23, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


class Observed(NullObserver):
    """Records the silenced hook."""

    def __init__(self) -> None:
        self.silenced_channels: list[str] = []

    def silenced(self, channel: str) -> None:
        self.silenced_channels.append(channel)


@dataclass
class Rig:
    """A dispatcher over a real store file, sending through apprise to a receiver."""

    path: Path
    store: AsyncStore
    dispatcher: Dispatcher
    channel: Channel
    now: list[datetime]
    tick: FakeClock
    observer: Observed
    seq: list[int] = field(default_factory=lambda: [0])

    def entry(
        self,
        job: str,
        old: str,
        new: str,
        *,
        reason: str = "",
        at: datetime | None = None,
        wait: float | None = None,
    ) -> OutboxEntry:
        """A transition's outbox row for the rig's one target (`wait`: its group window)."""
        at = at or self.now[0]
        fields = {
            "job_id": job,
            "display_name": job,
            "kind": "sft",
            "old_state": old,
            "new_state": new,
            "reason": reason,
        }
        event = Event(f"sft/{job}", old, new, at, tuple(sorted(fields.items())))
        target = self.channel.targets[0]
        return OutboxEntry(
            f"sft/{job}",
            self.channel.name,
            target.url_key,
            target.url_display,
            old,
            new,
            at,
            event,
            not_before=at + timedelta(seconds=wait) if wait is not None else None,
        )

    async def sync(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A call to the sync store (as the CLI makes), in a worker thread."""
        return await anyio.to_thread.run_sync(functools.partial(call, *args, **kwargs))

    async def record(self, *entries: OutboxEntry, opened: tuple[Condition, ...] = ()) -> None:
        await self.store.record(Decision([], list(entries), now=self.now[0]))
        if opened:
            await self.sync(
                self.store.sync.record, Decision([], [], now=self.now[0], opened=opened)
            )

    async def rows(self) -> list[tuple[Any, ...]]:
        """(id, status, silence_id, attempts, last_error, next_attempt_at) of every row."""
        return await self.sync(_rows, self.path)

    async def statuses(self) -> list[str]:
        return [r[1] for r in await self.rows()]


def _rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT id, status, silence_id, attempts, last_error, next_attempt_at "
            "FROM outbox ORDER BY id"
        ).fetchall()


def _cli_add(path: Path, silence: Silence, now: datetime) -> int:
    with StateStore.open(path) as cli:
        return cli.add_silence(silence, now=now)


@asynccontextmanager
async def rig(tmp_path: Path, receiver: JsonReceiver, **policy: Any) -> AsyncIterator[Rig]:
    url = receiver.url()
    notifier = AppriseNotifier([("channel[0].urls[0]", url)], timeout=5.0)
    channel = Channel("team", (notifier.target(url),), policy=ChannelPolicy(**policy))
    path = tmp_path / "state.db"
    store = await AsyncStore.open(path)
    now = [T0]
    tick = FakeClock()
    observer = Observed()
    dispatcher = Dispatcher(
        store,
        notifier,
        channels=[channel],
        policy=RetryPolicy(first_delay=1.0, max_delay=60.0, give_up_after=86400.0),
        send_timeout=5.0,
        observer=observer,
        clock=lambda: now[0],
        rand=lambda: 0.5,
        monotonic=tick,
    )
    try:
        yield Rig(path, store, dispatcher, channel, now, tick, observer)
    finally:
        store.sync.close()


def silence(job: str, *, state: str = "") -> Silence:
    return Silence(0, job, state=state, ends_at=T0 + timedelta(hours=2))


# -- silences ------------------------------------------------------------------------------


async def test_a_silenced_row_is_recorded_and_never_posted(
    tmp_path: Path, receiver: JsonReceiver
) -> None:
    """A row a silence covers becomes 'silenced' with the silence's id; the other is sent;
    nothing counts the silenced one as pending."""
    async with rig(tmp_path, receiver) as r:
        sid = await r.sync(r.store.sync.add_silence, silence("prod-*", state="FAILED"), now=T0)
        await r.record(
            r.entry("prod-1", "RUNNING", "FAILED", reason="OOM"),
            r.entry("dev-1", "RUNNING", "FAILED", reason="OOM"),
        )
        report = await r.dispatcher.dispatch_once()
        stats = await r.store.outbox_stats()
        due = await r.store.next_due_at()

    assert ["dev-1: RUNNING → FAILED: OOM"] == [m["title"] for m in receiver.messages]
    assert [("silenced", sid), ("delivered", None)] == [(row[1], row[2]) for row in await r.rows()]
    assert ["team"] == r.observer.silenced_channels
    assert (1, 0, None) == (report.sent, stats[0], due)


async def test_a_silence_added_while_the_dispatcher_runs_takes_effect(
    tmp_path: Path, receiver: JsonReceiver
) -> None:
    """`silence add` (another connection, as the CLI) mutes the next message within a
    second, without a reload."""
    async with rig(tmp_path, receiver) as r:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(r.dispatcher.run, stop)
            await r.record(r.entry("prod-1", "PENDING", "RUNNING"))
            r.dispatcher.wake()
            await wait_until_async(lambda: len(receiver.messages) == 1, "the first message")
            await r.sync(_cli_add, r.path, silence("prod-*"), T0)
            r.tick.now += 1.0  # the silences are re-read once a second
            await r.record(r.entry("prod-1", "RUNNING", "FAILED"))
            r.dispatcher.wake()
            await wait_until_async(
                lambda: bool(r.observer.silenced_channels), "the second row silenced"
            )
            stop.set()

    assert ["prod-1: PENDING → RUNNING"] == [m["title"] for m in receiver.messages]


async def test_an_open_condition_is_announced_when_its_silence_ends(
    tmp_path: Path, receiver: JsonReceiver
) -> None:
    """A stall silenced while it opened is announced once the silence is expired (it is still
    open); a resolved one would not be."""
    async with rig(tmp_path, receiver) as r:
        stalled = Condition("sft/prod-1", ConditionName.STALLED, T0, "no progress for 30m")
        notice = condition_notice(stalled, None)
        event = notice.event(T0)
        sid = await r.sync(r.store.sync.add_silence, silence("prod-*"), now=T0)
        await r.record(*notice_entries([r.channel], notice, event, now=T0), opened=(stalled,))
        await r.dispatcher.dispatch_once()
        silenced = await r.statuses()
        r.now[0] += timedelta(minutes=10)
        assert await r.sync(r.store.sync.expire_silence, sid, now=r.now[0])
        r.tick.now += 1.0
        await r.dispatcher.dispatch_once()
        again = await r.store.announce_after_silences(r.now[0])

    assert ["silenced"] == silenced
    assert ["silenced", "delivered"] == await r.statuses()
    assert [notice.message.title] == [m["title"] for m in receiver.messages]
    assert {} == again


def test_announce_queues_only_conditions_still_open(tmp_path: Path) -> None:
    """Of two silenced conditions, the one resolved meanwhile is not queued again; the open
    one is, once, and not while a pending row for it exists; the silence is then ended."""
    with StateStore.open(tmp_path / "state.db") as store:
        rows = []
        for job in ("a", "b"):
            cond = Condition(f"sft/{job}", ConditionName.STALLED, T0, "no progress")
            notice = condition_notice(cond, None)
            entry = OutboxEntry(
                notice.job_key, "team", "k", "json://x", "", notice.new_state, T0, notice.event(T0)
            )
            store.record(Decision([], [entry], now=T0, opened=[cond]))
            rows.append(cond)
        sid = store.add_silence(silence("*"), now=T0)
        for delivery in store.claim(T0, holder="me", lease=LEASE):
            store.mark_silenced(delivery.id, silence_id=sid, now=T0, claim="me")
        store.record(Decision([], [], now=T0, resolved=[rows[1]]))
        assert {} == store.announce_after_silences(T0 + timedelta(hours=1))
        ended = store.announce_after_silences(T0 + timedelta(hours=3))
        assert {} == store.announce_after_silences(T0 + timedelta(hours=4))
        (fresh,) = store.claim(T0 + timedelta(hours=3), holder="me", lease=LEASE)
    assert {sid: 1} == ended
    assert ("sft/a", "k", "STALLED", T0 + timedelta(hours=3)) == (
        fresh.entry.job_key,
        fresh.entry.url_key,
        fresh.entry.new_state,
        fresh.next_attempt_at,
    )


# -- quiet hours ---------------------------------------------------------------------------


async def test_quiet_hours_hold_info_and_let_a_failure_through(
    tmp_path: Path, receiver: JsonReceiver
) -> None:
    """At 23:00 with quiet hours 22:00-07:00, a failure is sent and an info message waits,
    untried, until 07:00."""
    async with rig(tmp_path, receiver, quiet_hours=("22:00", "07:00")) as r:
        await r.record(
            r.entry("a", "PENDING", "RUNNING"), r.entry("b", "RUNNING", "FAILED", reason="OOM")
        )
        await r.dispatcher.dispatch_once()
        night = [m["title"] for m in receiver.messages]
        held = (await r.rows())[0]
        r.now[0] = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
        await r.dispatcher.dispatch_once()

    assert ["b: RUNNING → FAILED: OOM"] == night
    assert ("pending", 0, "held: quiet hours", "2026-06-02T07:00:00.000000+00:00") == (
        held[1],
        held[3],
        held[4],
        held[5],
    )
    assert ["b: RUNNING → FAILED: OOM", "a: PENDING → RUNNING"] == [
        m["title"] for m in receiver.messages
    ]
    assert "info" == receiver.messages[1]["type"]


# -- grouping ------------------------------------------------------------------------------


async def test_batched_channels_are_sent_only_where_told(
    tmp_path: Path, receiver: JsonReceiver
) -> None:
    """With several replicas only the leader's dispatcher serves batched channels (their
    windows and per-minute counts live in its memory); a standby's leaves them pending."""
    leading = [False]
    async with rig(tmp_path, receiver, max_per_minute=5) as r:
        r.dispatcher.serve_batches(lambda: leading[0])
        await r.record(r.entry("a", "RUNNING", "FAILED", reason="OOM"))
        await r.dispatcher.dispatch_once()
        as_standby = list(receiver.messages)
        leading[0] = True
        await r.dispatcher.dispatch_once()

    assert [] == as_standby
    assert ["a: RUNNING → FAILED: OOM"] == [m["title"] for m in receiver.messages]


async def test_a_burst_of_forty_failures_arrives_as_one_message(
    tmp_path: Path, receiver: JsonReceiver
) -> None:
    """Forty FAILED rows of a group_by=account channel are one message when the window closes."""
    async with rig(tmp_path, receiver, group_wait=30.0, group_by_account=True) as r:
        await r.record(
            *(
                r.entry(f"job-{i:02d}", "RUNNING", "FAILED", reason="OOM", wait=30)
                for i in range(40)
            )
        )
        early = await r.dispatcher.dispatch_once()
        r.now[0] += timedelta(seconds=30)
        report = await r.dispatcher.dispatch_once()

    (message,) = receiver.messages
    assert (0, 40) == (early.sent, report.sent)
    assert "40 jobs FAILED: job-00, job-01, job-02, … and 37 more" == message["title"]
    assert "failure" == message["type"]
    assert 40 == message["message"].count("RUNNING → FAILED: OOM")
    assert ["delivered"] * 40 == await r.statuses()


async def test_one_jobs_moves_in_the_window_arrive_as_one_path(
    tmp_path: Path, receiver: JsonReceiver
) -> None:
    """Three moves of one job within group_wait: one message showing the path."""
    async with rig(tmp_path, receiver, group_wait=30.0) as r:
        for i, (old, new) in enumerate(
            [("CREATING", "VALIDATING"), ("VALIDATING", "PENDING"), ("PENDING", "RUNNING")]
        ):
            await r.record(r.entry("my-job", old, new, at=T0 + timedelta(seconds=5 * i), wait=30))
        r.now[0] += timedelta(seconds=30)
        await r.dispatcher.dispatch_once()

    assert ["my-job: CREATING → VALIDATING → PENDING → RUNNING"] == [
        m["title"] for m in receiver.messages
    ]
    assert ["delivered"] * 3 == await r.statuses()


async def test_max_per_minute_folds_the_overflow_into_a_summary(
    tmp_path: Path, receiver: JsonReceiver
) -> None:
    """Twelve rows, five a minute: four messages and a summary of the other eight; the next
    row waits until the minute frees."""
    async with rig(tmp_path, receiver, max_per_minute=5) as r:
        await r.record(*(r.entry(f"job-{i:02d}", "RUNNING", "COMPLETED") for i in range(12)))
        await r.dispatcher.dispatch_once()
        await r.record(r.entry("late", "RUNNING", "COMPLETED"))
        await r.dispatcher.dispatch_once()
        waiting = (await r.rows())[-1]
        r.now[0] += timedelta(seconds=60)
        await r.dispatcher.dispatch_once()

    titles = [m["title"] for m in receiver.messages]
    assert 6 == len(titles)
    assert [f"job-{i:02d}: RUNNING → COMPLETED" for i in range(4)] == titles[:4]
    assert titles[4].startswith("8 more notifications: job-04 COMPLETED, job-05 COMPLETED")
    assert 8 == receiver.messages[4]["message"].count("RUNNING → COMPLETED")
    assert ("pending", "held: max_per_minute") == (waiting[1], waiting[4])
    assert "late: RUNNING → COMPLETED" == titles[5]
    assert ["delivered"] * 13 == await r.statuses()


async def test_a_batch_whose_send_fails_is_retried_as_a_batch(
    tmp_path: Path, receiver: JsonReceiver
) -> None:
    """A path message the channel rejects: every row of it gets the attempt; once the channel
    is back, the same rows go again as one message."""
    async with rig(tmp_path, receiver, group_wait=30.0) as r:
        await r.record(
            r.entry("my-job", "CREATING", "RUNNING", wait=30),
            r.entry("my-job", "RUNNING", "COMPLETED", wait=30),
        )
        r.now[0] += timedelta(seconds=30)
        receiver.status = 503
        first = await r.dispatcher.dispatch_once()
        after = [(row[1], row[3]) for row in await r.rows()]
        receiver.status = 200
        r.now[0] += timedelta(minutes=5)
        await r.dispatcher.dispatch_once()

    assert 2 == first.failed
    assert [("pending", 1), ("pending", 1)] == after
    assert ["my-job: CREATING → RUNNING → COMPLETED"] == [m["title"] for m in receiver.rejected]
    assert ["my-job: CREATING → RUNNING → COMPLETED"] == [m["title"] for m in receiver.messages]
    assert ["delivered", "delivered"] == await r.statuses()


async def test_a_batch_claimed_by_a_process_that_died_is_sent_whole(
    tmp_path: Path, receiver: JsonReceiver
) -> None:
    """A dispatcher claims a batch and dies before settling it: at restart the claims are
    released and the whole batch goes again as one message, every row marked together."""
    async with rig(tmp_path, receiver, group_wait=30.0, group_by_account=True) as r:
        await r.record(*(r.entry(f"job-{i}", "RUNNING", "FAILED", wait=30) for i in range(3)))
        r.now[0] += timedelta(seconds=30)
        dead = await r.store.claim_target(
            r.channel.targets[0].url_key, r.now[0], holder="dead", lease=LEASE, whole_target=True
        )
        blocked = await r.dispatcher.dispatch_once()  # the dead holder's claims are live
        released = await r.store.release_claims()
        await r.dispatcher.dispatch_once()

    assert (3, 0, 3) == (len(dead), blocked.sent, released)
    assert ["3 jobs FAILED: job-0, job-1, job-2"] == [m["title"] for m in receiver.messages]
    assert ["delivered"] * 3 == await r.statuses()


# -- store operations ----------------------------------------------------------------------


def plain_entry(job: str, new: str, *, at: datetime = T0, wait: float | None = None) -> OutboxEntry:
    fields = (("job_id", job), ("new_state", new))
    event = Event(f"sft/{job}", "RUNNING", new, at, fields)
    return OutboxEntry(
        f"sft/{job}",
        "team",
        "k",
        "json://x",
        "RUNNING",
        new,
        at,
        event,
        not_before=at + timedelta(seconds=wait) if wait is not None else None,
    )


def test_settle_many_settles_all_or_none(tmp_path: Path) -> None:
    """A batch's rows are settled together; if one is no longer under the claim, none is."""
    with StateStore.open(tmp_path / "state.db") as store:
        store.record(Decision([], [plain_entry(j, "FAILED") for j in "abc"], now=T0))
        rows = store.claim_target("k", T0, holder="me", lease=LEASE)
        ids = [d.id for d in rows]
        store.release_claims()
        store.claim_target("k", T0, holder="other", lease=LEASE)
        with pytest.raises(LeaseLost, match="3 of 3"):
            store.settle_many(ids, Mark(MarkKind.DELIVERED, T0), "me")
        store.settle_many(ids, Mark(MarkKind.RETRY, T0 + timedelta(seconds=5), "503"), "other")
        retried = store.undelivered()
        store.claim_target("k", T0 + timedelta(seconds=5), holder="me", lease=LEASE)
        store.settle_many(ids, Mark(MarkKind.DELIVERED, T0), "me")
        assert [] == store.undelivered()
    assert [(1, "503")] * 3 == [(d.attempts, d.last_error) for d in retried]


def test_claim_target_keeps_order_and_others_claims(tmp_path: Path) -> None:
    """Another holder's live claim holds back its job's later rows; a retry wait does too
    until it is due; rows in their window join only a due row (of any job: whole target)."""
    later = T0 + timedelta(minutes=1)
    with StateStore.open(tmp_path / "state.db") as store:
        store.record(
            Decision(
                [],
                [
                    plain_entry("a", "RUNNING"),
                    plain_entry("a", "FAILED", wait=30),
                    plain_entry("b", "RUNNING"),
                    plain_entry("b", "FAILED"),
                    plain_entry("c", "RUNNING", wait=120),
                ],
                now=T0,
            )
        )
        a1, b1 = store.claim(T0, holder="other", lease=2 * LEASE)
        store.mark_retry(b1.id, next_attempt_at=later, error="503", claim="other")
        now = store.claim_target("k", T0, holder="me", lease=LEASE, whole_target=True)
        mine = store.claim_target("k", later, holder="me", lease=LEASE)
        store.release_claims()
        store.claim(T0, holder="other", lease=2 * LEASE)  # a1 again (b1 is not due at T0)
        whole = store.claim_target("k", later, holder="me", lease=LEASE, whole_target=True)
    assert [] == now
    assert ["sft/b", "sft/b"] == [d.entry.job_key for d in mine]
    assert ["sft/b", "sft/b", "sft/c"] == [d.entry.job_key for d in whole]
    assert "sft/a" == a1.entry.job_key


def test_claim_target_joins_window_rows(tmp_path: Path) -> None:
    """A job's due row takes its rows still in their window along; with the whole target,
    other jobs' too; a held row does not count as an attempt."""
    with StateStore.open(tmp_path / "state.db") as store:
        store.record(
            Decision(
                [],
                [plain_entry("a", "RUNNING"), plain_entry("a", "FAILED", wait=30)],
                now=T0,
            )
        )
        store.record(Decision([], [plain_entry("c", "RUNNING", wait=30)], now=T0))
        mine = store.claim_target("k", T0, holder="me", lease=LEASE)
        store.release_claims()
        whole = store.claim_target("k", T0, holder="me", lease=LEASE, whole_target=True)
        store.hold(whole[2].id, until=T0 + timedelta(hours=8), claim="me")
        with pytest.raises(LeaseLost):
            store.hold(whole[2].id, until=T0, claim="me")
        (held,) = [d for d in store.undelivered() if d.id == whole[2].id]
    assert [("sft/a", "RUNNING"), ("sft/a", "FAILED")] == [
        (d.entry.job_key, d.entry.new_state) for d in mine
    ]
    assert ["sft/a", "sft/a", "sft/c"] == [d.entry.job_key for d in whole]
    assert (0, "held: quiet", T0 + timedelta(hours=8)) == (
        held.attempts,
        held.last_error,
        held.next_attempt_at,
    )


def test_mark_silenced_is_lease_checked(tmp_path: Path) -> None:
    """Only the claim's holder may record a row as silenced."""
    with StateStore.open(tmp_path / "state.db") as store:
        store.record(Decision([], [plain_entry("a", "FAILED")], now=T0))
        (row,) = store.claim(T0, holder="me", lease=LEASE)
        with pytest.raises(LeaseLost):
            store.mark_silenced(row.id, silence_id=1, now=T0, claim="other")
        store.mark_silenced(row.id, silence_id=1, now=T0, claim="me")
        assert (0, None) == store.outbox_stats()
        assert [] == store.claim(T0, holder="me", lease=LEASE)
