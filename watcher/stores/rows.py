"""The SQLite schema and the rows of the state file: migrations, and pure conversions
between rows and the watcher's values (snapshots, events, deliveries)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
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
    # 4: alerting. When each job entered its state, last moved and was last polled; open
    # conditions (the API-down and unreadable flags become conditions); the next reminder per
    # channel and subject; silences; an event's kind; a delivery's silence.
    """
    ALTER TABLE jobs ADD COLUMN state_since TEXT;
    ALTER TABLE jobs ADD COLUMN moved_at TEXT;
    ALTER TABLE jobs ADD COLUMN polled_at TEXT;
    ALTER TABLE jobs ADD COLUMN entered INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN kind TEXT NOT NULL DEFAULT '';
    CREATE INDEX events_time ON events (observed_at);
    CREATE TABLE conditions (
        subject   TEXT NOT NULL,
        name      TEXT NOT NULL,
        opened_at TEXT NOT NULL,
        detail    TEXT NOT NULL,
        PRIMARY KEY (subject, name)
    );
    INSERT INTO conditions (subject, name, opened_at, detail)
        SELECT 'api', 'api_down', strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000+00:00',
            'no answer' FROM meta WHERE key = 'flag:api_down_announced' AND value = '1';
    INSERT INTO conditions (subject, name, opened_at, detail)
        SELECT substr(key, 17), 'unreadable',
            strftime('%Y-%m-%dT%H:%M:%S', 'now') || '.000000+00:00', value
        FROM meta WHERE key GLOB 'flag:unreadable:*' AND typeof(value) = 'text' AND value != '';
    DELETE FROM meta WHERE key = 'flag:api_down_announced' OR key GLOB 'flag:unreadable:*';
    CREATE TABLE reminders (
        channel TEXT NOT NULL,
        subject TEXT NOT NULL,
        next_at TEXT NOT NULL,
        PRIMARY KEY (channel, subject)
    );
    CREATE TABLE silences (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        job        TEXT NOT NULL,
        kind       TEXT NOT NULL DEFAULT '',
        state      TEXT NOT NULL DEFAULT '',
        channel    TEXT NOT NULL DEFAULT '',
        comment    TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        ends_at    TEXT NOT NULL,
        expired_at TEXT,
        ended      INTEGER NOT NULL DEFAULT 0
    );
    ALTER TABLE outbox ADD COLUMN silence_id INTEGER;
    """,
    # 5: high availability. The leadership lease (holder, expiry, fencing epoch) and the
    # replicas' heartbeats; one SQLite file has one daemon, which always holds the lease.
    """
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        epoch      INTEGER NOT NULL,
        expires_at TEXT NOT NULL,
        renewed_at TEXT NOT NULL
    );
    CREATE TABLE replicas (
        holder     TEXT PRIMARY KEY,
        role       TEXT NOT NULL,
        started_at TEXT NOT NULL,
        seen_at    TEXT NOT NULL
    );
    """,
    # 6: a silence may match the job's owner (a glob on who created it); "" for everyone.
    """
    ALTER TABLE silences ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    """,
)

OUTBOX_COLUMNS = (
    "id, job_key, channel, url_key, url_display, title, body, old_state, new_state, "
    "created_at, attempts, next_attempt_at, last_error, status, claim, event_id"
)
#: No retry is ever scheduled further ahead than `retry_max_delay` (at most a day), nor a claim
#: held longer than a send timeout: a time past now + this was not written by a watcher, and
#: counts as due (so a row from the year 9999 cannot block its job's later messages).
HORIZON = timedelta(days=2)
#: The most attempts a row can plausibly have; more is a corrupt count, not a history.
MAX_ATTEMPTS = 2**31
#: The largest JSON cell decoded (a snapshot, an event's fields): generous, only against absurd.
MAX_JSON_CHARS = 16 * 2**20


class RowError(ValueError):
    """A stored row the store cannot use; the one-line message names the column and value."""


def well_formed(column: str) -> str:
    """SQL: `column` holds a timestamp as `ts()` writes it (so text order is time order)."""
    digits = "[0-9]"
    pattern = f"{digits * 4}-{digits * 2}-{digits * 2}T{digits * 2}:{digits * 2}:{digits * 2}"
    return f"(typeof({column}) = 'text' AND {column} GLOB '{pattern}.{digits * 6}+00:00')"


# A pending row is claimable when due, not under another live claim, and the oldest pending
# row of its (target, job): one job's messages reach a target in the order they happened.
def prefixed(prefix: str) -> str:
    return ", ".join(prefix + column.strip() for column in OUTBOX_COLUMNS.split(","))


# An outbox row with its event (NULLs for rows written before events existed).
SELECT_DELIVERIES = (
    f"SELECT {prefixed('o.')}, e.job_key, e.old_state, e.new_state, e.observed_at, e.notice, "
    "e.fields, e.kind FROM outbox AS o LEFT JOIN events AS e ON e.id = o.event_id"
)


# Parameters: now, now + HORIZON (twice), then the busy targets. A time that is not one (text
# garbage, a number, a blob) or is past the horizon counts as due and as no claim: the row is
# then read, and sent or quarantined, instead of blocking its job's later rows for ever.
CLAIMABLE = (
    "o.status = 'pending' "
    f"AND (o.next_attempt_at <= ? OR o.next_attempt_at > ? OR NOT {well_formed('o.next_attempt_at')}) "
    f"AND (o.claimed_until < ? OR o.claimed_until > ? OR NOT {well_formed('o.claimed_until')}) "
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
    f.name
    for f in dataclasses.fields(OutboxEntry)
    if f.name not in ("created_at", "event", "not_before")
)


def event_row(event_id: object, row: Sequence[Any]) -> Event | None:
    """The event columns of a delivery row; None for a row written before events existed.

    Raises:
        RowError: the row names an event that is missing or cannot be read.
    """
    job_key, old_state, new_state, observed_at, notice, fields, kind = row
    if event_id is None:
        return None
    if job_key is None:
        raise RowError(f"outbox.event_id: {shown(event_id)} names no event")
    if notice not in (0, 1) or isinstance(notice, float):
        raise RowError(f"events.notice: {shown(notice)} is not 0 or 1")
    decoded = _json("events.fields", fields)
    return Event(
        job_key=text("events.job_key", job_key),
        old_state=text("events.old_state", old_state),
        new_state=text("events.new_state", new_state),
        observed_at=when("events.observed_at", observed_at),
        fields=tuple(sorted((str(k), str(v)) for k, v in decoded.items())),
        notice=bool(notice),
        kind=text("events.kind", kind),
    )


def encode_snapshot(snapshot: JobSnapshot) -> str:
    data: dict[str, str] = {"kind": str(snapshot.ref.kind), "job_id": snapshot.ref.job_id}
    data.update((name, getattr(snapshot, name)) for name in _SNAPSHOT_FIELDS)
    return json.dumps(data, ensure_ascii=False, sort_keys=True)


def decode_snapshot(job_key: object, cell: object) -> JobSnapshot:
    """The snapshot in a `jobs` row.

    Raises:
        RowError: the row cannot be trusted (not JSON, a field of the wrong type, another key).
    """
    data = _json("jobs.snapshot", cell)
    bad = next((k for k, v in data.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise RowError(f"jobs.snapshot: {shown(bad)} is not text")
    try:
        ref = JobRef(JobKind(data["kind"]), data["job_id"])
        # Unknown keys are ignored and missing optional ones take their defaults.
        fields = {name: data[name] for name in _SNAPSHOT_FIELDS if name in data}
        snapshot = JobSnapshot(ref=ref, **fields)
    except (ValueError, KeyError, TypeError) as exc:
        raise RowError(f"jobs.snapshot: {shown(str(exc))}") from None
    if ref.key != job_key:
        raise RowError(f"jobs.snapshot: names {shown(ref.key)}, not its row's job")
    return snapshot


def _text_event(row: Sequence[Any]) -> Event:
    """A row written before events existed keeps its text in its own columns: it is sent
    as that text, like a notice."""
    job_key, _, _, _, title, body, old_state, new_state, created_at = row
    return Event(
        job_key=text("outbox.job_key", job_key),
        old_state=text("outbox.old_state", old_state),
        new_state=text("outbox.new_state", new_state),
        observed_at=when("outbox.created_at", created_at),
        fields=(("title", text("outbox.title", title)), ("body", text("outbox.body", body))),
        notice=True,
    )


def delivery_row(row: tuple[Any, ...]) -> Delivery:
    """A delivery from a `SELECT_DELIVERIES` row, every column checked.

    Raises:
        RowError: a column does not hold what the watcher writes there.
    """
    (id_, job_key, channel, url_key, url_display, _, _, old_state, new_state) = row[:9]
    created_at, attempts, next_attempt_at, last_error, status, claim, event_id = row[9:16]
    entry = OutboxEntry(
        job_key=text("outbox.job_key", job_key),
        channel=text("outbox.channel", channel),
        url_key=text("outbox.url_key", url_key),
        url_display=text("outbox.url_display", url_display),
        old_state=text("outbox.old_state", old_state),
        new_state=text("outbox.new_state", new_state),
        created_at=when("outbox.created_at", created_at),
        event=event_row(event_id, row[16:]) or _text_event(row[1:10]),
    )
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise RowError(f"outbox.attempts: {shown(attempts)} is not a count")
    if not 0 <= attempts <= MAX_ATTEMPTS:
        raise RowError(f"outbox.attempts: {shown(attempts)} is out of range")
    return Delivery(
        id=id_,
        entry=entry,
        attempts=attempts,
        next_attempt_at=when("outbox.next_attempt_at", next_attempt_at),
        last_error=text("outbox.last_error", last_error),
        status=text("outbox.status", status),
        claim=text("outbox.claim", claim) or None,
    )


def text(column: str, value: object) -> str:
    """`value` if it is text; RowError naming `column` otherwise."""
    if not isinstance(value, str):
        raise RowError(f"{column}: {shown(value)} is not text")
    return value


def when(column: str, value: object) -> datetime:
    """The aware datetime in `value`: text as `ts()` writes it (SQLite), or an aware datetime
    (a PostgreSQL `timestamptz`); RowError naming `column` otherwise (a naive one too)."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise RowError(f"{column}: {shown(value.isoformat())} has no time zone")
        return value.astimezone(UTC)
    # The length check first: a megabyte of text is not worth parsing.
    if not isinstance(value, str) or len(value) > 40:
        raise RowError(f"{column}: {shown(value)} is not a timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise RowError(f"{column}: {shown(value)} is not a timestamp") from None
    if parsed.tzinfo is None:
        raise RowError(f"{column}: {shown(value)} has no time zone")
    return parsed


def _json(column: str, cell: object) -> dict[str, Any]:
    if not isinstance(cell, str):
        raise RowError(f"{column}: {shown(cell)} is not text")
    if len(cell) > MAX_JSON_CHARS:
        raise RowError(f"{column}: {len(cell)} characters, more than {MAX_JSON_CHARS}")
    try:
        data = json.loads(cell)
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        raise RowError(f"{column}: {shown(cell)} is not JSON") from None
    if not isinstance(data, dict):
        raise RowError(f"{column}: {shown(cell)} is not a JSON object")
    return data


def shown(value: object) -> str:
    """A stored value as a log line may show it: short, and never raw bytes."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"a {len(value)}-byte blob"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def decode_deliveries(
    rows: Iterable[tuple[Any, ...]],
) -> tuple[list[Delivery], list[tuple[int, str]]]:
    """The rows that decode, and (id, reason) for each one that does not."""
    good: list[Delivery] = []
    bad: list[tuple[int, str]] = []
    for row in rows:
        try:
            good.append(delivery_row(row))
        except RowError as exc:
            bad.append((row[0], str(exc)))
    return good, bad


def sql_time(cell: object) -> datetime | None:
    """A time computed in SQL (a MIN over well-formed cells), or None when there is none."""
    try:
        return None if cell is None else datetime.fromisoformat(str(cell))
    except ValueError:  # well-formed but impossible (February 31st): as if absent
        return None
