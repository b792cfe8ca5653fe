"""The history half of `StateStore`: the timeline of events (transitions, notices, silences)
with what became of their deliveries, the silenced deliveries, and pruning by age.

Reads only: the CLI calls them while a daemon writes (SQLite's WAL lets both). An event or
delivery row that does not decode costs only itself (told to `on_unreadable`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from watcher.core.delivery import Event
from watcher.stores.base import Tables
from watcher.stores.outbox import DEAD, DELIVERED, SILENCED
from watcher.stores.rows import RowError, event_row, shown, text, ts, when

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


@dataclass(frozen=True, slots=True)
class Trace:
    """What became of one delivery of an event: its channel, target and status."""

    channel: str
    url_display: str
    status: str  # pending, delivered, dead, silenced
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


class HistoryTable(Tables):
    """The history reads and the pruning, over the connection `StateStore` provides."""

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
        with self._lock, self._errors("read"):
            if job is not None:
                # A function, not LIKE or GLOB: the caller's matching (ids, keys, fnmatch
                # globs) is the one rule, and it may not be expressible in SQL.
                self._conn.create_function("watcher_job", 1, _predicate(job), deterministic=True)
                where += " AND watcher_job(job_key)"
            rows = self._conn.execute(
                "SELECT id, job_key, old_state, new_state, observed_at, notice, fields, kind "
                f"FROM events WHERE {where} ORDER BY observed_at DESC, id DESC LIMIT ?",
                (ts(since), limit + 1),
            ).fetchall()
            traces = self._traces([row[0] for row in rows[:limit]])
        cut = len(rows) > limit
        found: list[Entry] = []
        for row in reversed(rows[:limit]):
            try:
                event = event_row(row[0], row[1:])
            except RowError as exc:
                self._on_unreadable(f"events {shown(row[0])}", str(exc))
                continue
            if event is not None:
                found.append(Entry(row[0], event, tuple(traces.get(row[0], ()))))
        return found, cut

    def _traces(self, event_ids: Sequence[int]) -> dict[int, list[Trace]]:
        found: dict[int, list[Trace]] = {}
        for start in range(0, len(event_ids), _CHUNK):
            chunk = event_ids[start : start + _CHUNK]
            rows = self._conn.execute(
                f"SELECT {TRACE_COLUMNS} FROM outbox "
                f"WHERE event_id IN ({', '.join('?' * len(chunk))}) "
                "ORDER BY id",
                chunk,
            ).fetchall()
            for id_, event_id, *rest in rows:
                try:
                    found.setdefault(event_id, []).append(trace_row(rest))
                except RowError as exc:
                    self._on_unreadable(f"outbox {shown(id_)}", str(exc))
        return found

    def silenced(self, *, limit: int = 100) -> tuple[int, list[Silenced]]:
        """How many deliveries are recorded as silenced, and the latest `limit` of them."""
        with self._lock, self._errors("read"):
            (count,) = self._conn.execute(
                "SELECT COUNT(*) FROM outbox WHERE status = ?", (SILENCED,)
            ).fetchone()
            rows = self._conn.execute(
                f"SELECT {SILENCED_COLUMNS} FROM outbox WHERE status = ? ORDER BY id DESC LIMIT ?",
                (SILENCED, limit),
            ).fetchall()
        found: list[Silenced] = []
        for row in rows:
            try:
                found.append(silenced_row(row))
            except RowError as exc:
                self._on_unreadable(f"outbox {shown(row[0])}", str(exc))
        return int(count), found

    def prune_history(self, before: datetime) -> tuple[int, int]:
        """Delete what is older than `before` (now - `history_days`): settled deliveries
        (delivered, dead, silenced) created and settled before it, then the events observed
        before it that no remaining delivery points at. Pending deliveries and their events
        are kept, however old. Returns (events, deliveries) deleted, in one transaction."""
        stamp = ts(before)
        with self._write() as conn:
            self._check_fence(conn)
            deliveries = conn.execute(
                "DELETE FROM outbox WHERE status IN (?, ?, ?) AND created_at < ? "
                "AND (delivered_at IS NULL OR delivered_at < ?)",
                (DELIVERED, DEAD, SILENCED, stamp, stamp),
            ).rowcount
            # NOT IN over one subquery: SQLite builds it once (the outbox has no index on
            # event_id, so a correlated NOT EXISTS would scan it per event).
            events = conn.execute(
                "DELETE FROM events WHERE observed_at < ? AND id NOT IN "
                "(SELECT event_id FROM outbox WHERE event_id IS NOT NULL)",
                (stamp,),
            ).rowcount
        return events, deliveries


def _predicate(job: Callable[[str], bool]) -> Callable[[object], int]:
    def accepts(key: object) -> int:
        return int(isinstance(key, str) and job(key))

    return accepts


def silenced_row(row: Sequence[object]) -> Silenced:
    """A silenced delivery from its row (`SILENCED_COLUMNS`), every column checked."""
    id_, job_key, channel, url_display, old, new, created_at, silence_id = row
    if isinstance(id_, bool) or not isinstance(id_, int):
        raise RowError(f"outbox.id: {shown(id_)} is not an id")
    return Silenced(
        id=id_,
        job_key=text("outbox.job_key", job_key),
        channel=text("outbox.channel", channel),
        url_display=text("outbox.url_display", url_display),
        old_state=text("outbox.old_state", old),
        new_state=text("outbox.new_state", new),
        created_at=when("outbox.created_at", created_at),
        silence_id=silence_ref(silence_id),
    )


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
