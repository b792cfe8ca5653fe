"""The digests half of `StateStore`: the transition events of a period, read from the
history. A digest's bookkeeping (`digest:<channel>` = the last period id) is a flag, written
with `record(flags=...)` in the transaction that queues the digest."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from watcher.core.delivery import Event
from watcher.stores.base import Tables
from watcher.stores.rows import RowError, event_row, shown, ts

#: The most events one call returns (the newest when a period holds more).
MAX_DIGEST_EVENTS: Final = 10_000
#: A transition's fields are a few hundred characters; a larger cell is not read for a digest.
MAX_FIELDS_CHARS: Final = 64 * 1024


class DigestTable(Tables):
    """The period query over the connection `StateStore` provides."""

    def digest_events(
        self, start: datetime, end: datetime, *, limit: int = MAX_DIGEST_EVENTS
    ) -> list[Event]:
        """Transition events (not notices) observed in [start, end), newest first.

        At most `limit` (itself at most `MAX_DIGEST_EVENTS`): the newest when there are more.
        A row that does not decode, or whose fields are absurdly large, costs only itself.
        """
        limit = max(1, min(limit, MAX_DIGEST_EVENTS))
        with self._lock, self._errors("read"):
            # `ts()` text is fixed-width UTC: text order is time order, and the index applies.
            rows = self._conn.execute(
                "SELECT id, length(fields), job_key, old_state, new_state, observed_at, notice, "
                "CASE WHEN length(fields) <= ? THEN fields END, kind FROM events "
                "WHERE notice = 0 AND kind = '' AND observed_at >= ? AND observed_at < ? "
                "ORDER BY observed_at DESC, id DESC LIMIT ?",
                (MAX_FIELDS_CHARS, ts(start), ts(end), limit),
            ).fetchall()
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
