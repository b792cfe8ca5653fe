"""What the two backends share: the SQL of `record` and of the plain reads, written once with
`?` placeholders and `{text}`/`{jsonb}` casts (`Dialect.sql` makes PostgreSQL's of them), the
parameters of a `Decision` in either backend's types, and the mapping of read rows to values.

A row that does not decode costs only itself: it is told to `on_unreadable` and skipped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from watcher.core.conditions import Condition, ConditionName, Since
from watcher.core.decision import Decision
from watcher.core.delivery import Delivery, Event, OutboxEntry
from watcher.core.model import JobSnapshot
from watcher.ports import Claim, TargetClaim
from watcher.stores.rows import (
    RowError,
    decode_snapshot,
    encode_snapshot,
    event_row,
    shown,
    ts,
    when,
)
from watcher.stores.rows import text as text_cell
from watcher.stores.tables import OnUnreadable

T = TypeVar("T")

#: The most events one digest read returns (the newest when a period holds more).
MAX_DIGEST_EVENTS: Final = 10_000
#: The outbox status of a row recorded, never sent: a templated URL's field is empty for its
#: message (`OutboxEntry.skipped`, kept as its `last_error`). Settled: never claimed or retried.
SKIPPED: Final = "skipped"
#: A transition's fields are a few hundred characters; a larger cell is not read for a digest.
MAX_FIELDS_CHARS: Final = 64 * 1024

#: Every field of a snapshot but its ref, and of an entry but its times and event, is text.
_SNAPSHOT_TEXT = tuple(f.name for f in dataclasses.fields(JobSnapshot) if f.name != "ref")
_ENTRY_TEXT = tuple(
    f.name
    for f in dataclasses.fields(OutboxEntry)
    if f.name not in ("created_at", "event", "not_before", "skipped")
)


def aware(value: datetime) -> datetime:
    """`value`, which must be an aware datetime (the store keeps instants, not wall times)."""
    if not isinstance(value, datetime):
        raise TypeError(f"a datetime is needed, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the store needs aware ones")
    return value


def _iso(value: datetime) -> str:
    return ts(aware(value))


def clean(value: str) -> str:
    """Text as PostgreSQL can store it: it refuses NUL in `text` and `\\u0000` in `jsonb`,
    and a status message from the API may hold one. (SQLite keeps them; the message reads
    the same with U+FFFD.)"""
    return value.replace("\x00", "\ufffd")


def _same(value: str) -> str:
    return value


@dataclass(frozen=True, slots=True)
class Dialect:
    """Where the backends' SQL and values differ: placeholders, casts, times, text."""

    param: str
    casts: dict[str, str]
    #: A time as the database column holds it (ISO text on SQLite, timestamptz on PostgreSQL).
    time: Callable[[datetime], object]
    #: Text as the database can hold it.
    text: Callable[[str], str]
    #: A boolean column's value.
    true: Callable[[bool], object]

    def sql(self, statement: str) -> str:
        """`statement` (written with `?` and `{text}`/`{jsonb}` casts) in this dialect."""
        return statement.format(**self.casts).replace("?", self.param)


SQLITE: Final = Dialect("?", {"text": "", "jsonb": "", "no_time": "''"}, _iso, _same, int)
POSTGRES: Final = Dialect(
    "%s", {"text": "::text", "jsonb": "::jsonb", "no_time": "NULL"}, aware, clean, bool
)

# -- outbox claims and marks --------------------------------------------------------------------------


def claim_options(options: Claim) -> tuple[str, timedelta, tuple[str, ...], int]:
    """`claim`'s keywords with their defaults: holder, lease, busy targets, limit."""
    busy = tuple(options.get("busy", ()))
    return options["holder"], options["lease"], busy, options.get("limit", 100)


def target_claim_options(options: TargetClaim) -> tuple[str, timedelta, int, bool]:
    """`claim_target`'s keywords with their defaults: holder, lease, limit, whole_target."""
    whole = options.get("whole_target", False)
    return options["holder"], options["lease"], options.get("limit", 200), whole


def claimed(
    good: list[Delivery], bad: list[tuple[int, str]], holder: str, tell: OnUnreadable
) -> list[Delivery]:
    """The rows a claim took, under `holder`; the ones that did not decode (quarantined in
    the claim's transaction) are told."""
    for id_, why in bad:
        tell(f"outbox {id_}", why)
    return [dataclasses.replace(d, claim=holder) for d in good]


#: What each mark sets on its row (with the claim dropped, see `mark`).
MARK_DELIVERED: Final = "status = ?, delivered_at = ?, last_error = ''"
MARK_RETRY: Final = "attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
MARK_DEAD: Final = "attempts = attempts + 1, status = ?, next_attempt_at = ?, last_error = ?"
MARK_SILENCED: Final = "status = ?, silence_id = ?, next_attempt_at = ?, last_error = ''"
MARK_HELD: Final = "next_attempt_at = ?, last_error = ?"


def mark(sets: str, claim: str | None, d: Dialect) -> str:
    """The UPDATE of one pending row (parameters: those of `sets`, the id, then the claim
    when given): a mark under a claim applies only while the claim is still the row's own,
    so a dispatcher whose lease was taken over cannot settle what another one sends."""
    owned = "" if claim is None else " AND claim = ?"
    return d.sql(
        f"UPDATE outbox SET {sets}, claim = '', claimed_until = {{no_time}} "
        f"WHERE id = ? AND status = 'pending'{owned}"
    )


# -- record --------------------------------------------------------------------------------

#: `record`'s statements, in the order they run; each takes one parameter row per item.
UPSERT_FLAG: Final = (
    "INSERT INTO meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
UPSERT_JOB: Final = (
    "INSERT INTO jobs (job_key, snapshot, updated_at, polled_at) VALUES (?, ?{jsonb}, ?, ?) "
    "ON CONFLICT (job_key) DO UPDATE SET snapshot = excluded.snapshot, "
    "updated_at = excluded.updated_at, polled_at = excluded.polled_at"
)
SET_SINCE: Final = "UPDATE jobs SET state_since = ?, moved_at = ?, entered = ? WHERE job_key = ?"
SET_POLLED: Final = "UPDATE jobs SET polled_at = ? WHERE job_key = ?"
DROP_CONDITION: Final = "DELETE FROM conditions WHERE subject = ? AND name = ?"
OPEN_CONDITION: Final = (
    "INSERT INTO conditions (subject, name, opened_at, detail) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (subject, name) DO UPDATE SET detail = excluded.detail"
)
DROP_REMINDER: Final = "DELETE FROM reminders WHERE channel = ? AND subject = ?"
SET_REMINDER: Final = (
    "INSERT INTO reminders (channel, subject, next_at) VALUES (?, ?, ?) "
    "ON CONFLICT (channel, subject) DO UPDATE SET next_at = excluded.next_at"
)
INSERT_EVENT: Final = (
    "INSERT INTO events (job_key, old_state, new_state, observed_at, notice, fields, kind) "
    "VALUES (?, ?, ?, ?, ?, ?{jsonb}, ?) RETURNING id"
)
INSERT_ENTRY: Final = (
    "INSERT INTO outbox (job_key, channel, url_key, url_display, title, body, old_state, "
    "new_state, created_at, status, attempts, next_attempt_at, last_error, event_id) "
    "VALUES (?, ?, ?, ?, '', '', ?, ?, ?, ?, 0, ?, ?, ?)"
)

Rows = list[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class WriteRows:
    """A `Decision` as parameter rows, every value checked before the transaction starts."""

    #: (statement in the dialect, its rows), for every statement before the events.
    steps: list[tuple[str, Rows]]
    events: Rows
    insert_event: str
    #: The entries' rows without their event id, and the index of that event in `events`.
    entries: list[tuple[tuple[object, ...], int | None]]
    insert_entry: str

    def entry_rows(self, event_ids: Sequence[int]) -> Rows:
        """The entries' rows, each with the id its event got."""
        return [(*row, None if at is None else event_ids[at]) for row, at in self.entries]


def write_rows(decision: Decision, d: Dialect) -> WriteRows:
    """The parameter rows of `decision` in dialect `d`.

    Raises:
        TypeError, ValueError: a value the store cannot hold (a naive time, a field that is not
            text): the whole write is refused.
    """
    now, t = d.time(decision.now), d.text
    reminders = decision.reminders.items()
    steps: list[tuple[str, Rows]] = [
        (UPSERT_FLAG, [(t(f"flag:{key}"), t(value)) for key, value in decision.flags.items()]),
        (UPSERT_JOB, [(*_job_params(s, d), now, now) for s in decision.snapshots]),
        (
            SET_SINCE,
            [
                (d.time(s.state), d.time(s.moved), d.true(bool(s.entered)), t(key))
                for key, s in decision.since.items()
            ],
        ),
        (SET_POLLED, [(now, t(key)) for key in decision.polled]),
        (DROP_CONDITION, [(t(c.subject), t(str(c.name))) for c in decision.resolved]),
        (
            OPEN_CONDITION,
            [
                (t(c.subject), t(str(c.name)), d.time(c.opened_at), t(c.detail))
                for c in decision.opened
            ],
        ),
        (DROP_REMINDER, [(t(ch), t(sub)) for (ch, sub), at in reminders if at is None]),
        (SET_REMINDER, [(t(ch), t(sub), d.time(at)) for (ch, sub), at in reminders if at]),
    ]
    events = decision.every_event
    index = {event: at for at, event in enumerate(events)}
    return WriteRows(
        steps=[(d.sql(statement), rows) for statement, rows in steps if rows],
        events=[_event_params(event, d) for event in events],
        insert_event=d.sql(INSERT_EVENT),
        entries=[(_entry_params(e, d), index[e.event]) for e in decision.entries],
        insert_entry=d.sql(INSERT_ENTRY),
    )


def _job_params(snapshot: JobSnapshot, d: Dialect) -> tuple[str, str]:
    # Every field text, cleaned first: JSON would escape NUL as \u0000, which jsonb refuses
    # too. The key is the cleaned snapshot's, so it still names its own row.
    for name in _SNAPSHOT_TEXT:
        if not isinstance(getattr(snapshot, name), str):
            raise TypeError(f"JobSnapshot.{name} must be str")
    if not isinstance(snapshot.ref.job_id, str):
        raise TypeError("JobRef.job_id must be str")
    texts = {name: d.text(getattr(snapshot, name)) for name in _SNAPSHOT_TEXT}
    job_id = d.text(snapshot.ref.job_id)
    if job_id != snapshot.ref.job_id or any(
        value != getattr(snapshot, name) for name, value in texts.items()
    ):
        ref = dataclasses.replace(snapshot.ref, job_id=job_id)
        snapshot = dataclasses.replace(snapshot, ref=ref, **texts)
    return snapshot.ref.key, encode_snapshot(snapshot)


def _event_params(event: Event, d: Dialect) -> tuple[object, ...]:
    fields = dict(event.fields)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items()):
        raise TypeError("Event.fields must map names to strings")
    for name in ("job_key", "old_state", "new_state", "kind"):
        if not isinstance(getattr(event, name), str):
            raise TypeError(f"Event.{name} must be str")
    cleaned = {d.text(k): d.text(v) for k, v in fields.items()}
    return (
        d.text(event.job_key),
        d.text(event.old_state),
        d.text(event.new_state),
        d.time(event.observed_at),
        d.true(bool(event.notice)),
        json.dumps(cleaned, ensure_ascii=False, sort_keys=True),
        d.text(event.kind),
    )


def _entry_params(entry: OutboxEntry, d: Dialect) -> tuple[object, ...]:
    texts = []
    for name in _ENTRY_TEXT:
        value = getattr(entry, name)
        # sqlite3 would store an int or bytes as is and hand back the wrong type later.
        if not isinstance(value, str):
            raise TypeError(f"OutboxEntry.{name} must be str, not {type(value).__name__}")
        texts.append(d.text(value))
    created_at = d.time(entry.created_at)
    due = d.time(entry.not_before) if entry.not_before is not None else created_at
    # A skipped row (a templated URL's field empty for its message) is settled when written.
    status = SKIPPED if entry.skipped else "pending"
    return (*texts, created_at, status, due, d.text(entry.skipped))


# -- reads ---------------------------------------------------------------------------------

#: The plain reads, the same on both backends but for their dialect.
SELECT_SINCE: Final = (
    "SELECT job_key, state_since, moved_at, entered FROM jobs "
    "WHERE state_since IS NOT NULL AND (?{text} IS NULL OR job_key = ?)"
)
SELECT_POLLED: Final = (
    "SELECT job_key, polled_at FROM jobs "
    "WHERE polled_at IS NOT NULL AND (?{text} IS NULL OR job_key = ?)"
)
SELECT_CONDITIONS: Final = (
    "SELECT subject, name, opened_at, detail FROM conditions ORDER BY opened_at"
)
SELECT_REMINDERS: Final = "SELECT channel, subject, next_at FROM reminders"
#: Transition events (not notices) in [start, end), newest first; parameters: the fields
#: size read at most (twice), start, end, limit.
SELECT_DIGEST: Final = (
    "SELECT id, length(fields{text}), job_key, old_state, new_state, observed_at, notice, "
    "CASE WHEN length(fields{text}) <= ? THEN fields{text} END, kind FROM events "
    "WHERE notice = ? AND kind = '' AND observed_at >= ? AND observed_at < ? "
    "ORDER BY observed_at DESC, id DESC LIMIT ?"
)


def decoded(
    rows: Iterable[Sequence[Any]],
    decode: Callable[[Sequence[Any]], T],
    where: Callable[[Sequence[Any]], str],
    tell: OnUnreadable,
) -> Iterator[T]:
    """Each row decoded; one that does not decode is told (`where` it is, and why) and
    skipped."""
    for row in rows:
        try:
            yield decode(row)
        except (RowError, ValueError) as exc:
            tell(where(row), str(exc))


def _job_row(row: Sequence[Any]) -> str:
    return f"jobs {shown(row[0])}"


def snapshots(rows: Iterable[Sequence[Any]], tell: OnUnreadable) -> dict[str, JobSnapshot]:
    """(job_key, snapshot) rows as the snapshots keyed by job."""
    return dict(decoded(rows, lambda r: (str(r[0]), decode_snapshot(r[0], r[1])), _job_row, tell))


def since_rows(rows: Iterable[Sequence[Any]], tell: OnUnreadable) -> dict[str, Since]:
    """`SELECT_SINCE` rows as the jobs' times (`entered` is 1 or true)."""

    def since(r: Sequence[Any]) -> tuple[str, Since]:
        state, moved = when("jobs.state_since", r[1]), when("jobs.moved_at", r[2])
        return str(r[0]), Since(state, moved, r[3] == 1)

    return dict(decoded(rows, since, _job_row, tell))


def polled_rows(rows: Iterable[Sequence[Any]], tell: OnUnreadable) -> dict[str, datetime]:
    """`SELECT_POLLED` rows as each job's last poll."""
    return dict(decoded(rows, lambda r: (str(r[0]), when("jobs.polled_at", r[1])), _job_row, tell))


def condition_rows(rows: Iterable[Sequence[Any]], tell: OnUnreadable) -> list[Condition]:
    """`SELECT_CONDITIONS` rows as the open conditions."""

    def condition(r: Sequence[Any]) -> Condition:
        return Condition(
            text_cell("conditions.subject", r[0]),
            ConditionName(text_cell("conditions.name", r[1])),
            when("conditions.opened_at", r[2]),
            text_cell("conditions.detail", r[3]),
        )

    return list(decoded(rows, condition, lambda r: f"conditions {shown(r[0])}", tell))


def reminder_rows(
    rows: Iterable[Sequence[Any]], tell: OnUnreadable
) -> dict[tuple[str, str], datetime]:
    """`SELECT_REMINDERS` rows as the next reminder per (channel, subject)."""

    def reminder(r: Sequence[Any]) -> tuple[tuple[str, str], datetime]:
        key = (text_cell("reminders.channel", r[0]), text_cell("reminders.subject", r[1]))
        return key, when("reminders.next_at", r[2])

    return dict(decoded(rows, reminder, lambda r: f"reminders {shown(r[1])}", tell))


def digest_params(start: datetime, end: datetime, limit: int, d: Dialect) -> tuple[object, ...]:
    """`SELECT_DIGEST`'s parameters: at most `MAX_DIGEST_EVENTS`, at least one."""
    limit = max(1, min(limit, MAX_DIGEST_EVENTS))
    return (MAX_FIELDS_CHARS, d.true(False), d.time(start), d.time(end), limit)


def digest_rows(rows: Iterable[Sequence[Any]], tell: OnUnreadable) -> list[Event]:
    """`SELECT_DIGEST` rows as events; one whose fields are absurdly large costs only itself."""

    def event(r: Sequence[Any]) -> Event | None:
        event_id, size, *row = r
        if isinstance(size, int) and size > MAX_FIELDS_CHARS:
            raise RowError(f"events.fields: {size} characters, more than a digest reads")
        return event_row(event_id, row)

    found = decoded(rows, event, lambda r: f"events {shown(r[0])}", tell)
    return [e for e in found if e is not None]


def flag_value(key: str, value: object, tell: OnUnreadable) -> str | None:
    """A flag's cell: text only; a NULL or a blob is an unset flag (and told), never "None"."""
    if isinstance(value, str):
        return value
    tell(f"meta {shown('flag:' + key)}", f"meta.value: {shown(value)} is not text")
    return None


def flag_rows(
    rows: Iterable[Sequence[Any]], start: str, prefix: str, tell: OnUnreadable
) -> dict[str, str]:
    """(key, value) rows of the flags whose key starts with `start` (`flag:` + `prefix`),
    keyed by the rest of the key."""
    found = ((str(key)[len(start) :], value) for key, value in rows)
    return {
        name: text
        for name, value in found
        if (text := flag_value(prefix + name, value, tell)) is not None
    }
