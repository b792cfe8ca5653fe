"""The outbox on PostgreSQL (to be written)."""

from __future__ import annotations

from watcher.stores.pg.base import PgTables


class PgOutbox(PgTables):
    """claim, claim_target, settles, holds, stats, prune, announce_after_silences."""
