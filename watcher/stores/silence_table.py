"""The silences of `StateStore` (its `silence_table`): add, list and expire silences, each
also kept in the history as an event (kind `silence`), and end them for the outbox. The CLI
writes them while a daemon runs (SQLite's WAL and busy timeout let both write); the daemon
reads them live, so no reload is needed."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from watcher.core.silences import Silence
from watcher.stores.dialect import decoded
from watcher.stores.rows import RowError, shown, text, ts, when
from watcher.stores.tables import Db, OnUnreadable

#: The events' job key and kind of silence records in the history.
SILENCE_KEY = "silence"
SILENCE_EVENT = "silence"

_COLUMNS = "id, job, kind, state, channel, comment, created_at, ends_at, expired_at, owner"


@dataclass
class SilenceTable:
    """Silences, over the store's `Db`."""

    db: Db

    def add_silence(self, silence: Silence, *, now: datetime) -> int:
        """Store a new silence (from `now` to its `ends_at`); returns its id."""
        if silence.ends_at is None:
            raise ValueError("a silence needs an end")
        with self.db.write() as conn:
            cursor = conn.execute(
                "INSERT INTO silences "
                "(job, kind, state, channel, comment, created_at, ends_at, owner) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    silence.job,
                    silence.kind,
                    silence.state,
                    silence.channel,
                    silence.comment,
                    ts(now),
                    ts(silence.ends_at),
                    silence.owner,
                ),
            )
            new_id = int(cursor.lastrowid or 0)
            _history(conn, "added", new_id, silence, now)
        return new_id

    def expire_silence(self, silence_id: int, *, now: datetime) -> bool:
        """End a silence now; False when there is no such silence still in force."""
        with self.db.write() as conn:
            cursor = conn.execute(
                "UPDATE silences SET expired_at = ? WHERE id = ? AND expired_at IS NULL "
                "AND ends_at > ?",
                (ts(now), silence_id, ts(now)),
            )
            if cursor.rowcount == 0:
                return False
            row = conn.execute(f"SELECT {_COLUMNS} FROM silences WHERE id = ?", (silence_id,))
            _history(conn, "expired", silence_id, silence_row(row.fetchone()), now)
        return True

    def silences(self, now: datetime, *, include_ended: bool = False) -> list[Silence]:
        """Silences in force at `now` (with `include_ended`, every one), oldest first."""
        where = (
            "" if include_ended else " WHERE ends_at > ? AND (expired_at IS NULL OR expired_at > ?)"
        )
        params = () if include_ended else (ts(now), ts(now))
        with self.db.reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM silences{where} ORDER BY id", params
            ).fetchall()
        return silence_rows(rows, self.db.on_unreadable)

    @staticmethod
    def newly_ended(conn: sqlite3.Connection, now: datetime) -> list[int]:
        """Inside a write transaction: the silences ended by `now` and not yet seen ended
        (`mark_ended`), oldest first."""
        rows = conn.execute(
            "SELECT id FROM silences WHERE ended = 0 AND (ends_at <= ? "
            "OR (expired_at IS NOT NULL AND expired_at <= ?)) ORDER BY id",
            (ts(now), ts(now)),
        ).fetchall()
        return [int(silence_id) for (silence_id,) in rows]

    @staticmethod
    def mark_ended(conn: sqlite3.Connection, silence_id: int) -> None:
        """Inside a write transaction: the silence has been seen ended (what it silenced and
        is still open was queued afresh)."""
        conn.execute("UPDATE silences SET ended = 1 WHERE id = ?", (silence_id,))


def silence_rows(rows: Iterable[Sequence[Any]], tell: OnUnreadable) -> list[Silence]:
    """Rows of silences (`_COLUMNS`) as silences; one that does not decode is told and
    skipped (both backends)."""
    return list(decoded(rows, silence_row, lambda r: f"silences {shown(r[0])}", tell))


def silence_row(row: Sequence[Any]) -> Silence:
    """A silence from its row (`_COLUMNS`), every column checked (both backends)."""
    id_, job, kind, state, channel, comment, created_at, ends_at, expired_at, owner = row
    if not isinstance(id_, int):
        raise RowError(f"silences.id: {shown(id_)} is not an id")
    return Silence(
        id=id_,
        job=text("silences.job", job),
        kind=text("silences.kind", kind),
        state=text("silences.state", state),
        channel=text("silences.channel", channel),
        comment=text("silences.comment", comment),
        created_at=when("silences.created_at", created_at),
        ends_at=when("silences.ends_at", ends_at),
        expired_at=None if expired_at is None else when("silences.expired_at", expired_at),
        owner=text("silences.owner", owner),
    )


def _history(
    conn: sqlite3.Connection, action: str, silence_id: int, silence: Silence, now: datetime
) -> None:
    conn.execute(
        "INSERT INTO events (job_key, old_state, new_state, observed_at, notice, fields, kind) "
        "VALUES (?, '', ?, ?, 1, ?, ?)",
        (
            SILENCE_KEY,
            action.upper(),
            ts(now),
            history_fields(action, silence_id, silence),
            SILENCE_EVENT,
        ),
    )


def history_fields(action: str, silence_id: int, silence: Silence) -> str:
    """The fields (JSON) of the history event of a silence added or expired (both backends)."""
    fields = {
        "action": action,
        "silence_id": str(silence_id),
        **silence.described(),
        "ends_at": ts(silence.ends_at) if silence.ends_at else "",
    }
    return json.dumps(fields, ensure_ascii=False, sort_keys=True)
