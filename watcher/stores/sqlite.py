"""The watcher's durable state: each job's last seen snapshot and an outbox of notifications.

A poll writes a job's new snapshot and the notifications its transition causes in ONE SQLite
transaction, before anything is sent; the notifier then works through the outbox and marks each
row delivered, retried later, or dead. So a crash can repeat a send that was in flight but never
loses one, and a restart never repeats a delivered notification.

Only this package imports `sqlite3`. `StateStore` is synchronous: the daemon calls it through
`stores.aio.AsyncStore`, in a worker thread behind a `CapacityLimiter(1)`. Every `sqlite3`
error leaves it as a one-line `StoreError` naming the database path. The schema and the row
conversions are in `stores.rows`, the one-daemon lock in `stores.lock`.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

from watcher.core.delivery import Delivery, Event, OutboxEntry
from watcher.core.errors import LeaseLost, StoreError
from watcher.core.model import JobRef, JobSnapshot
from watcher.stores.rows import (
    CLAIMABLE,
    MIGRATIONS,
    SELECT_DELIVERIES,
    decode_snapshot,
    delivery_row,
    encode_snapshot,
    entry_params,
    event_params,
    ts,
)

T = TypeVar("T")

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"


class StateStore:
    """Last seen job snapshots and the notification outbox in one SQLite file.

    Use as a context manager, or call `close()`. Methods raise `StoreError` when the database
    cannot be read or written.
    """

    SCHEMA_VERSION: ClassVar[int] = 3

    def __init__(self, path: Path) -> None:
        """Open (creating if needed, mode 0600) the database at `path` and bring its schema up to date.

        Raises:
            StoreError: the file cannot be created or opened, is not a database, or was written
                by a newer fireworks-watcher.
        """
        self._path = path
        # The connection is shared across worker threads; the lock keeps one transaction at a
        # time even if a caller forgets the capacity limiter.
        self._lock = threading.Lock()
        _prepare_file(path)
        try:
            self._conn = sqlite3.connect(
                path, timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {path}: {_reason(exc)}") from exc
        try:
            with self._errors("open"):
                self._conn.execute("PRAGMA journal_mode=WAL")
                # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss,
                # and a committed transition must survive.
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA busy_timeout=5000")
                self._migrate()
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def open(cls, path: Path) -> StateStore:
        """Open the database at `path`; the same as `StateStore(path)`."""
        return cls(path)

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
        if row is None:
            return None
        return decode_snapshot(ref.key, row[0])

    def last_all(self) -> dict[str, JobSnapshot]:
        """Every job's last recorded snapshot keyed by `JobRef.key`; unreadable rows are skipped."""
        with self._lock, self._errors("read"):
            rows = self._conn.execute("SELECT job_key, snapshot FROM jobs").fetchall()
        decoded = ((key, decode_snapshot(key, text)) for key, text in rows)
        return {key: snapshot for key, snapshot in decoded if snapshot is not None}

    def record(
        self,
        snapshots: Sequence[JobSnapshot],
        entries: Sequence[OutboxEntry],
        *,
        now: datetime,
        flags: Mapping[str, str] | None = None,
        events: Sequence[Event] = (),
    ) -> None:
        """Save snapshots as their jobs' last seen state and queue notifications, atomically.

        Args:
            snapshots: each becomes its job's last seen state.
            entries: new outbox rows: pending, no attempts, due at their `created_at`; each
                entry's event is stored too (once, however many entries share it).
            now: stored as the jobs' update time.
            flags: small named values kept with them (e.g. that an outage was announced).
            events: events to keep in the history even when no entry points at them.

        Either everything is written or nothing is; with nothing to write, no transaction.
        """
        if not snapshots and not entries and not flags and not events:
            return
        every_event = dict.fromkeys([*events, *(e.event for e in entries if e.event)])
        updated_at = ts(now)
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ((f"flag:{key}", value) for key, value in (flags or {}).items()),
            )
            conn.executemany(
                "INSERT INTO jobs (job_key, snapshot, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (job_key) DO UPDATE "
                "SET snapshot = excluded.snapshot, updated_at = excluded.updated_at",
                ((s.ref.key, encode_snapshot(s), updated_at) for s in snapshots),
            )
            ids = {
                event: conn.execute(
                    "INSERT INTO events (job_key, old_state, new_state, observed_at, notice, "
                    "fields) VALUES (?, ?, ?, ?, ?, ?)",
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
        return None if row is None else str(row[0])

    def flags(self, prefix: str) -> dict[str, str]:
        """Every flag whose key starts with `prefix`, keyed by the rest of the key."""
        start = f"flag:{prefix}"
        with self._lock, self._errors("read"):
            # A range, not LIKE: a prefix may hold `%` or `_`.
            rows = self._conn.execute(
                "SELECT key, value FROM meta WHERE key >= ? AND key < ?",
                (start, start + "\U0010ffff"),
            ).fetchall()
        return {str(key)[len(start) :]: str(value) for key, value in rows}

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the last state of jobs no longer watched; their outbox rows stay."""
        params = [(key,) for key in keys]
        if not params:
            return
        with self._write() as conn:
            conn.executemany("DELETE FROM jobs WHERE job_key = ?", params)

    # -- outbox -----------------------------------------------------------------------------

    def due(self, now: datetime, *, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose next attempt is at or before `now`, oldest first."""
        return self._deliveries(
            "WHERE o.status = ? AND o.next_attempt_at <= ? ORDER BY o.id LIMIT ?",
            (PENDING, ts(now), limit),
        )

    def claim(
        self,
        now: datetime,
        *,
        holder: str,
        lease: timedelta,
        busy: Collection[str] = (),
        limit: int = 100,
    ) -> list[Delivery]:
        """Claim the claimable deliveries (see `CLAIMABLE`) of targets not in `busy` until
        `now + lease`, oldest first; their marks must then name the claim (`holder`)."""
        skip = f" AND o.url_key NOT IN ({', '.join('?' for _ in busy)})" if busy else ""
        query = f"{SELECT_DELIVERIES} WHERE {CLAIMABLE}{skip} ORDER BY o.id LIMIT ?"
        stamp = ts(now)
        with self._write("claim in") as conn:
            found = conn.execute(query, (stamp, stamp, *busy, limit)).fetchall()
            conn.executemany(
                "UPDATE outbox SET claim = ?, claimed_until = ? WHERE id = ?",
                ((holder, ts(now + lease), row[0]) for row in found),
            )
        return [dataclasses.replace(delivery_row(row), claim=holder) for row in found]

    def release_claims(self) -> int:
        """Drop every claim: at start, by the one process that holds the state file's lock,
        so that sends cut short by a crash are retried at once."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE outbox SET claim = '', claimed_until = '' WHERE claim != ''"
            )
        return cursor.rowcount

    def next_due_at(self) -> datetime | None:
        """When the earliest pending delivery is due, or None if nothing is pending."""
        with self._lock, self._errors("read"):
            row = self._conn.execute(
                "SELECT MIN(MAX(next_attempt_at, claimed_until)) FROM outbox WHERE status = ?",
                (PENDING,),
            ).fetchone()
        return None if row[0] is None else datetime.fromisoformat(row[0])

    def outbox_stats(self) -> tuple[int, datetime | None]:
        """How many deliveries are pending, and when the oldest of them was created."""
        with self._lock, self._errors("read"):
            count, oldest = self._conn.execute(
                "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE status = ?", (PENDING,)
            ).fetchone()
        return int(count), None if oldest is None else datetime.fromisoformat(oldest)

    def undelivered(self) -> list[Delivery]:
        """Pending and dead deliveries (for the `status` command), oldest first."""
        return self._deliveries("WHERE o.status IN (?, ?) ORDER BY o.id", (PENDING, DEAD))

    def mark_delivered(self, delivery_id: int, *, now: datetime, claim: str | None = None) -> None:
        """Record that the delivery was sent (under `claim`, when it was claimed)."""
        self._update(
            delivery_id,
            "status = ?, delivered_at = ?, last_error = '', claim = '', claimed_until = ''",
            (DELIVERED, ts(now)),
            claim=claim,
        )

    def mark_retry(
        self, delivery_id: int, *, next_attempt_at: datetime, error: str, claim: str | None = None
    ) -> None:
        """Record a failed send to be tried again at `next_attempt_at`."""
        self._update(
            delivery_id,
            "attempts = attempts + 1, next_attempt_at = ?, last_error = ?, claim = '', "
            "claimed_until = ''",
            (ts(next_attempt_at), error),
            claim=claim,
        )

    def mark_dead(
        self, delivery_id: int, *, now: datetime, error: str, claim: str | None = None
    ) -> None:
        """Give the delivery up after a failed send; its `next_attempt_at` becomes `now`."""
        self._update(
            delivery_id,
            "attempts = attempts + 1, status = ?, next_attempt_at = ?, last_error = ?, "
            "claim = '', claimed_until = ''",
            (DEAD, ts(now), error),
            claim=claim,
        )

    def prune(self, *, delivered_before: datetime) -> int:
        """Delete deliveries delivered before `delivered_before`; returns how many."""
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM outbox WHERE status = ? AND delivered_at < ?",
                (DELIVERED, ts(delivered_before)),
            )
        return cursor.rowcount

    # -- helpers ----------------------------------------------------------------------------

    def _deliveries(self, where: str, params: tuple[Any, ...]) -> list[Delivery]:
        with self._lock, self._errors("read"):
            rows = self._conn.execute(f"{SELECT_DELIVERIES} {where}", params).fetchall()
        return [delivery_row(row) for row in rows]

    def _update(
        self,
        delivery_id: int,
        assignments: str,
        params: tuple[Any, ...],
        *,
        claim: str | None,
    ) -> None:
        # A mark under a claim applies only while the claim is still the row's own: a
        # dispatcher whose lease was taken over must not settle what another one sends.
        where = "id = ? AND status = 'pending'" + (" AND claim = ?" if claim is not None else "")
        args = (*params, delivery_id, *(() if claim is None else (claim,)))
        with self._write() as conn:
            cursor = conn.execute(f"UPDATE outbox SET {assignments} WHERE {where}", args)
        if cursor.rowcount == 0:
            raise LeaseLost(f"outbox row {delivery_id} is no longer pending under this claim")

    def _migrate(self) -> None:
        """Create or upgrade the schema; refuse a database from a newer version."""
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
            for script in MIGRATIONS[version : self.SCHEMA_VERSION]:
                # executescript() would COMMIT our transaction; run the statements one by one.
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(self.SCHEMA_VERSION),),
            )

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

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        # The one translation to the error tree: nothing but StoreError leaves the store, so a
        # bad value in one row is a skipped write, never a crashed delivery batch.
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot {action} state database {self._path}: {_reason(exc)}"
            ) from exc
        except (TypeError, ValueError, KeyError) as exc:
            raise StoreError(f"cannot {action} state database {self._path}: {exc}") from exc


def _prepare_file(path: Path) -> None:
    """Create the parent directory (0700) and the file (0600) if missing; check it is writable."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
            path.parent.chmod(0o700)  # mkdir's mode is filtered by the umask
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = os.open(path, os.O_RDWR)  # fails on a directory or a read-only file
        else:
            os.fchmod(fd, 0o600)  # os.open's mode is filtered by the umask too
        os.close(fd)
    except OSError as exc:
        raise StoreError(f"cannot open state database {path}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(text.split()) or type(exc).__name__
