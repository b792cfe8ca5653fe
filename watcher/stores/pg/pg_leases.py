"""The leadership lease and heartbeats on PostgreSQL, with the semantics of the SQLite
reference (`stores.lease_table`) and one clock for every replica: the database server's
(`clock_timestamp()`), so the hosts' clocks may disagree without two leaders.

Taking the lease is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE` statement: the row is
locked while it is decided, so of replicas racing for an expired lease exactly one gets it,
at the next epoch, and the others see it held. A poll's write holds the row `FOR SHARE`
(`PgLeases.check_fence`, called in the other tables' writes too), so a takeover waits for a
write under the old epoch to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from watcher.core.errors import StoreError
from watcher.core.lease import POLLER, Lease, Replica
from watcher.stores.lease_table import Fence, lease_row, replica_rows
from watcher.stores.pg.pg_tables import Connection, PgDb, clean
from watcher.stores.rows import shown

_LEASE_COLUMNS = "name, holder, epoch, expires_at, renewed_at"

# The holder renews (same epoch, even after its expiry, as on SQLite); anyone else takes an
# expired lease at the next epoch; a live lease of another holder is left as it is (then no
# row is returned). The WHERE is evaluated on the row as locked, after any racer committed.
_ACQUIRE = (
    "WITH clock AS (SELECT clock_timestamp() AS now) "
    "INSERT INTO leases AS l (name, holder, epoch, expires_at, renewed_at) "
    "SELECT %(name)s, %(holder)s, 1, now + %(ttl)s, now FROM clock "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
    "epoch = l.epoch + CASE WHEN l.holder = excluded.holder THEN 0 ELSE 1 END, "
    "expires_at = excluded.expires_at, renewed_at = excluded.renewed_at "
    "WHERE l.holder = excluded.holder OR l.expires_at <= clock_timestamp() "
    f"RETURNING {_LEASE_COLUMNS}"
)

# End the sessions of this role that hold the lease table for a write (FOR SHARE in a fence
# check, or an update) in a transaction older than hold_timeout, while the lease has expired:
# a healthy write lasts milliseconds, and a live lease's holder is never touched.
_END_STUCK = (
    "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a "
    "WHERE a.pid <> pg_backend_pid() AND a.usename = current_user "
    "AND a.datname = current_database() "
    "AND a.xact_start < clock_timestamp() - %(held)s "
    "AND EXISTS (SELECT 1 FROM pg_locks k WHERE k.pid = a.pid AND k.granted "
    "AND k.relation = 'leases'::regclass AND k.mode IN ('RowShareLock', 'RowExclusiveLock')) "
    "AND EXISTS (SELECT 1 FROM leases WHERE name = %(name)s AND expires_at <= clock_timestamp())"
)


@dataclass
class PgLeases:
    """acquire_lease, release_lease, lease, beat, replicas over the store's `PgDb`, and the
    check of the writes it `fenced`."""

    db: PgDb
    fenced: Fence

    async def check_fence(self, conn: Connection) -> None:
        """Inside a poll's write transaction (the other tables' too): refuse it when the
        epoch has moved on.

        FOR SHARE holds the lease row until the transaction ends, so a takeover (an UPDATE of
        the row) waits for this write, and every write after the takeover sees the new epoch.
        """
        if self.fenced.epoch is not None:
            cursor = await conn.execute(
                "SELECT holder, epoch FROM leases WHERE name = %s FOR SHARE", (POLLER,)
            )
            self.fenced.check(await cursor.fetchone())

    async def acquire_lease(self, name: str, holder: str, *, ttl: timedelta) -> Lease:
        """See `ports.Leases.acquire_lease`."""
        params = {"name": clean(name), "holder": clean(holder), "ttl": ttl}
        async with self.db.tx() as conn:
            # Never wait long on the row: a lock held by a frozen replica is ended by the
            # server (`idle_in_transaction_session_timeout`); the next check tries again.
            wait = f"{max(1, round(self.db.hold_timeout * 1000))}ms"
            await conn.execute("SELECT set_config('lock_timeout', %s, true)", (wait,))
            # A replica frozen mid-write holds the row, and the idle timeout does not reach
            # it when it froze inside a pipeline (before its Sync): end it first, if its
            # lease is over, so the takeover does not wait for the thaw.
            await conn.execute(
                _END_STUCK, {"name": clean(name), "held": timedelta(seconds=self.db.hold_timeout)}
            )
            cursor = await conn.execute(_ACQUIRE, params)
            row = await cursor.fetchone()
            if row is None:
                cursor = await conn.execute(
                    f"SELECT {_LEASE_COLUMNS} FROM leases WHERE name = %s", (params["name"],)
                )
                row = await cursor.fetchone()
        if row is None:  # deleted between the two statements: nobody holds it
            raise StoreError(f"cannot read the lease {shown(name)}: its row was deleted")
        return lease_row(row)

    async def release_lease(self, name: str, holder: str) -> None:
        """See `ports.Leases.release_lease`."""
        async with self.db.tx() as conn:
            await conn.execute(
                "UPDATE leases SET expires_at = clock_timestamp() WHERE name = %s AND holder = %s",
                (clean(name), clean(holder)),
            )

    async def lease(self, name: str) -> Lease | None:
        """The lease row, or None when no replica ever took it."""
        async with self.db.conn() as conn:
            cursor = await conn.execute(
                f"SELECT {_LEASE_COLUMNS} FROM leases WHERE name = %s", (clean(name),)
            )
            row = await cursor.fetchone()
        return None if row is None else lease_row(row)

    async def beat(self, holder: str, *, role: str, started_at: datetime) -> None:
        """See `ports.Leases.beat`."""
        if started_at.utcoffset() is None:
            raise StoreError(f"cannot write state database {self.db.display}: naive started_at")
        async with self.db.tx() as conn:
            await conn.execute(
                "INSERT INTO replicas (holder, role, started_at, seen_at) "
                "VALUES (%s, %s, %s, clock_timestamp()) "
                "ON CONFLICT (holder) DO UPDATE SET role = excluded.role, "
                "seen_at = excluded.seen_at",
                (clean(holder), clean(role), started_at),
            )

    async def replicas(self, *, seen_within: timedelta) -> list[Replica]:
        """See `ports.Leases.replicas`."""
        async with self.db.conn() as conn:
            # Ordered by the characters (COLLATE "C"), as SQLite orders them.
            cursor = await conn.execute(
                "SELECT holder, role, started_at, seen_at FROM replicas "
                "WHERE seen_at >= clock_timestamp() - %s "
                "ORDER BY role <> 'leader', holder COLLATE \"C\"",
                (seen_within,),
            )
            rows = await cursor.fetchall()
        return replica_rows(rows, self.db.on_unreadable)
