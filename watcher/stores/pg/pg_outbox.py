"""The outbox on PostgreSQL, where several replicas' dispatchers claim at once.

The semantics are SQLite's (`stores.outbox_table`, the reference); what differs is how claims stay
exclusive without one writer. Every transaction is READ COMMITTED:

- `claim` locks what it takes with `FOR UPDATE OF o SKIP LOCKED` and sets the claim in the
  same statement; a row another replica claimed and committed meanwhile fails the claim
  condition when it is locked (PostgreSQL re-checks the WHERE against the row's newest
  version), and the UPDATE checks it once more.
- `claim_target` must see a target's candidates in full to keep each job's order: it locks
  what it can (SKIP LOCKED) and counts a candidate it could not lock as not free, so
  `select_claims` leaves that job's later rows too.
- Marks and settles change a row only while it is pending under the caller's claim (the
  UPDATE waits for a concurrent claim's lock, then re-checks), else `LeaseLost`.
- `announce_after_silences` runs in every replica's dispatcher: the silences it ends are
  locked (SKIP LOCKED) and marked ended in its transaction, so each is announced once.
"""

from __future__ import annotations

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
    POSTGRES,
    claim_options,
    claimed,
    mark,
    target_claim_options,
)
from watcher.stores.outbox_table import DEAD, DELIVERED, HELD, PENDING, SILENCED
from watcher.stores.pg.pg_silences import PgSilences
from watcher.stores.pg.pg_tables import Connection, PgDb, clean
from watcher.stores.rows import HORIZON, decode_deliveries, prefixed

#: An outbox row with its event (NULLs for a row without one); jsonb read as text for the
#: decoders of `stores.rows`.
_SELECT = (
    f"SELECT {prefixed('o.')}, e.job_key, e.old_state, e.new_state, e.observed_at, e.notice, "
    "e.fields::text, e.kind FROM outbox AS o LEFT JOIN events AS e ON e.id = o.event_id"
)
# SQL over `o`, with the parameters `now` and `horizon` (now + HORIZON): due now, and under no
# live claim. A time past the horizon was not written by a watcher (a retry is never further
# ahead, nor a claim longer): it counts as due and as no claim, as on SQLite.
_DUE = "(o.next_attempt_at <= %(now)s OR o.next_attempt_at > %(horizon)s)"
_FREE = "(o.claimed_until IS NULL OR o.claimed_until < %(now)s OR o.claimed_until > %(horizon)s)"
# Claimable: pending, due, free, and the oldest pending row of its (target, job).
_CLAIMABLE = (
    f"o.status = '{PENDING}' AND {_DUE} AND {_FREE} AND NOT EXISTS (SELECT 1 FROM outbox AS p "
    f"WHERE p.url_key = o.url_key AND p.job_key = o.job_key AND p.status = '{PENDING}' "
    "AND p.id < o.id)"
)


@dataclass
class PgOutbox:
    """claim, claim_target, settles, holds, stats, prune, announce_after_silences (the
    silences ended read and marked through `silences`), over the store's `PgDb`."""

    db: PgDb
    silences: PgSilences

    async def due(self, now: datetime, *, limit: int = 100) -> list[Delivery]:
        """Pending deliveries whose next attempt is at or before `now`, oldest first."""
        return await self._deliveries(
            f"WHERE o.status = '{PENDING}' AND o.next_attempt_at <= %s ORDER BY o.id LIMIT %s",
            (now, limit),
        )

    async def claim(self, now: datetime, **options: Unpack[Claim]) -> list[Delivery]:
        """Claim the claimable deliveries of targets not in `busy` until `now + lease`,
        oldest first; their marks must then name the claim (`holder`). See
        `StateStore.claim`."""
        holder, lease, busy, limit = claim_options(options)
        params = {
            "now": now,
            "horizon": now + HORIZON,
            "busy": list(busy),
            "limit": limit,
            "holder": holder,
            "until": now + lease,
        }
        async with self.db.tx("claim in") as conn:
            cursor = await conn.execute(
                "WITH picked AS (SELECT o.id FROM outbox AS o WHERE "
                f"{_CLAIMABLE} AND o.url_key <> ALL(%(busy)s::text[]) ORDER BY o.id "
                "LIMIT %(limit)s FOR UPDATE OF o SKIP LOCKED) "
                "UPDATE outbox AS o SET claim = %(holder)s, claimed_until = %(until)s "
                f"FROM picked WHERE o.id = picked.id AND o.status = '{PENDING}' AND {_FREE} "
                "RETURNING o.id",
                params,
            )
            ids = sorted(int(row[0]) for row in await cursor.fetchall())
            good, bad = await self._take(conn, ids)
        return claimed(good, bad, holder, self.db.on_unreadable)

    async def claim_target(
        self, url_key: str, now: datetime, **options: Unpack[TargetClaim]
    ) -> list[Delivery]:
        """Claim every due pending row of one target at once, with the rows that may join
        them (see `StateStore.claim_target` and `core.grouping.select_claims`). Rows under
        another holder's live claim, or locked by another replica's claim in progress, are
        left, and so are their job's later rows."""
        holder, lease, limit, whole_target = target_claim_options(options)
        params = {"now": now, "horizon": now + HORIZON, "url_key": url_key, "held": HELD}
        async with self.db.tx("claim in") as conn:
            cursor = await conn.execute(
                "SELECT o.id FROM outbox AS o WHERE o.url_key = %(url_key)s "
                f"AND o.status = '{PENDING}' ORDER BY o.id FOR UPDATE OF o SKIP LOCKED",
                params,
            )
            locked = {int(row[0]) for row in await cursor.fetchall()}
            # Every candidate, locked or not (a later snapshot: what we locked cannot have
            # changed since, and a row seen only now is not ours, so not free).
            cursor = await conn.execute(
                f"SELECT o.id, o.job_key, {_DUE}, {_FREE}, "
                "(o.attempts = 0 OR left(o.last_error, length(%(held)s)) = %(held)s) "
                "FROM outbox AS o WHERE o.url_key = %(url_key)s "
                f"AND o.status = '{PENDING}' ORDER BY o.id",
                params,
            )
            candidates = [
                Candidate(int(id_), str(job), bool(due), bool(free) and id_ in locked, bool(joins))
                for id_, job, due, free, joins in await cursor.fetchall()
            ]
            ids = select_claims(candidates, whole_target=whole_target)[:limit]
            if not ids:
                return []
            await conn.execute(
                "UPDATE outbox SET claim = %s, claimed_until = %s WHERE id = ANY(%s)",
                (holder, now + lease, ids),
            )
            good, bad = await self._take(conn, ids)
        return claimed(good, bad, holder, self.db.on_unreadable)

    async def _take(
        self, conn: Connection, ids: Sequence[int]
    ) -> tuple[list[Delivery], list[tuple[int, str]]]:
        """The claimed rows decoded; the ones that do not decode quarantined in the same
        transaction (dead, the reason as their error: shown by `status`, reported once, and
        no longer holding up their job's later rows)."""
        if not ids:
            return [], []
        cursor = await conn.execute(f"{_SELECT} WHERE o.id = ANY(%s) ORDER BY o.id", (list(ids),))
        good, bad = decode_deliveries(await cursor.fetchall())
        for id_, why in bad:
            await conn.execute(
                "UPDATE outbox SET status = %s, last_error = %s, claim = '', "
                "claimed_until = NULL WHERE id = %s",
                (DEAD, clean(f"unreadable row: {why}"), id_),
            )
        return good, bad

    async def release_claims(self) -> int:
        """Drop every claim, so that sends cut short by a crash are retried at once.

        Only for a store with one process: on PostgreSQL other replicas' claims may be live,
        so the runtime calls this only when `single_process` is true (never for `PgStore`,
        whose abandoned claims end with their lease instead)."""
        async with self.db.tx() as conn:
            cursor = await conn.execute(
                "UPDATE outbox SET claim = '', claimed_until = NULL WHERE claim <> ''"
            )
        return cursor.rowcount

    async def release(self, delivery_ids: Sequence[int], *, claim: str) -> None:
        """Drop `claim` from rows it took but will not send now. See `StateStore.release`."""
        ids = sorted(set(delivery_ids))
        if not ids:
            return
        async with self.db.tx() as conn:
            await conn.execute(
                "UPDATE outbox SET claim = '', claimed_until = NULL "
                f"WHERE id = ANY(%s) AND status = '{PENDING}' AND claim = %s",
                (ids, claim),
            )

    async def next_due_at(self) -> datetime | None:
        """When the earliest pending delivery is due (a claimed one when its lease ends), or
        None if nothing is pending."""
        async with self.db.conn() as conn:
            cursor = await conn.execute(
                "SELECT min(greatest(next_attempt_at, claimed_until)) FROM outbox "
                "WHERE status = %s",
                (PENDING,),
            )
            row = await cursor.fetchone()
        return _aware(row[0] if row else None)

    async def outbox_stats(self) -> tuple[int, datetime | None]:
        """How many deliveries are pending, and when the oldest of them was created."""
        async with self.db.conn() as conn:
            cursor = await conn.execute(
                "SELECT count(*), min(created_at) FROM outbox WHERE status = %s", (PENDING,)
            )
            row = await cursor.fetchone()
        return (0, None) if row is None else (int(row[0]), _aware(row[1]))

    async def undelivered(self) -> list[Delivery]:
        """Pending and dead deliveries (for the `status` command), oldest first."""
        return await self._deliveries("WHERE o.status IN (%s, %s) ORDER BY o.id", (PENDING, DEAD))

    async def mark_delivered(
        self, delivery_id: int, *, now: datetime, claim: str | None = None
    ) -> None:
        """See `StateStore.mark_delivered`."""
        await self._update(delivery_id, MARK_DELIVERED, (DELIVERED, now), claim)

    async def mark_retry(
        self, delivery_id: int, *, next_attempt_at: datetime, error: str, claim: str | None = None
    ) -> None:
        """See `StateStore.mark_retry`."""
        await self._update(delivery_id, MARK_RETRY, (next_attempt_at, clean(error)), claim)

    async def mark_dead(
        self, delivery_id: int, *, now: datetime, error: str, claim: str | None = None
    ) -> None:
        """See `StateStore.mark_dead`."""
        await self._update(delivery_id, MARK_DEAD, (DEAD, now, clean(error)), claim)

    async def mark_silenced(
        self, delivery_id: int, *, silence_id: int, now: datetime, claim: str | None = None
    ) -> None:
        """See `StateStore.mark_silenced`."""
        await self._update(delivery_id, MARK_SILENCED, (SILENCED, silence_id, now), claim)

    async def hold(
        self, delivery_id: int, *, until: datetime, claim: str | None = None, why: str = "quiet"
    ) -> None:
        """See `StateStore.hold`."""
        await self._update(delivery_id, MARK_HELD, (until, clean(HELD + why)), claim)

    async def settle_many(self, delivery_ids: Sequence[int], mark: Mark, claim: str) -> None:
        """Settle the rows of one batch (one message) together, in one transaction: all of
        them, or none when any is no longer pending under `claim` (LeaseLost)."""
        ids = sorted(set(delivery_ids))
        if not ids:
            return
        if mark.kind is MarkKind.DELIVERED:
            sets = "status = %s, delivered_at = %s, last_error = ''"
            params: tuple[Any, ...] = (DELIVERED, mark.at)
        else:
            status = DEAD if mark.kind is MarkKind.DEAD else PENDING
            sets = "attempts = attempts + 1, status = %s, next_attempt_at = %s, last_error = %s"
            params = (status, mark.at, clean(mark.error))
        async with self.db.tx() as conn:
            # One UPDATE: it waits for a row another replica is claiming, then re-checks; a
            # short count rolls the whole batch back (the exception leaves the transaction).
            cursor = await conn.execute(
                f"UPDATE outbox SET {sets}, claim = '', claimed_until = NULL "
                f"WHERE id = ANY(%s) AND status = '{PENDING}' AND claim = %s",
                (*params, ids, claim),
            )
            if cursor.rowcount != len(ids):
                raise LeaseLost(
                    f"{len(ids) - cursor.rowcount} of {len(ids)} outbox rows of a batch are no "
                    "longer pending under this claim"
                )

    async def announce_after_silences(self, now: datetime) -> dict[int, int]:
        """For each silence ended by `now` and not yet seen ended: queue afresh every
        condition it silenced that is still open (one row per event and target, unless one
        is pending already), then mark it ended; one transaction. Returns, per silence
        ended, how many rows were queued. Each silence is ended once, whichever replica
        gets to it: its row is locked (SKIP LOCKED) until the transaction ends."""
        done: dict[int, int] = {}
        async with self.db.tx() as conn:
            for silence_id in await self.silences.newly_ended(conn, now):
                rows = await conn.execute(_STILL_OPEN, (silence_id, SILENCED))
                queued = 0
                for event_id, *copied in await rows.fetchall():
                    inserted = await conn.execute(
                        "INSERT INTO outbox (job_key, channel, url_key, url_display, title, "
                        "body, old_state, new_state, created_at, status, attempts, "
                        "next_attempt_at, last_error, event_id) "
                        "SELECT %s, %s, %s, %s, '', '', %s, %s, %s, %s, 0, %s, '', %s "
                        "WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE event_id = %s "
                        "AND url_key = %s AND status = %s)",
                        (*copied, now, PENDING, now, event_id, event_id, copied[2], PENDING),
                    )
                    queued += inserted.rowcount
                await self.silences.mark_ended(conn, silence_id)
                done[silence_id] = queued
        return done

    async def prune(self, *, delivered_before: datetime) -> int:
        """Delete deliveries delivered before `delivered_before`; returns how many."""
        async with self.db.tx() as conn:
            cursor = await conn.execute(
                "DELETE FROM outbox WHERE status = %s AND delivered_at < %s",
                (DELIVERED, delivered_before),
            )
        return cursor.rowcount

    async def _deliveries(self, where: str, params: tuple[Any, ...]) -> list[Delivery]:
        async with self.db.conn() as conn:
            cursor = await conn.execute(f"{_SELECT} {where}", params)
            rows = await cursor.fetchall()
        good, bad = decode_deliveries(rows)
        for id_, why in bad:
            self.db.on_unreadable(f"outbox {id_}", why)
        return good

    async def _update(
        self, delivery_id: int, sets: str, params: tuple[Any, ...], claim: str | None
    ) -> None:
        args = (*params, delivery_id, *(() if claim is None else (claim,)))
        async with self.db.tx() as conn:
            cursor = await conn.execute(mark(sets, claim, POSTGRES), args)
        if cursor.rowcount == 0:
            raise LeaseLost(f"outbox row {delivery_id} is no longer pending under this claim")


def _aware(value: object) -> datetime | None:
    """A time computed in SQL (a MIN over timestamptz), or None when there is none."""
    return value if isinstance(value, datetime) else None


# The rows a silence covered whose condition is still open (its event a condition opening,
# its subject and name in `conditions`). Fields that are not an object match nothing.
_STILL_OPEN = (
    "SELECT o.event_id, o.job_key, o.channel, o.url_key, o.url_display, o.old_state, "
    "o.new_state FROM outbox AS o JOIN events AS e ON e.id = o.event_id "
    "WHERE o.silence_id = %s AND o.status = %s AND e.kind = 'condition' AND EXISTS ("
    "SELECT 1 FROM conditions AS c WHERE c.subject = e.job_key AND c.name = "
    "CASE WHEN jsonb_typeof(e.fields) = 'object' THEN e.fields ->> 'condition' END) "
    "ORDER BY o.id"
)
