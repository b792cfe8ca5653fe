"""History on PostgreSQL (to be written)."""

from __future__ import annotations

from watcher.stores.pg.base import PgTables


class PgHistory(PgTables):
    """history, silenced, prune_history."""
