"""The history of `StateStore` (its `history_table`): the timeline of events (transitions,
notices, silences) with what became of their deliveries, the silenced deliveries, and pruning
by age (under the lease table's fence).

Reads only: the CLI calls them while a daemon writes (SQLite's WAL lets both). An event or
delivery row that does not decode costs only itself (told to `on_unreadable`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from watcher.core.delivery import Event
from watcher.stores.dialect import SKIPPED, decoded
from watcher.stores.lease_table import LeaseTable
from watcher.stores.outbox_table import DEAD, DELIVERED, SILENCED
from watcher.stores.rows import RowError, event_row, shown, text, ts, when
from watcher.stores.tables import Db, OnUnreadable

#: The outbox status of a message a silence muted: recorded, never sent.
#: The most events one `history` call returns (the latest ones).
MAX_HISTORY: Final = 10_000
#: Event ids per `IN (...)` query (well under SQLite's limit of bound parameters).
_CHUNK: Final = 500
#: The columns `trace_row` (after the first two) and `silenced_row` decode (both backends).
TRACE_COLUMNS: Final = (
    "id, event_id, channel, url_display, status, delivered_at, attempts, last_error, silence_id"
)
SILENCED_COLUMNS: Final = (
    "id, job_key, channel, url_display, old_state, new_state, created_at, silence_id"
)
#: The text columns of `SILENCED_COLUMNS`, in order.
_TEXTS: Final = ("job_key", "channel", "url_display", "old_state", "new_state")


@dataclass(frozen=True, slots=True)
class Trace:
    """What became of one delivery of an event: its channel, target and status."""

    channel: str
    url_display: str
    status: str  # pending, delivered, dead, silenced, skipped
    delivered_at: datetime | None = None
    attempts: int = 0
    last_error: str = ""
    silence_id: int | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One event of the history, with its deliveries (oldest first)."""

    id: int
    event: Event
    deliveries: tuple[Trace, ...] = ()


@dataclass(frozen=True, slots=True)
class Silenced:
    """A delivery a silence muted."""

    id: int
    job_key: str
    channel: str
    url_display: str
    old_state: str
    new_state: str
    created_at: datetime
    silence_id: int | None


@dataclass
class HistoryTable:
    """The history reads and the pruning (under the fence of `leases`), over the store's
    `Db`."""

    db: Db
    leases: LeaseTable

    def history(
        self,
        *,
        since: datetime,
        job: Callable[[str], bool] | None = None,
        limit: int = MAX_HISTORY,
    ) -> tuple[list[Entry], bool]:
        """The latest `limit` events observed at or after `since` (of the job keys `job`
        accepts, when given), oldest first, each with its deliveries; and whether older
        ones were cut."""
        where = "observed_at >= ?"
        with self.db.reading() as conn:
            if job is not None:
                # A function, not LIKE or GLOB: the caller's matching (ids, keys, fnmatch
                # globs) is the one rule, and it may not be expressible in SQL.
                conn.create_function("watcher_job", 1, _predicate(job), deterministic=True)
                where += " AND watcher_job(job_key)"
            rows = conn.execute(
                "SELECT id, job_key, old_state, new_state, observed_at, notice, fields, kind "
                f"FROM events WHERE {where} ORDER BY observed_at DESC, id DESC LIMIT ?",
                (ts(since), limit + 1),
            ).fetchall()
            ids = [row[0] for row in rows[:limit]]
            traced = [
                row
                for start in range(0, len(ids), _CHUNK)
                for row in conn.execute(
                    f"SELECT {TRACE_COLUMNS} FROM outbox "
                    f"WHERE event_id IN ({', '.join('?' * len(ids[start : start + _CHUNK]))}) "
                    "ORDER BY id",
                    ids[start : start + _CHUNK],
                ).fetchall()
            ]
        return entries(rows, traced, limit, self.db.on_unreadable)

    def silenced(self, *, limit: int = 100) -> tuple[int, list[Silenced]]:
        """How many deliveries are recorded as silenced, and the latest `limit` of them."""
        with self.db.reading() as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE status = ?", (SILENCED,)
            ).fetchone()
            rows = conn.execute(
                f"SELECT {SILENCED_COLUMNS} FROM outbox WHERE status = ? ORDER BY id DESC LIMIT ?",
                (SILENCED, limit),
            ).fetchall()
        return int(count), silenced_rows(rows, self.db.on_unreadable)

    def prune_history(self, before: datetime) -> tuple[int, int]:
        """Delete what is older than `before` (now - `history_days`): settled deliveries
        (delivered, dead, silenced, skipped) created and settled before it, then the events observed
        before it that no remaining delivery points at. Pending deliveries and their events
        are kept, however old. Returns (events, deliveries) deleted, in one transaction."""
        stamp = ts(before)
        with self.db.write() as conn:
            self.leases.check_fence(conn)
            deliveries = conn.execute(
                "DELETE FROM outbox WHERE status IN (?, ?, ?, ?) AND created_at < ? "
                "AND (delivered_at IS NULL OR delivered_at < ?)",
                (DELIVERED, DEAD, SILENCED, SKIPPED, stamp, stamp),
            ).rowcount
            # NOT IN over one subquery: SQLite builds it once (the outbox has no index on
            # event_id, so a correlated NOT EXISTS would scan it per event).
            events = conn.execute(
                "DELETE FROM events WHERE observed_at < ? AND id NOT IN "
                "(SELECT event_id FROM outbox WHERE event_id IS NOT NULL)",
                (stamp,),
            ).rowcount
        return events, deliveries


def entries(
    rows: Sequence[Sequence[Any]], traced: Iterable[Sequence[Any]], limit: int, tell: OnUnreadable
) -> tuple[list[Entry], bool]:
    """The history from the events read newest first (`limit + 1` of them at most) and
    their deliveries' rows (`TRACE_COLUMNS`): the events oldest first, each with its
    deliveries, and whether older ones were cut (both backends)."""
    traces: dict[int, list[Trace]] = {}
    for event_id, trace in decoded(
        traced, lambda r: (r[1], trace_row(r[2:])), lambda r: f"outbox {shown(r[0])}", tell
    ):
        traces.setdefault(event_id, []).append(trace)
    events = decoded(
        reversed(rows[:limit]),
        lambda r: (r[0], event_row(r[0], r[1:])),
        lambda r: f"events {shown(r[0])}",
        tell,
    )
    found = [Entry(id_, event, tuple(traces.get(id_, ()))) for id_, event in events if event]
    return found, len(rows) > limit


def silenced_rows(rows: Iterable[Sequence[Any]], tell: OnUnreadable) -> list[Silenced]:
    """`SILENCED_COLUMNS` rows as silenced deliveries (both backends)."""
    return list(decoded(rows, silenced_row, lambda r: f"outbox {shown(r[0])}", tell))


def _predicate(job: Callable[[str], bool]) -> Callable[[object], int]:
    def accepts(key: object) -> int:
        return int(isinstance(key, str) and job(key))

    return accepts


def silenced_row(row: Sequence[object]) -> Silenced:
    """A silenced delivery from its row (`SILENCED_COLUMNS`), every column checked."""
    id_, *cells, created_at, silence_id = row
    if isinstance(id_, bool) or not isinstance(id_, int):
        raise RowError(f"outbox.id: {shown(id_)} is not an id")
    job, channel, url, old, new = (
        text(f"outbox.{n}", v) for n, v in zip(_TEXTS, cells, strict=True)
    )
    at = when("outbox.created_at", created_at)
    return Silenced(id_, job, channel, url, old, new, at, silence_ref(silence_id))


def trace_row(row: Sequence[object]) -> Trace:
    """A delivery of an event from its row (`TRACE_COLUMNS` after the first two)."""
    channel, url_display, status, delivered_at, attempts, last_error, silence_id = row
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise RowError(f"outbox.attempts: {shown(attempts)} is not a count")
    return Trace(
        channel=text("outbox.channel", channel),
        url_display=text("outbox.url_display", url_display),
        status=text("outbox.status", status),
        delivered_at=None if delivered_at is None else when("outbox.delivered_at", delivered_at),
        attempts=attempts,
        last_error=text("outbox.last_error", last_error),
        silence_id=silence_ref(silence_id),
    )


def silence_ref(value: object) -> int | None:
    """An outbox row's silence id (None when no silence muted it)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise RowError(f"outbox.silence_id: {shown(value)} is not an id")
