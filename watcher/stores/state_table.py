"""The jobs and flags of `StateStore` (its `state_table`): each job's last seen snapshot,
the flags, and `record`, which writes a poll's `Decision` (snapshots, times, conditions,
reminders, flags, events and their outbox rows) in ONE transaction, under the fence of the
`LeaseTable`. The statements and the row mapping are shared with PostgreSQL
(`stores.dialect`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from watcher.core.decision import Decision
from watcher.core.model import JobRef, JobSnapshot
from watcher.stores.dialect import SQLITE, flag_rows, flag_value, snapshots, write_rows
from watcher.stores.lease_table import LeaseTable
from watcher.stores.tables import Db


@dataclass
class StateTable:
    """last, last_all, record, flag, flags, forget; the writes under the fence of `leases`."""

    db: Db
    leases: LeaseTable

    def last(self, ref: JobRef) -> JobSnapshot | None:
        """The job's last recorded snapshot, or None if never seen (or its row is unreadable)."""
        rows = self.db.read("SELECT job_key, snapshot FROM jobs WHERE job_key = ?", (ref.key,))
        return snapshots(rows, self.db.on_unreadable).get(ref.key)

    def last_all(self) -> dict[str, JobSnapshot]:
        """Every job's last recorded snapshot keyed by `JobRef.key`; unreadable rows are skipped."""
        rows = self.db.read("SELECT job_key, snapshot FROM jobs")
        return snapshots(rows, self.db.on_unreadable)

    def record(self, decision: Decision) -> None:
        """Save `decision` (see `core.decision.Decision`) atomically: either everything is written or
        nothing is; with nothing to write, no transaction.

        Raises:
            Fenced: the store is fenced (`fence`) and the poller lease has moved on.
            StoreError: the database cannot be written, or a value cannot be stored.
        """
        if decision.empty:
            return
        with self.db.errors("write"):
            rows = write_rows(decision, SQLITE)
        with self.db.write() as conn:
            self.leases.check_fence(conn)
            for statement, params in rows.steps:
                conn.executemany(statement, params)
            ids = [conn.execute(rows.insert_event, event).fetchone()[0] for event in rows.events]
            conn.executemany(rows.insert_entry, rows.entry_rows(ids))

    def flag(self, key: str) -> str | None:
        """A value saved with `record(Decision(flags=...))`, or None."""
        rows = self.db.read("SELECT value FROM meta WHERE key = ?", (f"flag:{key}",))
        return flag_value(key, rows[0][0], self.db.on_unreadable) if rows else None

    def flags(self, prefix: str) -> dict[str, str]:
        """Every flag whose key starts with `prefix`, keyed by the rest of the key."""
        start = f"flag:{prefix}"
        # A range, not LIKE: a prefix may hold `%` or `_`.
        rows = self.db.read(
            "SELECT key, value FROM meta WHERE key >= ? AND key < ?",
            (start, start + "\U0010ffff"),
        )
        return flag_rows(rows, start, prefix, self.db.on_unreadable)

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the last state of jobs no longer watched; their outbox rows stay."""
        params = [(key,) for key in keys]
        if not params:
            return
        with self.db.write() as conn:
            self.leases.check_fence(conn)
            conn.executemany("DELETE FROM jobs WHERE job_key = ?", params)
