"""The alerting half of `StateStore`: when each job entered its state and last moved, open
conditions and reminder times. Written inside `StateStore.record`'s one transaction, read at
start; a row that does not decode costs only itself (told to `on_unreadable`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime

from watcher.core.conditions import Condition, ConditionName, Since
from watcher.stores.base import Tables
from watcher.stores.rows import RowError, shown, text, ts, when

#: A reminder time to write, or None to drop the reminder (its subject is resolved).
ReminderTimes = Mapping[tuple[str, str], datetime | None]


class AlertTables(Tables):
    """Reads and writes of the jobs' times, conditions and reminders."""

    def since_all(self, *, job: str | None = None) -> dict[str, Since]:
        """When each job (or only the one keyed `job`) entered its state and last moved (jobs
        from before version 4 have no times: they count from now, as if first seen)."""
        with self._lock, self._errors("read"):
            rows = self._conn.execute(
                "SELECT job_key, state_since, moved_at, entered FROM jobs "
                "WHERE state_since IS NOT NULL AND (? IS NULL OR job_key = ?)",
                (job, job),
            ).fetchall()
        found: dict[str, Since] = {}
        for key, state, moved, entered in rows:
            try:
                found[str(key)] = Since(
                    when("jobs.state_since", state), when("jobs.moved_at", moved), entered == 1
                )
            except RowError as exc:
                self._on_unreadable(f"jobs {shown(key)}", str(exc))
        return found

    def polled_all(self, *, job: str | None = None) -> dict[str, datetime]:
        """When each job (or only the one keyed `job`) was last polled, as far as it was
        written (at most a minute stale)."""
        with self._lock, self._errors("read"):
            rows = self._conn.execute(
                "SELECT job_key, polled_at FROM jobs "
                "WHERE polled_at IS NOT NULL AND (? IS NULL OR job_key = ?)",
                (job, job),
            ).fetchall()
        found: dict[str, datetime] = {}
        for key, polled in rows:
            try:
                found[str(key)] = when("jobs.polled_at", polled)
            except RowError as exc:
                self._on_unreadable(f"jobs {shown(key)}", str(exc))
        return found

    def open_conditions(self) -> list[Condition]:
        """Every open condition, oldest first."""
        with self._lock, self._errors("read"):
            rows = self._conn.execute(
                "SELECT subject, name, opened_at, detail FROM conditions ORDER BY opened_at"
            ).fetchall()
        found: list[Condition] = []
        for subject, name, opened_at, detail in rows:
            try:
                found.append(
                    Condition(
                        text("conditions.subject", subject),
                        ConditionName(text("conditions.name", name)),
                        when("conditions.opened_at", opened_at),
                        text("conditions.detail", detail),
                    )
                )
            except (RowError, ValueError) as exc:
                self._on_unreadable(f"conditions {shown(subject)}", str(exc))
        return found

    def reminder_times(self) -> dict[tuple[str, str], datetime]:
        """When each (channel, subject) is reminded next."""
        with self._lock, self._errors("read"):
            rows = self._conn.execute("SELECT channel, subject, next_at FROM reminders").fetchall()
        found: dict[tuple[str, str], datetime] = {}
        for channel, subject, next_at in rows:
            try:
                key = (text("reminders.channel", channel), text("reminders.subject", subject))
                found[key] = when("reminders.next_at", next_at)
            except RowError as exc:
                self._on_unreadable(f"reminders {shown(subject)}", str(exc))
        return found

    @staticmethod
    def _write_alerts(
        conn: sqlite3.Connection,
        *,
        now: datetime,
        since: Mapping[str, Since],
        polled: Sequence[str],
        opened: Sequence[Condition],
        resolved: Sequence[Condition],
        reminders: ReminderTimes,
    ) -> None:
        """Inside `record`'s transaction, after the jobs rows are written."""
        conn.executemany(
            "UPDATE jobs SET state_since = ?, moved_at = ?, entered = ? WHERE job_key = ?",
            ((ts(s.state), ts(s.moved), int(s.entered), key) for key, s in since.items()),
        )
        stamp = ts(now)
        conn.executemany(
            "UPDATE jobs SET polled_at = ? WHERE job_key = ?", ((stamp, key) for key in polled)
        )
        conn.executemany(
            "DELETE FROM conditions WHERE subject = ? AND name = ?",
            ((c.subject, str(c.name)) for c in resolved),
        )
        conn.executemany(
            "INSERT INTO conditions (subject, name, opened_at, detail) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (subject, name) DO UPDATE SET detail = excluded.detail",
            ((c.subject, str(c.name), ts(c.opened_at), c.detail) for c in opened),
        )
        conn.executemany(
            "DELETE FROM reminders WHERE channel = ? AND subject = ?",
            (key for key, at in reminders.items() if at is None),
        )
        conn.executemany(
            "INSERT INTO reminders (channel, subject, next_at) VALUES (?, ?, ?) "
            "ON CONFLICT (channel, subject) DO UPDATE SET next_at = excluded.next_at",
            ((*key, ts(at)) for key, at in reminders.items() if at is not None),
        )
