"""History on PostgreSQL: the timeline of events with what became of their deliveries, the
silenced deliveries, and pruning by age, as on SQLite (`stores.history_table`).

A job filter is a Python predicate (the caller's matching of ids, keys and globs is the one
rule, and SQL cannot express it): the events are scanned newest first in pages and filtered
here, until the limit is reached or the period is exhausted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from watcher.stores.dialect import SKIPPED
from watcher.stores.history_table import (
    MAX_HISTORY,
    SILENCED_COLUMNS,
    TRACE_COLUMNS,
    Entry,
    Silenced,
    entries,
    silenced_rows,
)
from watcher.stores.outbox_table import DEAD, DELIVERED, SILENCED
from watcher.stores.pg.pg_leases import PgLeases
from watcher.stores.pg.pg_tables import Connection, PgDb

#: Events read per page while a job predicate filters them.
PAGE: Final = 1000
_EVENTS = (
    "SELECT id, job_key, old_state, new_state, observed_at, notice, fields::text, kind FROM events"
)


@dataclass
class PgHistory:
    """history, silenced, prune_history (under the fence of `leases`), over the
    store's `PgDb`."""

    db: PgDb
    leases: PgLeases

    async def history(
        self,
        *,
        since: datetime,
        job: Callable[[str], bool] | None = None,
        limit: int = MAX_HISTORY,
    ) -> tuple[list[Entry], bool]:
        """See `stores.history_table.HistoryTable.history`."""
        async with self.db.conn() as conn:
            if job is None:
                cursor = await conn.execute(
                    f"{_EVENTS} WHERE observed_at >= %s ORDER BY observed_at DESC, id DESC "
                    "LIMIT %s",
                    (since, limit + 1),
                )
                rows = await cursor.fetchall()
            else:
                rows = await _matching(conn, since, job, limit + 1)
            ids = [int(row[0]) for row in rows[:limit]]
            cursor = await conn.execute(
                f"SELECT {TRACE_COLUMNS} FROM outbox WHERE event_id = ANY(%s) ORDER BY id", (ids,)
            )
            traced = await cursor.fetchall()
        return entries(rows, traced, limit, self.db.on_unreadable)

    async def silenced(self, *, limit: int = 100) -> tuple[int, list[Silenced]]:
        """How many deliveries are recorded as silenced, and the latest `limit` of them."""
        async with self.db.conn() as conn:
            cursor = await conn.execute(
                "SELECT count(*) FROM outbox WHERE status = %s", (SILENCED,)
            )
            counted = await cursor.fetchone()
            cursor = await conn.execute(
                f"SELECT {SILENCED_COLUMNS} FROM outbox WHERE status = %s "
                "ORDER BY id DESC LIMIT %s",
                (SILENCED, limit),
            )
            rows = await cursor.fetchall()
        return (int(counted[0]) if counted else 0), silenced_rows(rows, self.db.on_unreadable)

    async def prune_history(self, before: datetime) -> tuple[int, int]:
        """Delete what is older than `before`: settled deliveries created and settled before
        it, then the events observed before it that no remaining delivery points at
        (pending deliveries and their events are kept). Returns (events, deliveries)
        deleted, in one transaction, refused (`Fenced`) once this replica is deposed."""
        async with self.db.tx() as conn:
            await self.leases.check_fence(conn)
            cursor = await conn.execute(
                "DELETE FROM outbox WHERE status IN (%s, %s, %s, %s) AND created_at < %s "
                "AND (delivered_at IS NULL OR delivered_at < %s)",
                (DELIVERED, DEAD, SILENCED, SKIPPED, before, before),
            )
            deliveries = cursor.rowcount
            cursor = await conn.execute(
                "DELETE FROM events AS e WHERE e.observed_at < %s AND NOT EXISTS "
                "(SELECT 1 FROM outbox AS o WHERE o.event_id = e.id)",
                (before,),
            )
            events = cursor.rowcount
        return events, deliveries


async def _matching(
    conn: Connection, since: datetime, job: Callable[[str], bool], wanted: int
) -> list[tuple[Any, ...]]:
    """The newest `wanted` events at or after `since` whose job key `job` accepts, newest
    first: pages of the events in (observed_at, id) order, each after the last one read."""
    found: list[tuple[Any, ...]] = []
    after: tuple[datetime, int] | None = None
    while len(found) < wanted:
        if after is None:
            cursor = await conn.execute(
                f"{_EVENTS} WHERE observed_at >= %s ORDER BY observed_at DESC, id DESC LIMIT %s",
                (since, PAGE),
            )
        else:
            cursor = await conn.execute(
                f"{_EVENTS} WHERE observed_at >= %s AND (observed_at, id) < (%s, %s) "
                "ORDER BY observed_at DESC, id DESC LIMIT %s",
                (since, *after, PAGE),
            )
        page = await cursor.fetchall()
        found += [row for row in page if isinstance(row[1], str) and job(row[1])]
        if len(page) < PAGE:
            break
        after = (page[-1][4], page[-1][0])
    return found[:wanted]
