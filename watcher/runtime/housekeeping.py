"""Housekeeping: now and then, delete what the history no longer keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import structlog

from watcher.core.errors import StoreError
from watcher.ports import StateRepo
from watcher.runtime.storelog import StoreErrorLog

log = structlog.get_logger("watcher")

#: How often the store is pruned.
PRUNE_EVERY: Final = timedelta(hours=1)


class Housekeeping:
    """Prunes the store at most once per `PRUNE_EVERY`."""

    def __init__(self) -> None:
        self._next = datetime.min.replace(tzinfo=UTC)

    async def run(
        self, store: StateRepo, now: datetime, *, history_days: int, errors: StoreErrorLog
    ) -> None:
        """Delete events and settled notifications older than `history_days`, if an hour
        has passed since the last time."""
        if now < self._next:
            return
        self._next = now + PRUNE_EVERY
        try:
            events, deliveries = await store.prune_history(now - timedelta(days=history_days))
        except StoreError as exc:
            errors.failed(exc)
            return
        if events or deliveries:
            log.info("history.pruned", events=events, deliveries=deliveries)
