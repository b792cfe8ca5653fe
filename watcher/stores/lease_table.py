"""The leadership of `StateStore` (its `lease_table`): the lease row, the replicas' heartbeats
and the check of the fence on a poll's writes (the `Fence`, both backends'). One SQLite file
has one daemon (`stores.lock`), so the lease is always its own; the same contract as the
PostgreSQL store keeps one runtime for both."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from watcher.core.clock import utcnow
from watcher.core.errors import Fenced, StoreError
from watcher.core.lease import POLLER, Lease, Replica
from watcher.stores.rows import RowError, shown, text, ts, when
from watcher.stores.tables import Db, OnUnreadable

_LEASE_COLUMNS = "name, holder, epoch, expires_at, renewed_at"


# The store's clock: SQLite has no server, so the host's (one host by construction).
_now = utcnow


@dataclass
class Fence:
    """The epoch a replica's poll writes under (`ports.StateRepo.fence`), None when unfenced:
    one per store (both backends), checked by its lease table inside each such write."""

    epoch: int | None = None

    def fence(self, epoch: int | None) -> None:
        """See `ports.StateRepo.fence`."""
        self.epoch = epoch

    def check(self, row: Sequence[object] | None) -> None:
        """Refuse the write (`Fenced`) unless the poller lease's (holder, epoch) `row` still
        has this epoch."""
        if row is None or row[1] != self.epoch:
            holder = "nobody" if row is None else str(row[0])
            epoch = "none" if row is None else str(row[1])
            raise Fenced(
                f"the poller lease is at epoch {epoch} ({holder}), not {self.epoch}: "
                "this replica's write was refused"
            )


@dataclass
class LeaseTable:
    """Lease and heartbeats over the store's `Db`, and the check of the writes it `fenced`."""

    db: Db
    fenced: Fence

    def check_fence(self, conn: sqlite3.Connection) -> None:
        """Inside a poll's write transaction (the other tables' too): refuse it when the
        epoch has moved on."""
        if self.fenced.epoch is not None:
            self.fenced.check(
                conn.execute(
                    "SELECT holder, epoch FROM leases WHERE name = ?", (POLLER,)
                ).fetchone()
            )

    def acquire_lease(self, name: str, holder: str, *, ttl: timedelta) -> Lease:
        """See `ports.Leases.acquire_lease`."""
        now = _now()
        with self.db.write() as conn:
            row = conn.execute(
                f"SELECT {_LEASE_COLUMNS} FROM leases WHERE name = ?", (name,)
            ).fetchone()
            current = None if row is None else lease_row(row)
            if current is None:
                conn.execute(
                    "INSERT INTO leases (name, holder, epoch, expires_at, renewed_at) "
                    "VALUES (?, ?, 1, ?, ?)",
                    (name, holder, ts(now + ttl), ts(now)),
                )
            elif current.held_by(holder) or current.expires_at <= now:
                epoch = current.epoch + (0 if current.held_by(holder) else 1)
                conn.execute(
                    "UPDATE leases SET holder = ?, epoch = ?, expires_at = ?, renewed_at = ? "
                    "WHERE name = ?",
                    (holder, epoch, ts(now + ttl), ts(now), name),
                )
            else:
                return current
            found = conn.execute(
                f"SELECT {_LEASE_COLUMNS} FROM leases WHERE name = ?", (name,)
            ).fetchone()
        return lease_row(found)

    def release_lease(self, name: str, holder: str) -> None:
        """See `ports.Leases.release_lease`."""
        with self.db.write() as conn:
            conn.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
                (ts(_now()), name, holder),
            )

    def lease(self, name: str) -> Lease | None:
        """The lease row, or None when no replica ever took it."""
        with self.db.reading() as conn:
            row = conn.execute(
                f"SELECT {_LEASE_COLUMNS} FROM leases WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else lease_row(row)

    def beat(self, holder: str, *, role: str, started_at: datetime) -> None:
        """See `ports.Leases.beat`."""
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO replicas (holder, role, started_at, seen_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (holder) DO UPDATE SET role = excluded.role, "
                "seen_at = excluded.seen_at",
                (holder, role, ts(started_at), ts(_now())),
            )

    def replicas(self, *, seen_within: timedelta) -> list[Replica]:
        """See `ports.Leases.replicas`."""
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT holder, role, started_at, seen_at FROM replicas WHERE seen_at >= ? "
                "ORDER BY role != 'leader', holder",
                (ts(_now() - seen_within),),
            ).fetchall()
        return replica_rows(rows, self.db.on_unreadable)


def lease_row(row: Sequence[object]) -> Lease:
    # A lease that cannot be read decides nothing: the replica stays standby, and says why.
    name, holder, epoch, expires_at, renewed_at = row
    try:
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise RowError(f"leases.epoch: {shown(epoch)} is not a count")
        return Lease(
            text("leases.name", name),
            text("leases.holder", holder),
            epoch,
            when("leases.expires_at", expires_at),
            when("leases.renewed_at", renewed_at),
        )
    except RowError as exc:
        raise StoreError(f"cannot read the lease {shown(name)}: {exc}") from None


def replica_rows(rows: Iterable[Sequence[object]], on_unreadable: OnUnreadable) -> list[Replica]:
    """The replicas of (holder, role, started_at, seen_at) rows; one that does not decode
    costs only itself (told to `on_unreadable`)."""
    found: list[Replica] = []
    for holder, role, started_at, seen_at in rows:
        try:
            found.append(
                Replica(
                    text("replicas.holder", holder),
                    text("replicas.role", role),
                    when("replicas.started_at", started_at),
                    when("replicas.seen_at", seen_at),
                )
            )
        except RowError as exc:
            on_unreadable(f"replicas {shown(holder)}", str(exc))
    return found
