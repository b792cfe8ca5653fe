"""The outbox of `StateStore` (its `outbox_table`): claim, settle and list deliveries,
quarantining rows that cannot be read; announce again what an ended silence (of the
`SilenceTable`) held back."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Unpack

from watcher.core.delivery import Delivery, Mark, MarkKind
from watcher.core.errors import LeaseLost
from watcher.core.grouping import Candidate, select_claims
from watcher.ports import Claim, TargetClaim
from watcher.stores.dialect import (
    MARK_DEAD,
    MARK_DELIVERED,
    MARK_HELD,
    MARK_RETRY,
    MARK_SILENCED,
    SQLITE,
    claim_options,
    claimed,
    mark,
    target_claim_options,
)
from watcher.stores.rows import (
    CLAIMABLE,
    HORIZON,
    SELECT_DELIVERIES,
    decode_deliveries,
    sql_time,
    ts,
    well_formed,
)
from watcher.stores.silence_table import SilenceTable
from watcher.stores.tables import Db

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
#: Recorded, not sent: a silence covered it (`outbox.silence_id`). Never pending again; a
#: condition still open when the silence ends is queued afresh (`announce_after_silences`).
SILENCED = "silenced"
#: How a held row's `last_error` starts (quiet hours, a rate limit): it waits, untried.
HELD = "held: "

# SQL over `o`: the row is due now / under no live claim. Parameters: now, now + HORIZON.
_DUE = (
    f"(o.next_attempt_at <= ? OR o.next_attempt_at > ? OR NOT {well_formed('o.next_attempt_at')})"
)
_FREE = f"(o.claimed_until < ? OR o.claimed_until > ? OR NOT {well_formed('o.claimed_until')})"


@dataclass
class OutboxTable:
    """The outbox methods of `StateStore`, over its `Db`; the silences ended are read and
    marked through `silences`."""

    db: Db
    silences: SilenceTable

    def due(self, now: datetime, *, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose next attempt is at or before `now`, oldest first."""
        return self._deliveries(
            "WHERE o.status = ? AND o.next_attempt_at <= ? ORDER BY o.id LIMIT ?",
            (PENDING, ts(now), limit),
        )

    def claim(self, now: datetime, **options: Unpack[Claim]) -> list[Delivery]:
        """Claim the claimable deliveries (see `CLAIMABLE`) of targets not in `busy` until
        `now + lease`, oldest first; their marks must then name the claim (`holder`)."""
        holder, lease, busy, limit = claim_options(options)
        skip = f" AND o.url_key NOT IN ({', '.join('?' for _ in busy)})" if busy else ""
        query = f"{SELECT_DELIVERIES} WHERE {CLAIMABLE}{skip} ORDER BY o.id LIMIT ?"
        stamp, horizon = ts(now), ts(now + HORIZON)
        with self.db.write("claim in") as conn:
            found = conn.execute(query, (stamp, horizon, stamp, horizon, *busy, limit)).fetchall()
            good, bad = self._take(conn, found, holder=holder, until=now + lease)
        return claimed(good, bad, holder, self.db.on_unreadable)

    def claim_target(
        self, url_key: str, now: datetime, **options: Unpack[TargetClaim]
    ) -> list[Delivery]:
        """Claim every due pending row of one target at once (oldest first, at most `limit`),
        with the rows that may join them (see `core.grouping.select_claims`: rows waiting only
        for their group window or quiet hours; of any job with `whole_target`). Rows under
        another holder's live claim are left, and so are their job's later rows."""
        holder, lease, limit, whole_target = target_claim_options(options)
        stamp, horizon = ts(now), ts(now + HORIZON)
        with self.db.write("claim in") as conn:
            listed = conn.execute(
                f"SELECT o.id, o.job_key, {_DUE}, {_FREE}, "
                "(o.attempts = 0 OR substr(o.last_error, 1, ?) = ?) "
                "FROM outbox AS o WHERE o.url_key = ? AND o.status = ? ORDER BY o.id",
                (stamp, horizon, stamp, horizon, len(HELD), HELD, url_key, PENDING),
            ).fetchall()
            candidates = [
                Candidate(int(id_), str(job), bool(due), bool(free), bool(joinable))
                for id_, job, due, free, joinable in listed
            ]
            ids = select_claims(candidates, whole_target=whole_target)[:limit]
            if not ids:
                return []
            marks = ", ".join("?" for _ in ids)
            found = conn.execute(
                f"{SELECT_DELIVERIES} WHERE o.id IN ({marks}) ORDER BY o.id", ids
            ).fetchall()
            good, bad = self._take(conn, found, holder=holder, until=now + lease)
        return claimed(good, bad, holder, self.db.on_unreadable)

    @staticmethod
    def _take(
        conn: sqlite3.Connection, found: list[Any], *, holder: str, until: datetime
    ) -> tuple[list[Delivery], list[tuple[int, str]]]:
        good, bad = decode_deliveries(found)
        conn.executemany(
            "UPDATE outbox SET claim = ?, claimed_until = ? WHERE id = ?",
            ((holder, ts(until), d.id) for d in good),
        )
        # Quarantined in the same transaction: dead, with the reason as its error, so it is
        # shown by `status`, reported once, and no longer holds up its job's later rows.
        conn.executemany(
            "UPDATE outbox SET status = ?, last_error = ?, claim = '', claimed_until = '' "
            "WHERE id = ?",
            ((DEAD, f"unreadable row: {why}", id_) for id_, why in bad),
        )
        return good, bad

    def release_claims(self) -> int:
        """Drop every claim: at start, by the one process that holds the state file's lock,
        so that sends cut short by a crash are retried at once."""
        with self.db.write() as conn:
            cursor = conn.execute(
                "UPDATE outbox SET claim = '', claimed_until = '' WHERE claim != ''"
            )
        return cursor.rowcount

    def release(self, delivery_ids: Sequence[int], *, claim: str) -> None:
        """Drop `claim` from rows it took but will not send now (their target is backed off,
        or its pace would outlast the claim): they are as they were before the claim, due
        again, no attempt counted. A row no longer pending under `claim` is left alone."""
        ids = sorted(set(delivery_ids))
        if not ids:
            return
        marks = ", ".join("?" for _ in ids)
        with self.db.write() as conn:
            conn.execute(
                "UPDATE outbox SET claim = '', claimed_until = '' "
                f"WHERE id IN ({marks}) AND status = ? AND claim = ?",
                (*ids, PENDING, claim),
            )

    def next_due_at(self) -> datetime | None:
        """When the earliest pending delivery is due, or None if nothing is pending."""
        # Only well-formed times take part: a corrupt one is claimed (and quarantined) by the
        # next `claim`, which the dispatcher makes at least every few seconds anyway.
        claimed = f"CASE WHEN {well_formed('claimed_until')} THEN claimed_until ELSE '' END"
        with self.db.reading() as conn:
            row = conn.execute(
                f"SELECT MIN(MAX(next_attempt_at, {claimed})) FROM outbox "
                f"WHERE status = ? AND {well_formed('next_attempt_at')}",
                (PENDING,),
            ).fetchone()
        return sql_time(row[0])

    def outbox_stats(self) -> tuple[int, datetime | None]:
        """How many deliveries are pending, and when the oldest of them was created."""
        with self.db.reading() as conn:
            count, oldest = conn.execute(
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
        self._update(delivery_id, MARK_DELIVERED, (DELIVERED, ts(now)), claim)

    def mark_retry(
        self, delivery_id: int, *, next_attempt_at: datetime, error: str, claim: str | None = None
    ) -> None:
        """Record a failed send to be tried again at `next_attempt_at`."""
        self._update(delivery_id, MARK_RETRY, (ts(next_attempt_at), error), claim)

    def mark_dead(
        self, delivery_id: int, *, now: datetime, error: str, claim: str | None = None
    ) -> None:
        """Give the delivery up after a failed send; its `next_attempt_at` becomes `now`."""
        self._update(delivery_id, MARK_DEAD, (DEAD, ts(now), error), claim)

    def mark_silenced(
        self, delivery_id: int, *, silence_id: int, now: datetime, claim: str | None = None
    ) -> None:
        """Record that a silence covered the delivery: it is kept, as silenced, never sent."""
        self._update(delivery_id, MARK_SILENCED, (SILENCED, silence_id, ts(now)), claim)

    def hold(
        self, delivery_id: int, *, until: datetime, claim: str | None = None, why: str = "quiet"
    ) -> None:
        """Let the delivery wait until `until` without counting an attempt (quiet hours, a
        rate limit); its `last_error` says so (`held: ...`)."""
        self._update(delivery_id, MARK_HELD, (ts(until), HELD + why), claim)

    def settle_many(self, delivery_ids: Sequence[int], mark: Mark, claim: str) -> None:
        """Settle the rows of one batch (one message) together, in one transaction: all of
        them, or none when any is no longer pending under `claim` (LeaseLost)."""
        ids = sorted(set(delivery_ids))
        if not ids:
            return
        at = ts(mark.at)
        if mark.kind is MarkKind.DELIVERED:
            sets = "status = ?, delivered_at = ?, last_error = ''"
            params: tuple[Any, ...] = (DELIVERED, at)
        else:
            status = DEAD if mark.kind is MarkKind.DEAD else PENDING
            sets = "attempts = attempts + 1, status = ?, next_attempt_at = ?, last_error = ?"
            params = (status, at, mark.error)
        marks = ", ".join("?" for _ in ids)
        where = f"id IN ({marks}) AND status = '{PENDING}' AND claim = ?"
        with self.db.write() as conn:
            (owned,) = conn.execute(
                f"SELECT COUNT(*) FROM outbox WHERE {where}", (*ids, claim)
            ).fetchone()
            if owned != len(ids):
                raise LeaseLost(
                    f"{len(ids) - owned} of {len(ids)} outbox rows of a batch are no longer "
                    "pending under this claim"
                )
            conn.execute(
                f"UPDATE outbox SET {sets}, claim = '', claimed_until = '' WHERE {where}",
                (*params, *ids, claim),
            )

    def announce_after_silences(self, now: datetime) -> dict[int, int]:
        """For each silence ended by `now` and not yet seen ended: queue afresh every
        condition it silenced that is still open (one row per event and target, unless one
        is pending already), then mark it ended; one transaction. Returns, per silence
        ended, how many rows were queued."""
        stamp = ts(now)
        done: dict[int, int] = {}
        with self.db.write() as conn:
            for silence_id in self.silences.newly_ended(conn, now):
                rows = conn.execute(_STILL_OPEN, (silence_id, SILENCED)).fetchall()
                queued = 0
                for event_id, *copied in rows:
                    url_key = copied[2]
                    if conn.execute(
                        "SELECT 1 FROM outbox WHERE event_id = ? AND url_key = ? AND status = ?",
                        (event_id, url_key, PENDING),
                    ).fetchone():
                        continue
                    conn.execute(
                        "INSERT INTO outbox (job_key, channel, url_key, url_display, title, "
                        "body, old_state, new_state, created_at, status, attempts, "
                        "next_attempt_at, last_error, event_id) "
                        "VALUES (?, ?, ?, ?, '', '', ?, ?, ?, ?, 0, ?, '', ?)",
                        (*copied, stamp, PENDING, stamp, event_id),
                    )
                    queued += 1
                self.silences.mark_ended(conn, silence_id)
                done[silence_id] = queued
        return done

    def prune(self, *, delivered_before: datetime) -> int:
        """Delete deliveries delivered before `delivered_before`; returns how many."""
        with self.db.write() as conn:
            cursor = conn.execute(
                "DELETE FROM outbox WHERE status = ? AND delivered_at < ?",
                (DELIVERED, ts(delivered_before)),
            )
        return cursor.rowcount

    def _deliveries(self, where: str, params: tuple[Any, ...]) -> list[Delivery]:
        with self.db.reading() as conn:
            rows = conn.execute(f"{SELECT_DELIVERIES} {where}", params).fetchall()
        good, bad = decode_deliveries(rows)
        for id_, why in bad:
            self.db.on_unreadable(f"outbox {id_}", why)
        return good

    def _update(
        self, delivery_id: int, sets: str, params: tuple[Any, ...], claim: str | None
    ) -> None:
        args = (*params, delivery_id, *(() if claim is None else (claim,)))
        with self.db.write() as conn:
            cursor = conn.execute(mark(sets, claim, SQLITE), args)
        if cursor.rowcount == 0:
            raise LeaseLost(f"outbox row {delivery_id} is no longer pending under this claim")


# The rows a silence covered whose condition is still open (its event a condition opening,
# its subject and name in `conditions`). Fields that are not JSON match nothing.
_STILL_OPEN = (
    "SELECT o.event_id, o.job_key, o.channel, o.url_key, o.url_display, o.old_state, "
    "o.new_state FROM outbox AS o JOIN events AS e ON e.id = o.event_id "
    "WHERE o.silence_id = ? AND o.status = ? AND e.kind = 'condition' AND EXISTS ("
    "SELECT 1 FROM conditions AS c WHERE c.subject = e.job_key AND c.name = "
    "CASE WHEN json_valid(e.fields) THEN json_extract(e.fields, '$.condition') END) "
    "ORDER BY o.id"
)
