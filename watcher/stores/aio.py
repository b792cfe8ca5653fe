"""The `StateRepo` and `Outbox` ports over the SQLite store, for the async runtime."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from watcher.core.conditions import Condition, Since
from watcher.core.delivery import Delivery, Event, Mark, OutboxEntry
from watcher.core.lease import Lease, Replica
from watcher.core.model import JobRef, JobSnapshot
from watcher.core.silences import Silence
from watcher.stores.base import OnUnreadable, ignore
from watcher.stores.history import MAX_HISTORY, Entry, Silenced
from watcher.stores.sqlite import OnLost, StateStore

T = TypeVar("T")


class AsyncStore:
    """The `StateRepo` and `Outbox` ports over a `StateStore`: each call runs in a worker
    thread, one at a time (one connection, one writer), so the event loop never blocks."""

    def __init__(self, store: StateStore) -> None:
        self.sync = store
        self._limiter = anyio.CapacityLimiter(1)

    #: One process per file (`stores.lock`): claims left at start are a dead process's.
    single_process = True

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        on_unreadable: OnUnreadable = ignore,
        on_lost: OnLost = ignore,
        migrate: bool = True,
    ) -> AsyncStore:
        """Open the database at `path` in a worker thread: connecting and migrating block,
        and the event loop must not. Close it with `store.sync.close()` (or `with store.sync`).

        The hooks (see `StateStore`) are called from the worker thread.
        """
        opening = functools.partial(
            StateStore.open, path, on_unreadable=on_unreadable, on_lost=on_lost, migrate=migrate
        )
        return cls(await anyio.to_thread.run_sync(opening))

    async def _run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(
            functools.partial(call, *args, **kwargs), limiter=self._limiter
        )

    schema_version = StateStore.SCHEMA_VERSION

    @property
    def migrated_from(self) -> int:
        """The schema version the database had when opened."""
        return self.sync.migrated_from

    @property
    def display(self) -> str:
        """The database as a person reads it (its path)."""
        return str(self.sync.path)

    async def aclose(self) -> None:
        """Close the database (in a worker thread: closing may checkpoint the WAL)."""
        await self._run(self.sync.close)

    def fence(self, epoch: int | None) -> None:
        """See `ports.StateRepo.fence`."""
        self.sync.fence(epoch)

    async def acquire_lease(self, name: str, holder: str, *, ttl: timedelta) -> Lease:
        """See `ports.Leases.acquire_lease`."""
        return await self._run(self.sync.acquire_lease, name, holder, ttl=ttl)

    async def release_lease(self, name: str, holder: str) -> None:
        """See `ports.Leases.release_lease`."""
        await self._run(self.sync.release_lease, name, holder)

    async def lease(self, name: str) -> Lease | None:
        """See `ports.Leases.lease`."""
        return await self._run(self.sync.lease, name)

    async def beat(self, holder: str, *, role: str, started_at: datetime) -> None:
        """See `ports.Leases.beat`."""
        await self._run(self.sync.beat, holder, role=role, started_at=started_at)

    async def replicas(self, *, seen_within: timedelta) -> list[Replica]:
        """See `ports.Leases.replicas`."""
        return await self._run(self.sync.replicas, seen_within=seen_within)

    async def polled_all(self, *, job: str | None = None) -> dict[str, datetime]:
        """See `StateStore.polled_all`."""
        return await self._run(self.sync.polled_all, job=job)

    async def undelivered(self) -> list[Delivery]:
        """See `StateStore.undelivered`."""
        return await self._run(self.sync.undelivered)

    async def history(
        self,
        *,
        since: datetime,
        job: Callable[[str], bool] | None = None,
        limit: int = MAX_HISTORY,
    ) -> tuple[list[Entry], bool]:
        """See `StateStore.history`."""
        return await self._run(self.sync.history, since=since, job=job, limit=limit)

    async def silenced(self, *, limit: int = 100) -> tuple[int, list[Silenced]]:
        """See `StateStore.silenced`."""
        return await self._run(self.sync.silenced, limit=limit)

    async def add_silence(self, silence: Silence, *, now: datetime) -> int:
        """See `StateStore.add_silence`."""
        return await self._run(self.sync.add_silence, silence, now=now)

    async def expire_silence(self, silence_id: int, *, now: datetime) -> bool:
        """See `StateStore.expire_silence`."""
        return await self._run(self.sync.expire_silence, silence_id, now=now)

    async def last(self, ref: JobRef) -> JobSnapshot | None:
        """See `StateStore.last`."""
        return await self._run(self.sync.last, ref)

    async def last_all(self) -> dict[str, JobSnapshot]:
        """See `StateStore.last_all`."""
        return await self._run(self.sync.last_all)

    async def record(
        self,
        snapshots: Sequence[JobSnapshot],
        entries: Sequence[OutboxEntry],
        *,
        now: datetime,
        flags: Mapping[str, str] | None = None,
        events: Sequence[Event] = (),
        since: Mapping[str, Since] | None = None,
        polled: Sequence[str] = (),
        opened: Sequence[Condition] = (),
        resolved: Sequence[Condition] = (),
        reminders: Mapping[tuple[str, str], datetime | None] | None = None,
    ) -> None:
        """See `StateStore.record`."""
        await self._run(
            self.sync.record,
            snapshots,
            entries,
            now=now,
            flags=flags,
            events=events,
            since=since,
            polled=polled,
            opened=opened,
            resolved=resolved,
            reminders=reminders,
        )

    async def flag(self, key: str) -> str | None:
        """See `StateStore.flag`."""
        return await self._run(self.sync.flag, key)

    async def flags(self, prefix: str) -> dict[str, str]:
        """See `StateStore.flags`."""
        return await self._run(self.sync.flags, prefix)

    async def forget(self, keys: Sequence[str]) -> None:
        """See `StateStore.forget`."""
        await self._run(self.sync.forget, keys)

    async def claim(
        self,
        now: datetime,
        *,
        holder: str,
        lease: timedelta,
        busy: Collection[str] = (),
        limit: int = 100,
    ) -> list[Delivery]:
        """See `StateStore.claim`."""
        return await self._run(
            self.sync.claim, now, holder=holder, lease=lease, busy=tuple(busy), limit=limit
        )

    async def release_claims(self) -> int:
        """See `StateStore.release_claims`."""
        return await self._run(self.sync.release_claims)

    async def release(self, delivery_ids: Sequence[int], *, claim: str) -> None:
        """See `StateStore.release`."""
        await self._run(self.sync.release, tuple(delivery_ids), claim=claim)

    async def next_due_at(self) -> datetime | None:
        """See `StateStore.next_due_at`."""
        return await self._run(self.sync.next_due_at)

    async def outbox_stats(self) -> tuple[int, datetime | None]:
        """See `StateStore.outbox_stats`."""
        return await self._run(self.sync.outbox_stats)

    async def mark_delivered(
        self, delivery_id: int, *, now: datetime, claim: str | None = None
    ) -> None:
        """See `StateStore.mark_delivered`."""
        await self._run(self.sync.mark_delivered, delivery_id, now=now, claim=claim)

    async def mark_retry(
        self, delivery_id: int, *, next_attempt_at: datetime, error: str, claim: str | None = None
    ) -> None:
        """See `StateStore.mark_retry`."""
        await self._run(
            self.sync.mark_retry,
            delivery_id,
            next_attempt_at=next_attempt_at,
            error=error,
            claim=claim,
        )

    async def mark_dead(
        self, delivery_id: int, *, now: datetime, error: str, claim: str | None = None
    ) -> None:
        """See `StateStore.mark_dead`."""
        await self._run(self.sync.mark_dead, delivery_id, now=now, error=error, claim=claim)

    async def since_all(self, *, job: str | None = None) -> dict[str, Since]:
        """See `StateStore.since_all`."""
        return await self._run(self.sync.since_all, job=job)

    async def open_conditions(self) -> list[Condition]:
        """See `StateStore.open_conditions`."""
        return await self._run(self.sync.open_conditions)

    async def reminder_times(self) -> dict[tuple[str, str], datetime]:
        """See `StateStore.reminder_times`."""
        return await self._run(self.sync.reminder_times)

    async def silences(self, now: datetime, *, include_ended: bool = False) -> list[Silence]:
        """See `StateStore.silences`."""
        return await self._run(self.sync.silences, now, include_ended=include_ended)

    async def prune(self, *, delivered_before: datetime) -> int:
        """See `StateStore.prune`."""
        return await self._run(self.sync.prune, delivered_before=delivered_before)

    async def claim_target(
        self,
        url_key: str,
        now: datetime,
        *,
        holder: str,
        lease: timedelta,
        limit: int = 200,
        whole_target: bool = False,
    ) -> list[Delivery]:
        """See `StateStore.claim_target`."""
        return await self._run(
            self.sync.claim_target,
            url_key,
            now,
            holder=holder,
            lease=lease,
            limit=limit,
            whole_target=whole_target,
        )

    async def settle_many(self, delivery_ids: Sequence[int], mark: Mark, claim: str) -> None:
        """See `StateStore.settle_many`."""
        await self._run(self.sync.settle_many, tuple(delivery_ids), mark, claim)

    async def hold(
        self, delivery_id: int, *, until: datetime, claim: str | None = None, why: str = "quiet"
    ) -> None:
        """See `StateStore.hold`."""
        await self._run(self.sync.hold, delivery_id, until=until, claim=claim, why=why)

    async def mark_silenced(
        self, delivery_id: int, *, silence_id: int, now: datetime, claim: str | None = None
    ) -> None:
        """See `StateStore.mark_silenced`."""
        await self._run(
            self.sync.mark_silenced, delivery_id, silence_id=silence_id, now=now, claim=claim
        )

    async def announce_after_silences(self, now: datetime) -> dict[int, int]:
        """See `StateStore.announce_after_silences`."""
        return await self._run(self.sync.announce_after_silences, now)

    async def prune_history(self, before: datetime) -> tuple[int, int]:
        """See `StateStore.prune_history`."""
        return await self._run(self.sync.prune_history, before)

    async def digest_events(
        self, start: datetime, end: datetime, *, limit: int = 10_000
    ) -> list[Event]:
        """See `StateStore.digest_events` (the limit is `stores.digests.MAX_DIGEST_EVENTS`)."""
        return await self._run(self.sync.digest_events, start, end, limit=limit)
