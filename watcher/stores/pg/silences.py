"""Silences on PostgreSQL (to be written)."""

from __future__ import annotations

from watcher.stores.pg.base import PgTables


class PgSilences(PgTables):
    """add_silence, expire_silence, silences."""
