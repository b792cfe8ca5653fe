"""The contract of the history, silences and digests, on both backends."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.backends import Store
from watcher.core.decision import Decision
from watcher.core.delivery import Event, OutboxEntry
from watcher.core.errors import StoreError
from watcher.core.silences import Silence
from watcher.stores.pg import pg_history

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def event(job: str = "dpo/a", *, minutes: int = 0, new_state: str = "RUNNING") -> Event:
    """A transition of `job` observed `minutes` after T0."""
    return Event(
        job, "PENDING", new_state, T0 + timedelta(minutes=minutes), (("job", job), ("n", "1"))
    )


def entry(seen: Event, url_key: str = "target-1") -> OutboxEntry:
    """The delivery of `seen` to `url_key`."""
    return OutboxEntry(
        job_key=seen.job_key,
        channel="team",
        url_key=url_key,
        url_display=f"json://{url_key}",
        old_state=seen.old_state,
        new_state=seen.new_state,
        created_at=seen.observed_at,
        event=seen,
    )


async def test_history_shows_each_event_with_its_deliveries(any_store: Store) -> None:
    """Oldest first; each event with what became of it at each target."""
    store = any_store
    first, second = event(minutes=1), event("dpo/b", minutes=2)
    await store.record(Decision([], [entry(first), entry(first, "target-2")], now=T0))
    await store.record(Decision([], [], now=T0, events=[second]))
    await store.mark_delivered(1, now=T0 + timedelta(minutes=3))
    await store.mark_retry(2, next_attempt_at=T0 + timedelta(hours=1), error="503")

    found, cut = await store.history(since=T0)

    assert (False, [first, second]) == (cut, [e.event for e in found])
    delivered, retried = found[0].deliveries
    assert ("delivered", T0 + timedelta(minutes=3), 0) == (
        delivered.status,
        delivered.delivered_at,
        delivered.attempts,
    )
    assert ("json://target-2", "pending", 1, "503") == (
        retried.url_display,
        retried.status,
        retried.attempts,
        retried.last_error,
    )
    assert () == found[1].deliveries


async def test_history_keeps_the_latest_within_the_period(any_store: Store) -> None:
    """Events before `since` are left; past `limit`, the oldest are cut and said so."""
    events = [event(f"dpo/{n}", minutes=n) for n in range(6)]
    await any_store.record(Decision([], [], now=T0, events=events))

    found, cut = await any_store.history(since=T0 + timedelta(minutes=1), limit=3)
    whole, not_cut = await any_store.history(since=T0 + timedelta(minutes=3), limit=3)

    assert (True, events[3:]) == (cut, [e.event for e in found])
    assert (False, events[3:]) == (not_cut, [e.event for e in whole])


@pytest.mark.parametrize("page", [2, 1000])
async def test_history_filters_jobs_with_a_predicate(
    any_store: Store, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the jobs the predicate accepts, the latest `limit` of them, however the events of
    other jobs are interleaved (PostgreSQL reads them in pages)."""
    monkeypatch.setattr(pg_history, "PAGE", page)
    events = [event(f"dpo/{'ab'[n % 2]}", minutes=n) for n in range(9)]
    await any_store.record(Decision([], [], now=T0, events=events))

    found, cut = await any_store.history(since=T0, job=lambda key: key == "dpo/a", limit=3)
    every, whole = await any_store.history(since=T0, job=lambda key: key == "dpo/b")
    none, empty = await any_store.history(since=T0, job=lambda key: False)

    assert (True, events[4::2]) == (cut, [e.event for e in found])
    assert (False, events[1::2]) == (whole, [e.event for e in every])
    assert (False, []) == (empty, none)


async def test_history_keeps_events_observed_at_the_same_time_apart(any_store: Store) -> None:
    """Events of one instant are ordered by id; a page boundary among them loses none."""
    events = [event(f"dpo/{n}") for n in range(5)]
    await any_store.record(Decision([], [], now=T0, events=events))

    found, _ = await any_store.history(since=T0, job=lambda key: key != "dpo/2", limit=3)

    assert [events[1], events[3], events[4]] == [e.event for e in found]


async def test_silenced_lists_the_latest(any_store: Store) -> None:
    """How many rows a silence muted, and the latest of them first."""
    store = any_store
    await store.record(
        Decision([], [entry(event(f"dpo/{n}", minutes=n)) for n in range(3)], now=T0)
    )
    silence_id = await store.add_silence(Silence(id=0, job="*", ends_at=T0 + LEASE), now=T0)
    for row in (1, 2, 3):
        await store.mark_silenced(row, silence_id=silence_id, now=T0)

    count, latest = await store.silenced(limit=2)

    assert (3, [3, 2]) == (count, [s.id for s in latest])
    assert ("dpo/2", "json://target-1", T0 + timedelta(minutes=2), silence_id) == (
        latest[0].job_key,
        latest[0].url_display,
        latest[0].created_at,
        latest[0].silence_id,
    )
    (trace,) = (await store.history(since=T0, job=lambda k: k == "dpo/0"))[0][0].deliveries
    assert ("silenced", silence_id) == (trace.status, trace.silence_id)


async def test_prune_history_keeps_pending_rows_and_their_events(any_store: Store) -> None:
    """Settled rows and events older than the cut go; a pending row keeps its old event,
    and an event still pointed at is kept."""
    store = any_store
    old, pending, young = event("dpo/a"), event("dpo/b"), event("dpo/c", minutes=90)
    await store.record(Decision([], [entry(old), entry(pending), entry(young)], now=T0))
    await store.record(Decision([], [], now=T0, events=[event("dpo/d", minutes=5)]))
    await store.mark_delivered(1, now=T0 + timedelta(minutes=1))
    await store.mark_dead(3, now=T0 + timedelta(minutes=91), error="gone")
    cut = T0 + timedelta(hours=1)

    assert (2, 1) == await store.prune_history(cut)
    assert (0, 0) == await store.prune_history(cut)
    found, _ = await store.history(since=T0 - timedelta(days=1))
    assert [pending, young] == [e.event for e in found]
    assert [2, 3] == [d.id for d in await store.undelivered()]


async def test_silences_are_added_listed_and_expired(any_store: Store) -> None:
    """A silence is in force until its end or until expired; each change is in the history."""
    store = any_store
    one = Silence(id=0, job="train-*", kind="sft", channel="team", comment="upgrade")
    first = await store.add_silence(replace(one, ends_at=T0 + timedelta(hours=1)), now=T0)
    second = await store.add_silence(Silence(id=0, job="*", ends_at=T0 + LEASE), now=T0)

    listed = await store.silences(T0 + timedelta(seconds=1))
    assert await store.expire_silence(first, now=T0 + timedelta(minutes=1))
    assert not await store.expire_silence(first, now=T0 + timedelta(minutes=2))
    assert not await store.expire_silence(second, now=T0 + timedelta(minutes=2))  # ended
    assert not await store.expire_silence(99, now=T0)
    later = await store.silences(T0 + timedelta(minutes=2))
    every = await store.silences(T0 + timedelta(minutes=2), include_ended=True)

    assert [first, second] == [s.id for s in listed]
    assert ("train-*", "sft", "team", "upgrade", T0, T0 + timedelta(hours=1), None) == (
        listed[0].job,
        listed[0].kind,
        listed[0].channel,
        listed[0].comment,
        listed[0].created_at,
        listed[0].ends_at,
        listed[0].expired_at,
    )
    assert [] == later
    assert [(first, T0 + timedelta(minutes=1)), (second, None)] == [
        (s.id, s.expired_at) for s in every
    ]
    found, _ = await store.history(since=T0)
    assert [("ADDED", str(first)), ("ADDED", str(second)), ("EXPIRED", str(first))] == [
        (e.event.new_state, e.event.field_map()["silence_id"]) for e in found
    ]
    assert {("silence", "silence", True)} == {
        (e.event.job_key, e.event.kind, e.event.notice) for e in found
    }


async def test_a_silence_needs_an_end(any_store: Store) -> None:
    """No silence for ever."""
    with pytest.raises(ValueError, match="end"):
        await any_store.add_silence(Silence(id=0, job="*"), now=T0)


async def test_digest_events_of_a_period(any_store: Store) -> None:
    """Transitions in [start, end), newest first, at most `limit`; notices are left out."""
    store = any_store
    events = [event(f"dpo/{n}", minutes=n) for n in range(5)]
    notice = Event("api", "", "DOWN", T0 + timedelta(minutes=2), (("title", "t"),), notice=True)
    await store.record(Decision([], [], now=T0, events=[*events, notice]))

    period = await store.digest_events(T0 + timedelta(minutes=1), T0 + timedelta(minutes=4))
    newest = await store.digest_events(T0, T0 + timedelta(hours=1), limit=2)
    empty = await store.digest_events(T0 + timedelta(hours=1), T0 + timedelta(hours=2))

    assert [events[3], events[2], events[1]] == period
    assert [events[4], events[3]] == newest
    assert [] == empty


async def test_a_closed_store_raises_store_error(any_store: Store) -> None:
    """After closing, reads fail as StoreError, not as a driver's exception."""
    await any_store.aclose()

    with pytest.raises(StoreError):
        await any_store.history(since=T0)
