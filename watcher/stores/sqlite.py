"""The watcher's durable state: each job's last seen snapshot and an outbox of notifications.

A poll writes a job's new snapshot and the notifications its transition causes in ONE SQLite
transaction, before anything is sent; the notifier then works through the outbox and marks each
row delivered, retried later, or dead. So a crash can repeat a send that was in flight but never
loses one, and a restart never repeats a delivered notification.

Only this module imports `sqlite3`. It is synchronous: the daemon calls it through
`anyio.to_thread.run_sync` behind a `CapacityLimiter(1)`. Every `sqlite3` error leaves it as a
one-line `StoreError` naming the database path.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar

import anyio
import anyio.to_thread

from watcher.core.delivery import Delivery, Event, OutboxEntry
from watcher.core.errors import LeaseLost, StateLocked, StoreError
from watcher.core.model import JobKind, JobRef, JobSnapshot

T = TypeVar("T")

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"

# Each entry brings the schema from version i to i + 1; `meta` itself exists before any of them.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        job_key    TEXT PRIMARY KEY,
        snapshot   TEXT NOT NULL,
        updated_at TEXT
    );
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        job_key         TEXT NOT NULL,
        channel         TEXT NOT NULL,
        url_key         TEXT NOT NULL,
        url_display     TEXT NOT NULL,
        title           TEXT NOT NULL,
        body            TEXT NOT NULL,
        old_state       TEXT NOT NULL,
        new_state       TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error      TEXT NOT NULL DEFAULT '',
        delivered_at    TEXT
    );
    CREATE INDEX outbox_status_next ON outbox (status, next_attempt_at);
    """,
    # 2: claims with a lease, so a dispatcher owns the rows it sends; and an index for the
    # per-target, per-job ordering of deliveries.
    """
    ALTER TABLE outbox ADD COLUMN claim TEXT NOT NULL DEFAULT '';
    ALTER TABLE outbox ADD COLUMN claimed_until TEXT NOT NULL DEFAULT '';
    CREATE INDEX outbox_target_job ON outbox (url_key, job_key, status, id);
    """,
    # 3: events, one row per transition or notice (the history); an outbox row points at its
    # event and is rendered from it when sent. Rows from before keep their stored text.
    """
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        job_key     TEXT NOT NULL,
        old_state   TEXT NOT NULL,
        new_state   TEXT NOT NULL,
        observed_at TEXT NOT NULL,
        notice      INTEGER NOT NULL DEFAULT 0,
        fields      TEXT NOT NULL
    );
    CREATE INDEX events_job ON events (job_key, id);
    ALTER TABLE outbox ADD COLUMN event_id INTEGER REFERENCES events (id);
    """,
)

_OUTBOX_COLUMNS = (
    "id, job_key, channel, url_key, url_display, title, body, old_state, new_state, "
    "created_at, attempts, next_attempt_at, last_error, status, claim"
)


# A pending row is claimable when due, not under another live claim, and the oldest pending
# row of its (target, job): one job's messages reach a target in the order they happened.
def _prefixed(prefix: str) -> str:
    return ", ".join(prefix + column.strip() for column in _OUTBOX_COLUMNS.split(","))


# An outbox row with its event (NULLs for rows written before events existed).
_SELECT_DELIVERIES = (
    f"SELECT {_prefixed('o.')}, e.job_key, e.old_state, e.new_state, e.observed_at, e.notice, "
    "e.fields FROM outbox AS o LEFT JOIN events AS e ON e.id = o.event_id"
)


_CLAIMABLE = (
    "o.status = 'pending' AND o.next_attempt_at <= ? AND o.claimed_until < ? "
    "AND NOT EXISTS (SELECT 1 FROM outbox AS e WHERE e.url_key = o.url_key "
    "AND e.job_key = o.job_key AND e.status = 'pending' AND e.id < o.id)"
)


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
        return _decode_snapshot(ref.key, row[0])

    def last_all(self) -> dict[str, JobSnapshot]:
        """Every job's last recorded snapshot keyed by `JobRef.key`; unreadable rows are skipped."""
        with self._lock, self._errors("read"):
            rows = self._conn.execute("SELECT job_key, snapshot FROM jobs").fetchall()
        decoded = ((key, _decode_snapshot(key, text)) for key, text in rows)
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
        updated_at = _ts(now)
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
                ((s.ref.key, _encode_snapshot(s), updated_at) for s in snapshots),
            )
            ids = {
                event: conn.execute(
                    "INSERT INTO events (job_key, old_state, new_state, observed_at, notice, "
                    "fields) VALUES (?, ?, ?, ?, ?, ?)",
                    _event_params(event),
                ).lastrowid
                for event in every_event
            }
            conn.executemany(
                "INSERT INTO outbox (job_key, channel, url_key, url_display, title, body, "
                "old_state, new_state, created_at, status, attempts, next_attempt_at, "
                f"last_error, event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '{PENDING}', 0, ?, "
                "'', ?)",
                ((*_entry_params(e), ids[e.event] if e.event else None) for e in entries),
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
            (PENDING, _ts(now), limit),
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
        """Claim the claimable deliveries (see `_CLAIMABLE`) of targets not in `busy` until
        `now + lease`, oldest first; their marks must then name the claim (`holder`)."""
        skip = f" AND o.url_key NOT IN ({', '.join('?' for _ in busy)})" if busy else ""
        query = f"{_SELECT_DELIVERIES} WHERE {_CLAIMABLE}{skip} ORDER BY o.id LIMIT ?"
        stamp = _ts(now)
        with self._write("claim in") as conn:
            found = conn.execute(query, (stamp, stamp, *busy, limit)).fetchall()
            conn.executemany(
                "UPDATE outbox SET claim = ?, claimed_until = ? WHERE id = ?",
                ((holder, _ts(now + lease), row[0]) for row in found),
            )
        return [dataclasses.replace(_delivery(row), claim=holder) for row in found]

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
            (DELIVERED, _ts(now)),
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
            (_ts(next_attempt_at), error),
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
            (DEAD, _ts(now), error),
            claim=claim,
        )

    def prune(self, *, delivered_before: datetime) -> int:
        """Delete deliveries delivered before `delivered_before`; returns how many."""
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM outbox WHERE status = ? AND delivered_at < ?",
                (DELIVERED, _ts(delivered_before)),
            )
        return cursor.rowcount

    # -- helpers ----------------------------------------------------------------------------

    def _deliveries(self, where: str, params: tuple[Any, ...]) -> list[Delivery]:
        with self._lock, self._errors("read"):
            rows = self._conn.execute(f"{_SELECT_DELIVERIES} {where}", params).fetchall()
        return [_delivery(row) for row in rows]

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
            for script in _MIGRATIONS[version : self.SCHEMA_VERSION]:
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


class AsyncStore:
    """The `StateRepo` and `Outbox` ports over a `StateStore`: each call runs in a worker
    thread, one at a time (one connection, one writer), so the event loop never blocks."""

    def __init__(self, store: StateStore) -> None:
        self.sync = store
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path) -> AsyncStore:
        """Open the database at `path` in a worker thread: connecting and migrating block,
        and the event loop must not. Close it with `store.sync.close()` (or `with store.sync`).
        """
        return cls(await anyio.to_thread.run_sync(StateStore.open, path))

    async def _run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(
            functools.partial(call, *args, **kwargs), limiter=self._limiter
        )

    async def last_all(self) -> dict[str, JobSnapshot]:
        """See `StateStore.last_all`."""
        return await self._run(self.sync.last_all)

    async def record(
        self,
        snapshots: Sequence[JobSnapshot],
        entries: Sequence[OutboxEntry],
        *,
        now: datetime,
        flags: Mapping[str, str] | None = None,
        events: Sequence[Event] = (),
    ) -> None:
        """See `StateStore.record`."""
        await self._run(self.sync.record, snapshots, entries, now=now, flags=flags, events=events)

    async def flag(self, key: str) -> str | None:
        """See `StateStore.flag`."""
        return await self._run(self.sync.flag, key)

    async def flags(self, prefix: str) -> dict[str, str]:
        """See `StateStore.flags`."""
        return await self._run(self.sync.flags, prefix)

    async def forget(self, keys: Sequence[str]) -> None:
        """See `StateStore.forget`."""
        await self._run(self.sync.forget, keys)

    async def claim(
        self,
        now: datetime,
        *,
        holder: str,
        lease: timedelta,
        busy: Collection[str] = (),
        limit: int = 100,
    ) -> list[Delivery]:
        """See `StateStore.claim`."""
        return await self._run(
            self.sync.claim, now, holder=holder, lease=lease, busy=tuple(busy), limit=limit
        )

    async def release_claims(self) -> int:
        """See `StateStore.release_claims`."""
        return await self._run(self.sync.release_claims)

    async def next_due_at(self) -> datetime | None:
        """See `StateStore.next_due_at`."""
        return await self._run(self.sync.next_due_at)

    async def outbox_stats(self) -> tuple[int, datetime | None]:
        """See `StateStore.outbox_stats`."""
        return await self._run(self.sync.outbox_stats)

    async def mark_delivered(
        self, delivery_id: int, *, now: datetime, claim: str | None = None
    ) -> None:
        """See `StateStore.mark_delivered`."""
        await self._run(self.sync.mark_delivered, delivery_id, now=now, claim=claim)

    async def mark_retry(
        self, delivery_id: int, *, next_attempt_at: datetime, error: str, claim: str | None = None
    ) -> None:
        """See `StateStore.mark_retry`."""
        await self._run(
            self.sync.mark_retry,
            delivery_id,
            next_attempt_at=next_attempt_at,
            error=error,
            claim=claim,
        )

    async def mark_dead(
        self, delivery_id: int, *, now: datetime, error: str, claim: str | None = None
    ) -> None:
        """See `StateStore.mark_dead`."""
        await self._run(self.sync.mark_dead, delivery_id, now=now, error=error, claim=claim)

    async def prune(self, *, delivered_before: datetime) -> int:
        """See `StateStore.prune`."""
        return await self._run(self.sync.prune, delivered_before=delivered_before)


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold `<path>.lock` for the block: one daemon per state file.

    An advisory `flock`, released by the kernel when the process dies however it dies, so a
    SIGKILL leaves no stale lock. The holder's pid is written into the file for the error
    message of the next one.

    Raises:
        StateLocked: another process holds it.
        StoreError: the lock file cannot be created.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot create lock file {lock_path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            msg = f"state file {path} is in use by another fireworks-watcher (pid {holder})"
            raise StateLocked(msg) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the lock


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


def _ts(value: datetime) -> str:
    """A datetime as ISO 8601 UTC text of fixed width, so text order is time order."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the store needs aware ones")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


_SNAPSHOT_FIELDS = tuple(f.name for f in dataclasses.fields(JobSnapshot) if f.name != "ref")
_ENTRY_TEXT_FIELDS = tuple(
    f.name for f in dataclasses.fields(OutboxEntry) if f.name not in ("created_at", "event")
)


def _event_params(event: Event) -> tuple[object, ...]:
    fields = dict(event.fields)
    if not all(isinstance(v, str) for v in fields.values()):
        raise TypeError("Event.fields must map names to strings")
    return (
        event.job_key,
        event.old_state,
        event.new_state,
        _ts(event.observed_at),
        int(event.notice),
        json.dumps(fields, ensure_ascii=False, sort_keys=True),
    )


def _event(row: Sequence[Any]) -> Event | None:
    """The event columns of a delivery row, or None for a row without one."""
    job_key, old_state, new_state, observed_at, notice, fields = row
    if job_key is None:
        return None
    decoded = json.loads(fields)
    return Event(
        job_key=job_key,
        old_state=old_state,
        new_state=new_state,
        observed_at=datetime.fromisoformat(observed_at),
        fields=tuple(sorted((str(k), str(v)) for k, v in decoded.items())),
        notice=bool(notice),
    )


def _encode_snapshot(snapshot: JobSnapshot) -> str:
    data: dict[str, str] = {"kind": str(snapshot.ref.kind), "job_id": snapshot.ref.job_id}
    data.update((name, getattr(snapshot, name)) for name in _SNAPSHOT_FIELDS)
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def _decode_snapshot(job_key: str, text: str) -> JobSnapshot | None:
    """The snapshot in a `jobs` row, or None when the row cannot be trusted."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return None
        ref = JobRef(JobKind(data["kind"]), data["job_id"])
        # Unknown keys are ignored and missing optional ones take their defaults.
        fields = {name: data[name] for name in _SNAPSHOT_FIELDS if name in data}
        snapshot = JobSnapshot(ref=ref, **fields)
    except (ValueError, KeyError, TypeError):
        return None
    return snapshot if ref.key == job_key else None


def _entry_params(entry: OutboxEntry) -> tuple[str, ...]:
    texts = tuple(getattr(entry, name) for name in _ENTRY_TEXT_FIELDS)
    for name, value in zip(_ENTRY_TEXT_FIELDS, texts, strict=True):
        # sqlite3 would store an int or bytes as is and hand back the wrong type later.
        if not isinstance(value, str):
            raise TypeError(f"OutboxEntry.{name} must be str, not {type(value).__name__}")
    created_at = _ts(entry.created_at)
    return (*texts, created_at, created_at)


def _delivery(row: tuple[Any, ...]) -> Delivery:
    (id_, job_key, channel, url_key, url_display, title, body, old_state, new_state) = row[:9]
    created_at, attempts, next_attempt_at, last_error, status, claim = row[9:15]
    entry = OutboxEntry(
        job_key=job_key,
        channel=channel,
        url_key=url_key,
        url_display=url_display,
        title=title,
        body=body,
        old_state=old_state,
        new_state=new_state,
        created_at=datetime.fromisoformat(created_at),
        event=_event(row[15:]),
    )
    return Delivery(
        id=id_,
        entry=entry,
        attempts=attempts,
        next_attempt_at=datetime.fromisoformat(next_attempt_at),
        last_error=last_error,
        status=status,
        claim=claim or None,
    )
