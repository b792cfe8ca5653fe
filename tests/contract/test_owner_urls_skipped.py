"""A skipped outbox row (a templated URL whose field is empty for its message), on both
backends: written settled, never claimed, counted or shown as undelivered; in the history
with its reason; pruned with the other settled rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.backends import Store
from watcher.core.decision import Decision
from watcher.core.delivery import Delivery, Event, OutboxEntry

pytestmark = pytest.mark.anyio

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
TARGET = "target-1"
SKIPPED_KEY = f"{TARGET}#0123456789ab"
WHY = "skipped: {owner} empty for this message"


def entry(job: str, *, url_key: str = TARGET, minutes: int = 0, skipped: str = "") -> OutboxEntry:
    created = T0 + timedelta(minutes=minutes)
    event = Event(job, "PENDING", "RUNNING", created, (("n", str(minutes)),))
    return OutboxEntry(
        job_key=job,
        channel="team",
        url_key=url_key,
        url_display=f"json://{url_key}",
        old_state="PENDING",
        new_state="RUNNING",
        created_at=created,
        event=event,
        skipped=skipped,
    )


def ids(deliveries: list[Delivery]) -> list[int]:
    return [d.id for d in deliveries]


async def test_a_skipped_row_is_recorded_settled(any_store: Store) -> None:
    """Written `skipped` with its reason; the job's next row at that target still goes."""
    store = any_store
    skipped = entry("dpo/a", url_key=SKIPPED_KEY, skipped=WHY)
    later = entry("dpo/a", url_key=SKIPPED_KEY, minutes=1)
    await store.record(Decision([], [skipped, entry("dpo/b"), later], now=T0))

    claimed = await store.claim(T0 + timedelta(minutes=2), holder="d", lease=LEASE)
    by_target = await store.claim_target(
        SKIPPED_KEY, T0 + timedelta(minutes=2), holder="e", lease=LEASE
    )
    pending, _ = await store.outbox_stats()
    undelivered = await store.undelivered()
    history, _ = await store.history(since=T0 - timedelta(days=1))

    # The skipped row holds up nothing: the job's next row at that target is claimed.
    assert [2, 3] == ids(claimed)
    assert [] == ids(by_target)
    assert 2 == pending
    assert [2, 3] == [d.id for d in undelivered]
    traces = [t for e in history for t in e.deliveries if t.status == "skipped"]
    assert [(t.url_display, t.last_error, t.attempts) for t in traces] == [
        (f"json://{SKIPPED_KEY}", WHY, 0)
    ]

    await store.mark_delivered(2, now=T0, claim="d")
    await store.mark_delivered(3, now=T0, claim="d")
    _, deliveries = await store.prune_history(T0 + timedelta(days=1))
    assert 3 == deliveries
