"""Jobs, flags and alert state on PostgreSQL (to be written)."""

from __future__ import annotations

from watcher.stores.pg.base import PgTables


class PgState(PgTables):
    """last_all, record, flags, forget, since_all, polled_all, open_conditions, reminder_times."""
