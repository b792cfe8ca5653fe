"""The alerting reads of `StateStore` (its `alert_table`): when each job entered its state
and last moved, open conditions and reminder times (written by `record`, read at start). The
SQL and the row mapping are shared with PostgreSQL (`stores.dialect`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from watcher.core.conditions import Condition, Since
from watcher.stores.dialect import (
    SELECT_CONDITIONS,
    SELECT_POLLED,
    SELECT_REMINDERS,
    SELECT_SINCE,
    SQLITE,
    condition_rows,
    polled_rows,
    reminder_rows,
    since_rows,
)
from watcher.stores.tables import Db


@dataclass
class AlertTable:
    """Reads of the jobs' times, conditions and reminders."""

    db: Db

    def since_all(self, *, job: str | None = None) -> dict[str, Since]:
        """When each job (or only the one keyed `job`) entered its state and last moved (jobs
        from before version 4 have no times: they count from now, as if first seen)."""
        return since_rows(self.db.read(SQLITE.sql(SELECT_SINCE), (job, job)), self.db.on_unreadable)

    def polled_all(self, *, job: str | None = None) -> dict[str, datetime]:
        """When each job (or only the one keyed `job`) was last polled, as far as it was
        written (at most a minute stale)."""
        return polled_rows(
            self.db.read(SQLITE.sql(SELECT_POLLED), (job, job)), self.db.on_unreadable
        )

    def open_conditions(self) -> list[Condition]:
        """Every open condition, oldest first."""
        return condition_rows(self.db.read(SELECT_CONDITIONS), self.db.on_unreadable)

    def reminder_times(self) -> dict[tuple[str, str], datetime]:
        """When each (channel, subject) is reminded next."""
        return reminder_rows(self.db.read(SELECT_REMINDERS), self.db.on_unreadable)
