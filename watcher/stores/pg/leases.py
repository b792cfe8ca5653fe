"""The leadership lease and heartbeats on PostgreSQL (to be written)."""

from __future__ import annotations

from watcher.stores.pg.base import PgTables


class PgLeases(PgTables):
    """acquire_lease, release_lease, lease, beat, replicas."""
