"""Silences on PostgreSQL: add, list and expire them, each also kept in the history as an
event (kind `silence`), as on SQLite (`stores.silence_table`). Any replica, or the CLI, may write
them; every dispatcher reads them live."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from watcher.core.silences import Silence
from watcher.stores.pg.pg_tables import Connection, PgDb, clean
from watcher.stores.silence_table import (
    SILENCE_EVENT,
    SILENCE_KEY,
    history_fields,
    silence_row,
    silence_rows,
)

_COLUMNS = "id, job, kind, state, channel, comment, created_at, ends_at, expired_at, owner"


@dataclass
class PgSilences:
    """add_silence, expire_silence, silences, over the store's `PgDb`."""

    db: PgDb

    async def add_silence(self, silence: Silence, *, now: datetime) -> int:
        """Store a new silence (from `now` to its `ends_at`); returns its id."""
        if silence.ends_at is None:
            raise ValueError("a silence needs an end")
        async with self.db.tx() as conn:
            cursor = await conn.execute(
                "INSERT INTO silences "
                "(job, kind, state, channel, comment, created_at, ends_at, owner) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    clean(silence.job),
                    clean(silence.kind),
                    clean(silence.state),
                    clean(silence.channel),
                    clean(silence.comment),
                    now,
                    silence.ends_at,
                    clean(silence.owner),
                ),
            )
            row = await cursor.fetchone()
            new_id = int(row[0]) if row else 0
            await _history(conn, "added", new_id, silence, now)
        return new_id

    async def expire_silence(self, silence_id: int, *, now: datetime) -> bool:
        """End a silence now; False when there is no such silence still in force."""
        async with self.db.tx() as conn:
            cursor = await conn.execute(
                f"UPDATE silences SET expired_at = %s WHERE id = %s AND expired_at IS NULL "
                f"AND ends_at > %s RETURNING {_COLUMNS}",
                (now, silence_id, now),
            )
            row = await cursor.fetchone()
            if row is None:
                return False
            await _history(conn, "expired", silence_id, silence_row(row), now)
        return True

    async def silences(self, now: datetime, *, include_ended: bool = False) -> list[Silence]:
        """Silences in force at `now` (with `include_ended`, every one), oldest first."""
        where = (
            ""
            if include_ended
            else " WHERE ends_at > %s AND (expired_at IS NULL OR expired_at > %s)"
        )
        params = () if include_ended else (now, now)
        async with self.db.conn() as conn:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM silences{where} ORDER BY id", params
            )
            rows = await cursor.fetchall()
        return silence_rows(rows, self.db.on_unreadable)

    @staticmethod
    async def newly_ended(conn: Connection, now: datetime) -> list[int]:
        """Inside a write transaction: the silences ended by `now` and not yet seen ended
        (`mark_ended`), oldest first, each locked until the transaction ends; one another
        replica has locked is left to it (SKIP LOCKED), so each is ended once."""
        cursor = await conn.execute(
            "SELECT id FROM silences WHERE NOT ended AND (ends_at <= %s "
            "OR (expired_at IS NOT NULL AND expired_at <= %s)) ORDER BY id "
            "FOR UPDATE SKIP LOCKED",
            (now, now),
        )
        return [int(silence_id) for (silence_id,) in await cursor.fetchall()]

    @staticmethod
    async def mark_ended(conn: Connection, silence_id: int) -> None:
        """Inside a write transaction: the silence has been seen ended (what it silenced and
        is still open was queued afresh)."""
        await conn.execute("UPDATE silences SET ended = true WHERE id = %s", (silence_id,))


async def _history(
    conn: Connection, action: str, silence_id: int, silence: Silence, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO events (job_key, old_state, new_state, observed_at, notice, fields, kind) "
        "VALUES (%s, '', %s, %s, true, %s, %s)",
        (
            SILENCE_KEY,
            action.upper(),
            now,
            clean(history_fields(action, silence_id, silence)),
            SILENCE_EVENT,
        ),
    )
