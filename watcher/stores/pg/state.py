"""Jobs, flags and alert state on PostgreSQL: the last snapshots, the jobs' times, open
conditions and reminders, written by `record` in one transaction with the events and outbox
rows of the poll. The statements and the row mapping are SQLite's (`stores.dialect`).

Each kind of row goes in one batched statement (`executemany`, pipelined by psycopg), so a
chunk of a cycle costs a handful of round trips however many jobs it holds. A row that does
not decode costs only itself and is told to `on_unreadable`, as on SQLite.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from watcher.core.conditions import Condition, Since
from watcher.core.decision import Decision
from watcher.core.errors import StoreError
from watcher.core.model import JobRef, JobSnapshot
from watcher.stores.dialect import (
    POSTGRES,
    SELECT_CONDITIONS,
    SELECT_POLLED,
    SELECT_REMINDERS,
    SELECT_SINCE,
    aware,
    clean,
    condition_rows,
    flag_rows,
    flag_value,
    polled_rows,
    reminder_rows,
    since_rows,
    snapshots,
    write_rows,
)
from watcher.stores.pg.pg_leases import PgLeases
from watcher.stores.pg.pg_tables import Connection, PgDb

__all__ = ["PgState", "aware"]


@dataclass
class PgState:
    """last, last_all, record, flag, flags, forget (the writes under the fence of
    `leases`), since_all, polled_all, open_conditions, reminder_times, over the store's `PgDb`."""

    db: PgDb
    leases: PgLeases

    # -- jobs -------------------------------------------------------------------------------

    async def last(self, ref: JobRef) -> JobSnapshot | None:
        """The job's last recorded snapshot, or None if never seen (or its row is unreadable)."""
        key = clean(ref.key)
        rows = await self.db.rows(
            "SELECT job_key, snapshot::text FROM jobs WHERE job_key = %s", (key,)
        )
        return snapshots(rows, self.db.on_unreadable).get(key)

    async def last_all(self) -> dict[str, JobSnapshot]:
        """Every job's last recorded snapshot keyed by `JobRef.key`; unreadable rows are
        skipped (and told to `on_unreadable`)."""
        rows = await self.db.rows("SELECT job_key, snapshot::text FROM jobs")
        return snapshots(rows, self.db.on_unreadable)

    async def record(self, decision: Decision) -> None:
        """Save `decision` atomically (see `stores.state_table.StateTable.record`, whose contract
        this is).

        Raises:
            Fenced: the store is fenced (`fence`) and the poller lease has moved on.
            StoreError: the database cannot be written, or a value cannot be stored.
        """
        if decision.empty:
            return
        # Every parameter is built (and checked) before the transaction: a bad value is
        # refused whole, without a round trip.
        with self._values():
            rows = write_rows(decision, POSTGRES)
        async with self.db.tx() as conn:
            await self.leases.check_fence(conn)
            for statement, params in rows.steps:
                await _many(conn, statement, params)
            ids = await _inserted_ids(conn, rows.insert_event, rows.events)
            await _many(conn, rows.insert_entry, rows.entry_rows(ids))

    # -- flags ------------------------------------------------------------------------------

    async def flag(self, key: str) -> str | None:
        """A value saved with `record(Decision(flags=...))`, or None."""
        rows = await self.db.rows("SELECT value FROM meta WHERE key = %s", (clean(f"flag:{key}"),))
        return flag_value(key, rows[0][0], self.db.on_unreadable) if rows else None

    async def flags(self, prefix: str) -> dict[str, str]:
        """Every flag whose key starts with `prefix`, keyed by the rest of the key."""
        start = clean(f"flag:{prefix}")
        # starts_with, not LIKE (a prefix may hold `%` or `_`) nor a range (text order is the
        # collation's, not the characters').
        rows = await self.db.rows(
            "SELECT key, value FROM meta WHERE starts_with(key, %s)", (start,)
        )
        return flag_rows(rows, start, prefix, self.db.on_unreadable)

    async def forget(self, keys: Iterable[str]) -> None:
        """Drop the last state of jobs no longer watched; their outbox rows stay.

        Raises:
            Fenced: the store is fenced and the poller lease has moved on.
        """
        with self._values():
            dropped = [clean(key) for key in keys]
        if not dropped:
            return
        async with self.db.tx() as conn:
            await self.leases.check_fence(conn)
            await conn.execute("DELETE FROM jobs WHERE job_key = ANY(%s::text[])", (dropped,))

    # -- alert state ------------------------------------------------------------------------

    async def since_all(self, *, job: str | None = None) -> dict[str, Since]:
        """When each job (or only the one keyed `job`) entered its state and last moved."""
        job = None if job is None else clean(job)
        rows = await self.db.rows(POSTGRES.sql(SELECT_SINCE), (job, job))
        return since_rows(rows, self.db.on_unreadable)

    async def polled_all(self, *, job: str | None = None) -> dict[str, datetime]:
        """When each job (or only the one keyed `job`) was last polled, as far as it was
        written."""
        job = None if job is None else clean(job)
        rows = await self.db.rows(POSTGRES.sql(SELECT_POLLED), (job, job))
        return polled_rows(rows, self.db.on_unreadable)

    async def open_conditions(self) -> list[Condition]:
        """Every open condition, oldest first."""
        return condition_rows(await self.db.rows(SELECT_CONDITIONS), self.db.on_unreadable)

    async def reminder_times(self) -> dict[tuple[str, str], datetime]:
        """When each (channel, subject) is reminded next."""
        return reminder_rows(await self.db.rows(SELECT_REMINDERS), self.db.on_unreadable)

    @contextmanager
    def _values(self) -> Iterator[None]:
        # As on SQLite: a value the store cannot hold is a StoreError, never a crash.
        try:
            yield
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise StoreError(f"cannot write state database {self.db.display}: {exc}") from None


async def _many(conn: Connection, query: str, rows: Sequence[tuple[object, ...]]) -> None:
    # One pipelined batch; nothing at all for no rows.
    if rows:
        async with conn.cursor() as cursor:
            await cursor.executemany(query, rows)


async def _inserted_ids(
    conn: Connection, query: str, rows: Sequence[tuple[object, ...]]
) -> list[int]:
    """Insert the events, one batch, and return their ids in order."""
    if not rows:
        return []
    ids: list[int] = []
    async with conn.cursor() as cursor:
        await cursor.executemany(query, rows, returning=True)
        while True:
            row = await cursor.fetchone()
            if row is not None:
                ids.append(int(row[0]))
            if not cursor.nextset():
                break
    return ids
