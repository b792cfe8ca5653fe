"""Digest events on PostgreSQL: the transition events of a period, read from the history,
as on SQLite (`stores.digests`)."""

from __future__ import annotations

from datetime import datetime

from watcher.core.delivery import Event
from watcher.stores.digests import MAX_DIGEST_EVENTS, MAX_FIELDS_CHARS
from watcher.stores.pg.base import PgTables
from watcher.stores.rows import RowError, event_row, shown


class PgDigests(PgTables):
    """digest_events."""

    async def digest_events(
        self, start: datetime, end: datetime, *, limit: int = MAX_DIGEST_EVENTS
    ) -> list[Event]:
        """Transition events (not notices) observed in [start, end), newest first.

        At most `limit` (itself at most `MAX_DIGEST_EVENTS`): the newest when there are more.
        A row that does not decode, or whose fields are absurdly large, costs only itself.
        """
        limit = max(1, min(limit, MAX_DIGEST_EVENTS))
        async with self._conn() as conn:
            cursor = await conn.execute(
                "SELECT id, length(fields::text), job_key, old_state, new_state, observed_at, "
                "notice, CASE WHEN length(fields::text) <= %s THEN fields::text END, kind "
                "FROM events WHERE NOT notice AND kind = '' AND observed_at >= %s "
                "AND observed_at < %s ORDER BY observed_at DESC, id DESC LIMIT %s",
                (MAX_FIELDS_CHARS, start, end, limit),
            )
            rows = await cursor.fetchall()
        found: list[Event] = []
        for event_id, size, *row in rows:
            try:
                if isinstance(size, int) and size > MAX_FIELDS_CHARS:
                    raise RowError(f"events.fields: {size} characters, more than a digest reads")
                event = event_row(event_id, row)
            except RowError as exc:
                self._on_unreadable(f"events {shown(event_id)}", str(exc))
                continue
            if event is not None:
                found.append(event)
        return found
