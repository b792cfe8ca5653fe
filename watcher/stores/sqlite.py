"""The watcher's durable state: each job's last seen snapshot and an outbox of notifications.

A poll writes a job's new snapshot and the notifications its transition causes in ONE SQLite
transaction, before anything is sent; the notifier then works through the outbox and marks each
row delivered, retried later, or dead. So a crash can repeat a send that was in flight but never
loses one, and a restart never repeats a delivered notification.

Only this package imports `sqlite3`. `StateStore` is synchronous: the daemon calls it through
`stores.aio.AsyncStore`, in a worker thread behind a `CapacityLimiter(1)`. Every `sqlite3`
error leaves it as a one-line `StoreError` naming the database path. The schema and the row
conversions are in `stores.rows`, the outbox methods in `stores.outbox_table`, the file's identity
and rescue in `stores.files`, the one-daemon lock in `stores.lock`.

Hostile contents cost only their row: a cell that does not decode makes its outbox row dead
(quarantined, with the reason), its job row unknown (re-baselined), its flag unset; each is
told to `on_unreadable`. A state file deleted or replaced while open is told once to `on_lost`,
after which every call raises `StoreError`: nothing is written as if it were still durable.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self, TypedDict, Unpack

from watcher.core.decision import Decision
from watcher.core.errors import StoreError
from watcher.core.model import JobRef, JobSnapshot
from watcher.stores import files
from watcher.stores.alert_table import AlertTables
from watcher.stores.dialect import SQLITE, flag_rows, flag_value, snapshots, write_rows
from watcher.stores.digest_table import DigestTable
from watcher.stores.history_table import HistoryTable
from watcher.stores.lease_table import LeaseTable
from watcher.stores.outbox_table import OutboxTable
from watcher.stores.rows import MIGRATIONS
from watcher.stores.silence_table import SilenceTable
from watcher.stores.tables import OnUnreadable, ignore

#: Told once, with the reason, when the state file is deleted or replaced while open.
OnLost = Callable[[str], None]


class Options(TypedDict, total=False):
    """`StateStore.open`'s keywords (see `StateStore.__init__`)."""

    on_unreadable: OnUnreadable
    on_lost: OnLost
    migrate: bool


class StateStore(OutboxTable, AlertTables, SilenceTable, HistoryTable, DigestTable, LeaseTable):
    """Last seen job snapshots and the notification outbox in one SQLite file.

    Use as a context manager, or call `close()`. Methods raise `StoreError` when the database
    cannot be read or written.
    """

    SCHEMA_VERSION: ClassVar[int] = len(MIGRATIONS)

    def __init__(
        self,
        path: Path,
        *,
        on_unreadable: OnUnreadable = ignore,
        on_lost: OnLost = ignore,
        migrate: bool = True,
    ) -> None:
        """Open (creating if needed, mode 0600) the database at `path` and bring its schema up
        to date (with `migrate=False`, refuse one that is behind instead).

        Raises:
            StoreError: the file cannot be created or opened, is not a database, was written
                by a newer fireworks-watcher, or (`migrate=False`) needs a migration.
        """
        self._path = path
        self._on_unreadable = on_unreadable
        self._on_lost = on_lost
        self._lost: str | None = None
        # The connection is shared across worker threads; the lock keeps one transaction at a
        # time even if a caller forgets the capacity limiter.
        self._lock = threading.Lock()
        files.prepare(path)
        try:
            self._identity = files.identity(path)
        except OSError as exc:
            raise StoreError(f"cannot open state database {path}: {files.reason(exc)}") from exc
        try:
            self._conn = sqlite3.connect(
                path, timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {path}: {files.reason(exc)}") from exc
        try:
            with self._errors("open"):
                self._conn.execute("PRAGMA journal_mode=WAL")
                # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss,
                # and a committed transition must survive.
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA busy_timeout=5000")
                self.migrated_from = self._migrate(apply=migrate)
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def open(cls, path: Path, **options: Unpack[Options]) -> StateStore:
        """Open the database at `path`; the same as `StateStore(path, ...)`."""
        return cls(path, **options)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def lost(self) -> str | None:
        """Why the store stopped (its file was deleted or replaced while open), or None."""
        return self._lost

    def close(self) -> None:
        """Close the database; further calls raise `StoreError`. Closing twice is harmless."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- jobs -------------------------------------------------------------------------------

    def last(self, ref: JobRef) -> JobSnapshot | None:
        """The job's last recorded snapshot, or None if never seen (or its row is unreadable)."""
        with self._lock, self._errors("read"):
            rows = self._conn.execute(
                "SELECT job_key, snapshot FROM jobs WHERE job_key = ?", (ref.key,)
            ).fetchall()
        return snapshots(rows, self._on_unreadable).get(ref.key)

    def last_all(self) -> dict[str, JobSnapshot]:
        """Every job's last recorded snapshot keyed by `JobRef.key`; unreadable rows are skipped."""
        with self._lock, self._errors("read"):
            rows = self._conn.execute("SELECT job_key, snapshot FROM jobs").fetchall()
        return snapshots(rows, self._on_unreadable)

    def record(self, write: Decision) -> None:
        """Save `write` (see `core.decision.Decision`) atomically: either everything is written or
        nothing is; with nothing to write, no transaction.

        Raises:
            Fenced: the store is fenced (`fence`) and the poller lease has moved on.
            StoreError: the database cannot be written, or a value cannot be stored.
        """
        if write.empty:
            return
        with self._errors("write"):
            rows = write_rows(write, SQLITE)
        with self._write() as conn:
            self._check_fence(conn)
            for statement, params in rows.steps:
                conn.executemany(statement, params)
            ids = [conn.execute(rows.insert_event, event).fetchone()[0] for event in rows.events]
            conn.executemany(rows.insert_entry, rows.entry_rows(ids))

    def flag(self, key: str) -> str | None:
        """A value saved with `record(Decision(flags=...))`, or None."""
        with self._lock, self._errors("read"):
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = ?", (f"flag:{key}",)
            ).fetchone()
        return None if row is None else flag_value(key, row[0], self._on_unreadable)

    def flags(self, prefix: str) -> dict[str, str]:
        """Every flag whose key starts with `prefix`, keyed by the rest of the key."""
        start = f"flag:{prefix}"
        with self._lock, self._errors("read"):
            # A range, not LIKE: a prefix may hold `%` or `_`.
            rows = self._conn.execute(
                "SELECT key, value FROM meta WHERE key >= ? AND key < ?",
                (start, start + "\U0010ffff"),
            ).fetchall()
        return flag_rows(rows, start, prefix, self._on_unreadable)

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the last state of jobs no longer watched; their outbox rows stay."""
        params = [(key,) for key in keys]
        if not params:
            return
        with self._write() as conn:
            self._check_fence(conn)
            conn.executemany("DELETE FROM jobs WHERE job_key = ?", params)

    # -- helpers ----------------------------------------------------------------------------

    def _migrate(self, *, apply: bool = True) -> int:
        """Create or upgrade the schema; refuse a database from a newer version (and, unless
        `apply`, one that needs upgrading). Returns the version found."""
        with self._write("open") as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            try:
                version = 0 if row is None else int(row[0])
            except (TypeError, ValueError):
                raise StoreError(
                    f"cannot open state database {self._path}: unreadable schema version"
                ) from None
            if version > self.SCHEMA_VERSION:
                raise StoreError(
                    f"cannot open state database {self._path}: written by a newer "
                    f"fireworks-watcher (schema {version}, this one knows {self.SCHEMA_VERSION})"
                )
            if not apply and version < self.SCHEMA_VERSION:
                raise StoreError(
                    f"state database {self._path} is at schema {version}, this "
                    f"fireworks-watcher needs {self.SCHEMA_VERSION}: run `fireworks-watcher migrate`"
                )
            for script in MIGRATIONS[version : self.SCHEMA_VERSION]:
                # executescript() would COMMIT our transaction; run the statements one by one.
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(self.SCHEMA_VERSION),),
            )
        return version

    @contextmanager
    def _write(self, action: str = "write") -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._lock, self._errors(action):
            conn = self._conn
            # IMMEDIATE takes the write lock now, so a busy database fails here, not mid-way.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # The original error matters; a failed rollback (no transaction left) does not.
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def _check_file(self) -> None:
        """Stop once the path no longer names the file opened (see `files.lose`)."""
        try:
            now = files.identity(self._path)
        except OSError:  # cannot tell (a flaky mount): not a loss; the next call looks again
            return
        if now != self._identity:
            self._lost = files.lose(self._conn, self._path, deleted=now is None)
            self._on_lost(self._lost)
            raise StoreError(self._lost)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        # The one translation to the error tree: nothing but StoreError leaves the store, so a
        # bad value in one row is a skipped write, never a crashed delivery batch.
        if self._lost is not None:
            raise StoreError(self._lost)
        # Every call looks (one stat): the dispatcher's calls every few seconds find a lost file
        # within them, however quiet the jobs are.
        self._check_file()
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot {action} state database {self._path}: {files.reason(exc)}"
            ) from exc
        except (TypeError, ValueError, KeyError) as exc:
            raise StoreError(f"cannot {action} state database {self._path}: {exc}") from exc
