"""The digests read of `StateStore` (its `digest_table`): the transition events of a period,
from the history. A digest's bookkeeping (`digest:<channel>` = the last period id) is a flag,
written with `record(Decision(flags=...))` in the transaction that queues the digest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from watcher.core.delivery import Event
from watcher.stores.dialect import (
    MAX_DIGEST_EVENTS,
    MAX_FIELDS_CHARS,
    SELECT_DIGEST,
    SQLITE,
    digest_params,
    digest_rows,
)
from watcher.stores.tables import Db

__all__ = ["MAX_DIGEST_EVENTS", "MAX_FIELDS_CHARS", "DigestTable"]


@dataclass
class DigestTable:
    """The period query."""

    db: Db

    def digest_events(
        self, start: datetime, end: datetime, *, limit: int = MAX_DIGEST_EVENTS
    ) -> list[Event]:
        """Transition events (not notices) observed in [start, end), newest first.

        At most `limit` (itself at most `MAX_DIGEST_EVENTS`): the newest when there are more.
        A row that does not decode, or whose fields are absurdly large, costs only itself.
        """
        # `ts()` text is fixed-width UTC: text order is time order, and the index applies.
        params = digest_params(start, end, limit, SQLITE)
        return digest_rows(self.db.read(SQLITE.sql(SELECT_DIGEST), params), self.db.on_unreadable)
