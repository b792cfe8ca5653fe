"""The SQLite schema and the rows of the state file: migrations, and pure conversions
between rows and the watcher's values (snapshots, events, deliveries)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from watcher.core.delivery import Delivery, Event, OutboxEntry
from watcher.core.model import JobKind, JobRef, JobSnapshot

# Each entry brings the schema from version i to i + 1; `meta` itself exists before any of them.
MIGRATIONS: tuple[str, ...] = (
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

OUTBOX_COLUMNS = (
    "id, job_key, channel, url_key, url_display, title, body, old_state, new_state, "
    "created_at, attempts, next_attempt_at, last_error, status, claim"
)


# A pending row is claimable when due, not under another live claim, and the oldest pending
# row of its (target, job): one job's messages reach a target in the order they happened.
def prefixed(prefix: str) -> str:
    return ", ".join(prefix + column.strip() for column in OUTBOX_COLUMNS.split(","))


# An outbox row with its event (NULLs for rows written before events existed).
SELECT_DELIVERIES = (
    f"SELECT {prefixed('o.')}, e.job_key, e.old_state, e.new_state, e.observed_at, e.notice, "
    "e.fields FROM outbox AS o LEFT JOIN events AS e ON e.id = o.event_id"
)


CLAIMABLE = (
    "o.status = 'pending' AND o.next_attempt_at <= ? AND o.claimed_until < ? "
    "AND NOT EXISTS (SELECT 1 FROM outbox AS e WHERE e.url_key = o.url_key "
    "AND e.job_key = o.job_key AND e.status = 'pending' AND e.id < o.id)"
)


def ts(value: datetime) -> str:
    """A datetime as ISO 8601 UTC text of fixed width, so text order is time order."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the store needs aware ones")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


_SNAPSHOT_FIELDS = tuple(f.name for f in dataclasses.fields(JobSnapshot) if f.name != "ref")
_ENTRY_TEXT_FIELDS = tuple(
    f.name for f in dataclasses.fields(OutboxEntry) if f.name not in ("created_at", "event")
)


def event_params(event: Event) -> tuple[object, ...]:
    fields = dict(event.fields)
    if not all(isinstance(v, str) for v in fields.values()):
        raise TypeError("Event.fields must map names to strings")
    return (
        event.job_key,
        event.old_state,
        event.new_state,
        ts(event.observed_at),
        int(event.notice),
        json.dumps(fields, ensure_ascii=False, sort_keys=True),
    )


def event_row(row: Sequence[Any]) -> Event | None:
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


def encode_snapshot(snapshot: JobSnapshot) -> str:
    data: dict[str, str] = {"kind": str(snapshot.ref.kind), "job_id": snapshot.ref.job_id}
    data.update((name, getattr(snapshot, name)) for name in _SNAPSHOT_FIELDS)
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def decode_snapshot(job_key: str, text: str) -> JobSnapshot | None:
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


def entry_params(entry: OutboxEntry) -> tuple[str, ...]:
    texts = tuple(getattr(entry, name) for name in _ENTRY_TEXT_FIELDS)
    for name, value in zip(_ENTRY_TEXT_FIELDS, texts, strict=True):
        # sqlite3 would store an int or bytes as is and hand back the wrong type later.
        if not isinstance(value, str):
            raise TypeError(f"OutboxEntry.{name} must be str, not {type(value).__name__}")
    created_at = ts(entry.created_at)
    return (*texts, created_at, created_at)


def delivery_row(row: tuple[Any, ...]) -> Delivery:
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
        event=event_row(row[15:]),
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
