"""The outbox half of `StateStore`: claim, settle and list deliveries, quarantining rows that
cannot be read."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from watcher.core.delivery import Delivery
from watcher.core.errors import LeaseLost
from watcher.stores.rows import (
    CLAIMABLE,
    HORIZON,
    SELECT_DELIVERIES,
    decode_deliveries,
    sql_time,
    ts,
    well_formed,
)

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"

#: Told of each row that cannot be read: (`table row`, reason). The row costs only itself: an
#: outbox row is quarantined (dead, the reason as its error), a job row is treated as never
#: seen (re-baselined), a flag as unset.
OnUnreadable = Callable[[str, str], None]


def ignore(*_: str) -> None:
    """The default hook: tell no one."""


class OutboxTable:
    """The outbox methods of `StateStore`, over the connection and transactions it provides."""

    _lock: threading.Lock
    _conn: sqlite3.Connection
    _on_unreadable: OnUnreadable

    def _write(self, action: str = "write") -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _errors(self, action: str) -> AbstractContextManager[None]:
        raise NotImplementedError

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
        stamp, horizon = ts(now), ts(now + HORIZON)
        with self._write("claim in") as conn:
            found = conn.execute(query, (stamp, horizon, stamp, horizon, *busy, limit)).fetchall()
            good, bad = decode_deliveries(found)
            conn.executemany(
                "UPDATE outbox SET claim = ?, claimed_until = ? WHERE id = ?",
                ((holder, ts(now + lease), d.id) for d in good),
            )
            # Quarantined in the same transaction: dead, with the reason as its error, so it is
            # shown by `status`, reported once, and no longer holds up its job's later rows.
            conn.executemany(
                "UPDATE outbox SET status = ?, last_error = ?, claim = '', claimed_until = '' "
                "WHERE id = ?",
                ((DEAD, f"unreadable row: {why}", id_) for id_, why in bad),
            )
        for id_, why in bad:
            self._on_unreadable(f"outbox {id_}", why)
        return [dataclasses.replace(d, claim=holder) for d in good]

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
        # Only well-formed times take part: a corrupt one is claimed (and quarantined) by the
        # next `claim`, which the dispatcher makes at least every few seconds anyway.
        claimed = f"CASE WHEN {well_formed('claimed_until')} THEN claimed_until ELSE '' END"
        with self._lock, self._errors("read"):
            row = self._conn.execute(
                f"SELECT MIN(MAX(next_attempt_at, {claimed})) FROM outbox "
                f"WHERE status = ? AND {well_formed('next_attempt_at')}",
                (PENDING,),
            ).fetchone()
        return sql_time(row[0])

    def outbox_stats(self) -> tuple[int, datetime | None]:
        """How many deliveries are pending, and when the oldest of them was created."""
        with self._lock, self._errors("read"):
            count, oldest = self._conn.execute(
                f"SELECT COUNT(*), MIN(CASE WHEN {well_formed('created_at')} THEN created_at END) "
                "FROM outbox WHERE status = ?",
                (PENDING,),
            ).fetchone()
        return int(count), sql_time(oldest)

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

    def _deliveries(self, where: str, params: tuple[Any, ...]) -> list[Delivery]:
        with self._lock, self._errors("read"):
            rows = self._conn.execute(f"{SELECT_DELIVERIES} {where}", params).fetchall()
        good, bad = decode_deliveries(rows)
        for id_, why in bad:
            self._on_unreadable(f"outbox {id_}", why)
        return good

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
