"""Digest events on PostgreSQL: the transition events of a period, read from the history,
with SQLite's statement and row mapping (`stores.dialect`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from watcher.core.delivery import Event
from watcher.stores.dialect import (
    MAX_DIGEST_EVENTS,
    POSTGRES,
    SELECT_DIGEST,
    digest_params,
    digest_rows,
)
from watcher.stores.pg.pg_tables import PgDb


@dataclass
class PgDigests:
    """digest_events, over the store's `PgDb`."""

    db: PgDb

    async def digest_events(
        self, start: datetime, end: datetime, *, limit: int = MAX_DIGEST_EVENTS
    ) -> list[Event]:
        """See `stores.digest_table.DigestTable.digest_events`."""
        params = digest_params(start, end, limit, POSTGRES)
        rows = await self.db.rows(POSTGRES.sql(SELECT_DIGEST), params)
        return digest_rows(rows, self.db.on_unreadable)
