"""Digest events on PostgreSQL (to be written)."""

from __future__ import annotations

from watcher.stores.pg.base import PgTables


class PgDigests(PgTables):
    """digest_events."""
