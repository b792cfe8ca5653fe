"""The one `store.error` line per failure, whichever part of the daemon meets it.

A store that stays broken (a lost state file, a full disk) fails every call of the poller, the
dispatcher and its lanes every few seconds: the same line again says nothing new. It is logged
when the error changes, and again once the store has worked in between.
"""

from __future__ import annotations

import structlog

from watcher.core.errors import StoreError

log = structlog.get_logger("watcher")


class StoreErrorLog:
    """Logs each distinct store error once until the store works again."""

    def __init__(self) -> None:
        self._last = ""

    def failed(self, exc: StoreError, **fields: object) -> None:
        """Log `exc` unless it is the error logged last."""
        if str(exc) != self._last:
            self._last = str(exc)
            log.error("store.error", error=str(exc), **fields)

    def worked(self) -> None:
        """The store answered: its next error is news again."""
        self._last = ""
