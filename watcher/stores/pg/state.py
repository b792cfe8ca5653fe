"""Jobs, flags and alert state on PostgreSQL: the last snapshots, the jobs' times, open
conditions and reminders, written by `record` in one transaction with the events and outbox
rows of the poll (the SQLite reference: `stores.sqlite.StateStore.record`, `stores.alerts`).

Each kind of row goes in one batched statement (`executemany`, pipelined by psycopg), so a
chunk of a cycle costs a handful of round trips however many jobs it holds. A row that does
not decode costs only itself and is told to `on_unreadable`, as on SQLite.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from watcher.core.conditions import Condition, ConditionName, Since
from watcher.core.delivery import Event, OutboxEntry
from watcher.core.errors import StoreError
from watcher.core.model import JobRef, JobSnapshot
from watcher.stores.pg.base import Connection, PgTables, clean
from watcher.stores.rows import RowError, decode_snapshot, encode_snapshot, shown, text, when

#: A reminder time to write, or None to drop the reminder (its subject is resolved).
ReminderTimes = Mapping[tuple[str, str], datetime | None]
T = TypeVar("T")

#: Every field of a snapshot but its ref, and of an entry but its times and event, is text.
_SNAPSHOT_TEXT = tuple(f.name for f in dataclasses.fields(JobSnapshot) if f.name != "ref")
_ENTRY_TEXT = tuple(
    f.name
    for f in dataclasses.fields(OutboxEntry)
    if f.name not in ("created_at", "event", "not_before")
)

_UPSERT_FLAG = (
    "INSERT INTO meta (key, value) VALUES (%s, %s) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_UPSERT_JOB = (
    "INSERT INTO jobs (job_key, snapshot, updated_at, polled_at) VALUES (%s, %s::jsonb, %s, %s) "
    "ON CONFLICT (job_key) DO UPDATE SET snapshot = excluded.snapshot, "
    "updated_at = excluded.updated_at, polled_at = excluded.polled_at"
)
_INSERT_EVENT = (
    "INSERT INTO events (job_key, old_state, new_state, observed_at, notice, fields, kind) "
    "VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s) RETURNING id"
)
_INSERT_ENTRY = (
    "INSERT INTO outbox (job_key, channel, url_key, url_display, title, body, old_state, "
    "new_state, created_at, status, attempts, next_attempt_at, last_error, event_id) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'pending', 0, %s, '', %s)"
)


class PgState(PgTables):
    """last_all, record, flags, forget, since_all, polled_all, open_conditions, reminder_times."""

    # -- jobs -------------------------------------------------------------------------------

    async def last(self, ref: JobRef) -> JobSnapshot | None:
        """The job's last recorded snapshot, or None if never seen (or its row is unreadable)."""
        async with self._conn() as conn:
            cursor = await conn.execute(
                "SELECT snapshot::text FROM jobs WHERE job_key = %s", (clean(ref.key),)
            )
            row = await cursor.fetchone()
        return None if row is None else self._snapshot(clean(ref.key), row[0])

    async def last_all(self) -> dict[str, JobSnapshot]:
        """Every job's last recorded snapshot keyed by `JobRef.key`; unreadable rows are
        skipped (and told to `on_unreadable`)."""
        async with self._conn() as conn:
            cursor = await conn.execute("SELECT job_key, snapshot::text FROM jobs")
            rows = await cursor.fetchall()
        decoded = ((key, self._snapshot(key, cell)) for key, cell in rows)
        return {key: snapshot for key, snapshot in decoded if snapshot is not None}

    def _snapshot(self, key: object, cell: object) -> JobSnapshot | None:
        try:
            return decode_snapshot(key, cell)
        except RowError as exc:
            self._on_unreadable(f"jobs {shown(key)}", str(exc))
            return None

    async def record(
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
        """Save snapshots as their jobs' last seen state and queue notifications, atomically
        (see `stores.sqlite.StateStore.record`, whose contract this is).

        Raises:
            Fenced: the store is fenced (`fence`) and the poller lease has moved on.
            StoreError: the database cannot be written, or a value cannot be stored.
        """
        alerts = (since, polled, opened, resolved, reminders)
        if not snapshots and not entries and not flags and not events and not any(alerts):
            return
        # Every parameter is built (and checked) before the transaction: a bad value is
        # refused whole, without a round trip.
        with self._values():
            every_event = list(dict.fromkeys([*events, *(e.event for e in entries if e.event)]))
            aware(now)
            flag_rows = [
                (clean(f"flag:{key}"), clean(value)) for key, value in (flags or {}).items()
            ]
            job_rows = [(*_job_key_and_json(s), now, now) for s in snapshots]
            since_rows = [
                (aware(s.state), aware(s.moved), bool(s.entered), clean(key))
                for key, s in (since or {}).items()
            ]
            polled_rows = [(now, clean(key)) for key in polled]
            resolved_rows = [(clean(c.subject), clean(str(c.name))) for c in resolved]
            opened_rows = [
                (clean(c.subject), clean(str(c.name)), aware(c.opened_at), clean(c.detail))
                for c in opened
            ]
            dropped = [
                (clean(ch), clean(sub)) for (ch, sub), at in (reminders or {}).items() if at is None
            ]
            reminded = [
                (clean(ch), clean(sub), aware(at))
                for (ch, sub), at in (reminders or {}).items()
                if at is not None
            ]
            event_rows = [_event_params(event) for event in every_event]
            entry_rows = [_entry_params(entry) for entry in entries]
        async with self._tx() as conn:
            await self._check_fence(conn)
            await _many(conn, _UPSERT_FLAG, flag_rows)
            await _many(conn, _UPSERT_JOB, job_rows)
            await _many(
                conn,
                "UPDATE jobs SET state_since = %s, moved_at = %s, entered = %s WHERE job_key = %s",
                since_rows,
            )
            await _many(conn, "UPDATE jobs SET polled_at = %s WHERE job_key = %s", polled_rows)
            await _many(
                conn, "DELETE FROM conditions WHERE subject = %s AND name = %s", resolved_rows
            )
            await _many(
                conn,
                "INSERT INTO conditions (subject, name, opened_at, detail) "
                "VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (subject, name) DO UPDATE SET detail = excluded.detail",
                opened_rows,
            )
            await _many(conn, "DELETE FROM reminders WHERE channel = %s AND subject = %s", dropped)
            await _many(
                conn,
                "INSERT INTO reminders (channel, subject, next_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (channel, subject) DO UPDATE SET next_at = excluded.next_at",
                reminded,
            )
            ids = dict(zip(every_event, await _inserted_ids(conn, event_rows), strict=True))
            await _many(
                conn,
                _INSERT_ENTRY,
                [
                    (*row, ids[entry.event] if entry.event else None)
                    for row, entry in zip(entry_rows, entries, strict=True)
                ],
            )

    # -- flags ------------------------------------------------------------------------------

    async def flag(self, key: str) -> str | None:
        """A value saved with `record(flags=...)`, or None."""
        async with self._conn() as conn:
            cursor = await conn.execute(
                "SELECT value FROM meta WHERE key = %s", (clean(f"flag:{key}"),)
            )
            row = await cursor.fetchone()
        return None if row is None else self._flag_value(key, row[0])

    async def flags(self, prefix: str) -> dict[str, str]:
        """Every flag whose key starts with `prefix`, keyed by the rest of the key."""
        start = clean(f"flag:{prefix}")
        async with self._conn() as conn:
            # starts_with, not LIKE (a prefix may hold `%` or `_`) nor a range (text order is
            # the collation's, not the characters').
            cursor = await conn.execute(
                "SELECT key, value FROM meta WHERE starts_with(key, %s)", (start,)
            )
            rows = await cursor.fetchall()
        found = ((str(key)[len(start) :], value) for key, value in rows)
        return {
            name: value
            for name, cell in found
            if (value := self._flag_value(prefix + name, cell)) is not None
        }

    def _flag_value(self, key: str, value: object) -> str | None:
        if isinstance(value, str):
            return value
        self._on_unreadable(
            f"meta {shown('flag:' + key)}", f"meta.value: {shown(value)} is not text"
        )
        return None

    async def forget(self, keys: Iterable[str]) -> None:
        """Drop the last state of jobs no longer watched; their outbox rows stay.

        Raises:
            Fenced: the store is fenced and the poller lease has moved on.
        """
        with self._values():
            dropped = [clean(key) for key in keys]
        if not dropped:
            return
        async with self._tx() as conn:
            await self._check_fence(conn)
            await conn.execute("DELETE FROM jobs WHERE job_key = ANY(%s::text[])", (dropped,))

    # -- alert state ------------------------------------------------------------------------

    async def since_all(self, *, job: str | None = None) -> dict[str, Since]:
        """When each job (or only the one keyed `job`) entered its state and last moved."""
        rows = await self._rows(
            "SELECT job_key, state_since, moved_at, entered FROM jobs "
            "WHERE state_since IS NOT NULL AND (%(job)s::text IS NULL OR job_key = %(job)s)",
            {"job": None if job is None else clean(job)},
        )
        return dict(
            self._decoded(
                rows,
                lambda r: (
                    str(r[0]),
                    Since(
                        when("jobs.state_since", r[1]), when("jobs.moved_at", r[2]), r[3] is True
                    ),
                ),
                lambda r: f"jobs {shown(r[0])}",
            )
        )

    async def polled_all(self, *, job: str | None = None) -> dict[str, datetime]:
        """When each job (or only the one keyed `job`) was last polled, as far as it was
        written."""
        rows = await self._rows(
            "SELECT job_key, polled_at FROM jobs "
            "WHERE polled_at IS NOT NULL AND (%(job)s::text IS NULL OR job_key = %(job)s)",
            {"job": None if job is None else clean(job)},
        )
        return dict(
            self._decoded(
                rows,
                lambda r: (str(r[0]), when("jobs.polled_at", r[1])),
                lambda r: f"jobs {shown(r[0])}",
            )
        )

    async def open_conditions(self) -> list[Condition]:
        """Every open condition, oldest first."""
        rows = await self._rows(
            "SELECT subject, name, opened_at, detail FROM conditions ORDER BY opened_at"
        )
        return list(
            self._decoded(
                rows,
                lambda r: Condition(
                    text("conditions.subject", r[0]),
                    ConditionName(text("conditions.name", r[1])),
                    when("conditions.opened_at", r[2]),
                    text("conditions.detail", r[3]),
                ),
                lambda r: f"conditions {shown(r[0])}",
            )
        )

    async def reminder_times(self) -> dict[tuple[str, str], datetime]:
        """When each (channel, subject) is reminded next."""
        rows = await self._rows("SELECT channel, subject, next_at FROM reminders")
        return dict(
            self._decoded(
                rows,
                lambda r: (
                    (text("reminders.channel", r[0]), text("reminders.subject", r[1])),
                    when("reminders.next_at", r[2]),
                ),
                lambda r: f"reminders {shown(r[1])}",
            )
        )

    # -- helpers ----------------------------------------------------------------------------

    async def _rows(
        self, query: str, params: Mapping[str, object] | None = None
    ) -> list[tuple[Any, ...]]:
        async with self._conn() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

    def _decoded(
        self,
        rows: Iterable[tuple[Any, ...]],
        decode: Callable[[tuple[Any, ...]], T],
        where: Callable[[tuple[Any, ...]], str],
    ) -> Iterator[T]:
        # A row that does not decode costs only itself, and is told.
        for row in rows:
            try:
                yield decode(row)
            except (RowError, ValueError) as exc:
                self._on_unreadable(where(row), str(exc))

    @contextmanager
    def _values(self) -> Iterator[None]:
        # As on SQLite: a value the store cannot hold is a StoreError, never a crash.
        try:
            yield
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise StoreError(f"cannot write state database {self.display}: {exc}") from None


def aware(value: datetime) -> datetime:
    """`value`, which must be an aware datetime (the store keeps instants, not wall times)."""
    if not isinstance(value, datetime):
        raise TypeError(f"a datetime is needed, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the store needs aware ones")
    return value


def _job_key_and_json(snapshot: JobSnapshot) -> tuple[str, str]:
    # NUL cleaned out of every field first: JSON would escape it as \u0000, which jsonb
    # refuses too. The key is the cleaned snapshot's, so it still names its own row.
    for name in _SNAPSHOT_TEXT:
        if not isinstance(getattr(snapshot, name), str):
            raise TypeError(f"JobSnapshot.{name} must be str")
    if not isinstance(snapshot.ref.job_id, str):
        raise TypeError("JobRef.job_id must be str")
    cleaned = dataclasses.replace(
        snapshot,
        ref=dataclasses.replace(snapshot.ref, job_id=clean(snapshot.ref.job_id)),
        **{name: clean(getattr(snapshot, name)) for name in _SNAPSHOT_TEXT},
    )
    return cleaned.ref.key, encode_snapshot(cleaned)


def _event_params(event: Event) -> tuple[object, ...]:
    fields = dict(event.fields)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items()):
        raise TypeError("Event.fields must map names to strings")
    for name in ("job_key", "old_state", "new_state", "kind"):
        if not isinstance(getattr(event, name), str):
            raise TypeError(f"Event.{name} must be str")
    cleaned = {clean(k): clean(v) for k, v in fields.items()}
    return (
        clean(event.job_key),
        clean(event.old_state),
        clean(event.new_state),
        aware(event.observed_at),
        bool(event.notice),
        json.dumps(cleaned, ensure_ascii=False, sort_keys=True),
        clean(event.kind),
    )


def _entry_params(entry: OutboxEntry) -> tuple[object, ...]:
    texts = []
    for name in _ENTRY_TEXT:
        value = getattr(entry, name)
        if not isinstance(value, str):
            raise TypeError(f"OutboxEntry.{name} must be str, not {type(value).__name__}")
        texts.append(clean(value))
    created_at = aware(entry.created_at)
    due = aware(entry.not_before) if entry.not_before is not None else created_at
    return (*texts, created_at, due)


async def _many(conn: Connection, query: str, rows: Sequence[tuple[object, ...]]) -> None:
    # One pipelined batch; nothing at all for no rows.
    if rows:
        async with conn.cursor() as cursor:
            await cursor.executemany(query, rows)


async def _inserted_ids(conn: Connection, rows: Sequence[tuple[object, ...]]) -> list[int]:
    """Insert the events, one batch, and return their ids in order."""
    if not rows:
        return []
    ids: list[int] = []
    async with conn.cursor() as cursor:
        await cursor.executemany(_INSERT_EVENT, rows, returning=True)
        while True:
            row = await cursor.fetchone()
            if row is not None:
                ids.append(int(row[0]))
            if not cursor.nextset():
                break
    return ids
