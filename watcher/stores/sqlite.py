"""The watcher's durable state: each job's last seen snapshot and an outbox of notifications.

A poll writes a job's new snapshot and the notifications its transition causes in ONE SQLite
transaction, before anything is sent; the notifier then works through the outbox and marks each
row delivered, retried later, or dead. So a crash can repeat a send that was in flight but never
loses one, and a restart never repeats a delivered notification.

Only this package imports `sqlite3`. `StateStore` is synchronous: the daemon calls it through
`stores.aio.AsyncStore`, in a worker thread behind a `CapacityLimiter(1)`. Every `sqlite3`
error leaves it as a one-line `StoreError` naming the database path. The schema and the row
conversions are in `stores.rows`, the outbox methods in `stores.outbox`, the file's identity
and rescue in `stores.files`, the one-daemon lock in `stores.lock`.

Hostile contents cost only their row: a cell that does not decode makes its outbox row dead
(quarantined, with the reason), its job row unknown (re-baselined), its flag unset; each is
told to `on_unreadable`. A state file deleted or replaced while open is told once to `on_lost`,
after which every call raises `StoreError`: nothing is written as if it were still durable.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self, TypeVar

from watcher.core.conditions import Condition, Since
from watcher.core.delivery import Event, OutboxEntry
from watcher.core.errors import StoreError
from watcher.core.model import JobRef, JobSnapshot
from watcher.stores import files
from watcher.stores.alerts import AlertTables, ReminderTimes
from watcher.stores.base import OnUnreadable, ignore
from watcher.stores.digests import DigestTable
from watcher.stores.history import HistoryTable
from watcher.stores.leases import LeaseTable
from watcher.stores.outbox import PENDING, OutboxTable
from watcher.stores.rows import (
    MIGRATIONS,
    RowError,
    decode_snapshot,
    encode_snapshot,
    entry_params,
    event_params,
    shown,
    ts,
)
from watcher.stores.silences import SilenceTable

T = TypeVar("T")

#: Told once, with the reason, when the state file is deleted or replaced while open.
OnLost = Callable[[str], None]


class StateStore(OutboxTable, AlertTables, SilenceTable, HistoryTable, DigestTable, LeaseTable):
    """Last seen job snapshots and the notification outbox in one SQLite file.

    Use as a context manager, or call `close()`. Methods raise `StoreError` when the database
    cannot be read or written.
    """

    SCHEMA_VERSION: ClassVar[int] = 5

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
    def open(
        cls,
        path: Path,
        *,
        on_unreadable: OnUnreadable = ignore,
        on_lost: OnLost = ignore,
        migrate: bool = True,
    ) -> StateStore:
        """Open the database at `path`; the same as `StateStore(path, ...)`."""
        return cls(path, on_unreadable=on_unreadable, on_lost=on_lost, migrate=migrate)

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
            row = self._conn.execute(
                "SELECT snapshot FROM jobs WHERE job_key = ?", (ref.key,)
            ).fetchone()
        return None if row is None else self._snapshot(ref.key, row[0])

    def last_all(self) -> dict[str, JobSnapshot]:
        """Every job's last recorded snapshot keyed by `JobRef.key`; unreadable rows are skipped."""
        with self._lock, self._errors("read"):
            rows = self._conn.execute("SELECT job_key, snapshot FROM jobs").fetchall()
        decoded = ((key, self._snapshot(key, cell)) for key, cell in rows)
        return {key: snapshot for key, snapshot in decoded if snapshot is not None}

    def _snapshot(self, key: object, cell: object) -> JobSnapshot | None:
        try:
            return decode_snapshot(key, cell)
        except RowError as exc:
            self._on_unreadable(f"jobs {shown(key)}", str(exc))
            return None

    def record(
        self,
        snapshots: Sequence[JobSnapshot],
        entries: Sequence[OutboxEntry],
        *,
        now: datetime,
        flags: Mapping[str, str] | None = None,
        events: Sequence[Event] = (),
        since: Mapping[str, Since] | None = None,
        polled: Sequence[str] = (),
        opened: Sequence[Condition] = (),
        resolved: Sequence[Condition] = (),
        reminders: ReminderTimes | None = None,
    ) -> None:
        """Save snapshots as their jobs' last seen state and queue notifications, atomically.

        Args:
            snapshots: each becomes its job's last seen state.
            entries: new outbox rows: pending, no attempts, due at their `created_at`; each
                entry's event is stored too (once, however many entries share it).
            now: stored as the jobs' update time.
            flags: small named values kept with them (e.g. that an outage was announced).
            events: events to keep in the history even when no entry points at them.
            since: when jobs (among `snapshots`, or known) entered their state and last moved.
            polled: keys of known jobs polled now (written snapshots count as polled).
            opened: conditions to store as open; resolved: open ones to drop.
            reminders: the next reminder time per (channel, subject); None drops it.

        Either everything is written or nothing is; with nothing to write, no transaction.
        """
        alerts = (since, polled, opened, resolved, reminders)
        if not snapshots and not entries and not flags and not events and not any(alerts):
            return
        every_event = dict.fromkeys([*events, *(e.event for e in entries if e.event)])
        updated_at = ts(now)
        with self._write() as conn:
            self._check_fence(conn)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ((f"flag:{key}", value) for key, value in (flags or {}).items()),
            )
            conn.executemany(
                "INSERT INTO jobs (job_key, snapshot, updated_at, polled_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (job_key) DO UPDATE SET snapshot = excluded.snapshot, "
                "updated_at = excluded.updated_at, polled_at = excluded.polled_at",
                ((s.ref.key, encode_snapshot(s), updated_at, updated_at) for s in snapshots),
            )
            self._write_alerts(
                conn,
                now=now,
                since=since or {},
                polled=polled,
                opened=opened,
                resolved=resolved,
                reminders=reminders or {},
            )
            ids = {
                event: conn.execute(
                    "INSERT INTO events (job_key, old_state, new_state, observed_at, notice, "
                    "fields, kind) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    event_params(event),
                ).lastrowid
                for event in every_event
            }
            conn.executemany(
                "INSERT INTO outbox (job_key, channel, url_key, url_display, title, body, "
                "old_state, new_state, created_at, status, attempts, next_attempt_at, "
                f"last_error, event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '{PENDING}', 0, ?, "
                "'', ?)",
                ((*entry_params(e), ids[e.event] if e.event else None) for e in entries),
            )

    def flag(self, key: str) -> str | None:
        """A value saved with `record(flags=...)`, or None."""
        with self._lock, self._errors("read"):
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = ?", (f"flag:{key}",)
            ).fetchone()
        return None if row is None else self._flag_value(key, row[0])

    def flags(self, prefix: str) -> dict[str, str]:
        """Every flag whose key starts with `prefix`, keyed by the rest of the key."""
        start = f"flag:{prefix}"
        with self._lock, self._errors("read"):
            # A range, not LIKE: a prefix may hold `%` or `_`.
            rows = self._conn.execute(
                "SELECT key, value FROM meta WHERE key >= ? AND key < ?",
                (start, start + "\U0010ffff"),
            ).fetchall()
        found = ((str(key)[len(start) :], value) for key, value in rows)
        return {
            name: text
            for name, value in found
            if (text := self._flag_value(prefix + name, value)) is not None
        }

    def _flag_value(self, key: str, value: object) -> str | None:
        # Text only: a NULL or a blob is an unset flag (and said so), never the text "None".
        if isinstance(value, str):
            return value
        self._on_unreadable(
            f"meta {shown('flag:' + key)}", f"meta.value: {shown(value)} is not text"
        )
        return None

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
