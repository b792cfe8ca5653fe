"""`PgStore`: the state database on PostgreSQL, for several replicas on one database.

The same ports and the same guarantees as the SQLite store (`stores.aio.AsyncStore`), proved
by one contract suite (`tests/test_store_contract*.py`) run on both. Native async: psycopg 3
through a `psycopg_pool.AsyncConnectionPool`; a connection cut by the server
(`pg_terminate_backend`, a restart) costs one failed call (then the idle ones are tested and
the dead replaced at once: `PgDb._drop_broken`), not the daemon. Errors leave as one-line
`StoreError`s naming the database without its password.

`PgStore` opens the pool (`pg_tables.PgDb`), migrates the schema (`migrations`) and composes
the tables over it, one object each (`state`, `pg_outbox`, `pg_silences`, `pg_history`,
`pg_digests`, `pg_leases`); each method of the store is one of a table's (`Forward`).
"""

from __future__ import annotations

from typing import Any, Final, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from watcher.core.errors import StoreError
from watcher.stores.forward import Forward
from watcher.stores.lease_table import Fence
from watcher.stores.pg.migrations import MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION
from watcher.stores.pg.pg_digests import PgDigests
from watcher.stores.pg.pg_history import PgHistory
from watcher.stores.pg.pg_leases import PgLeases
from watcher.stores.pg.pg_outbox import PgOutbox
from watcher.stores.pg.pg_silences import PgSilences
from watcher.stores.pg.pg_tables import Connection, PgDb, reason
from watcher.stores.pg.state import PgState
from watcher.stores.pg.url import display_url
from watcher.stores.tables import OnUnreadable, ignore

#: Seconds to open one connection, and to wait for one from the pool.
CONNECT_TIMEOUT = 5
POOL_TIMEOUT = 10.0
#: A server that goes silent (a partition: no reset) ends a connection within about 30 s,
#: not the kernel's 15 minutes; the URL's own values win.
TCP_DEFAULTS: Final = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
#: Seconds a transaction may sit idle holding locks (see `open`): far above any healthy
#: transaction's pauses, far below a lease. The daemon passes half the lease time instead.
HOLD_TIMEOUT = 5.0
#: Connections per replica: the poller's writes, the dispatcher's claims and settles, the
#: leadership renewals and a read or two; more would only queue at the database.
POOL_SIZE = 4


class PgStore:
    """The `StateRepo`, `Outbox` and `Leases` ports on PostgreSQL. Open with `PgStore.open`,
    close with `aclose()`."""

    #: Several replicas share the database: a claim left at start may be a live replica's.
    single_process = False
    migrated_from: int = 0
    schema_version = SCHEMA_VERSION

    def __init__(
        self,
        pool: AsyncConnectionPool[Connection],
        *,
        display: str,
        hold_timeout: float = HOLD_TIMEOUT,
        on_unreadable: OnUnreadable = ignore,
    ) -> None:
        self.db = PgDb(
            pool=pool, display=display, hold_timeout=hold_timeout, on_unreadable=on_unreadable
        )
        self.write_fence = Fence()
        self.lease_table = PgLeases(self.db, self.write_fence)
        self.state_table = PgState(self.db, self.lease_table)
        self.silence_table = PgSilences(self.db)
        self.outbox_table = PgOutbox(self.db, self.silence_table)
        self.history_table = PgHistory(self.db, self.lease_table)
        self.digest_table = PgDigests(self.db)

    @property
    def display(self) -> str:
        """The database as logs and errors show it: no password, ever."""
        return self.db.display

    @property
    def hold_timeout(self) -> float:
        """Seconds a transaction may idle holding locks, and a lease check wait for one."""
        return self.db.hold_timeout

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        schema: str | None = None,
        on_unreadable: OnUnreadable = ignore,
        migrate: bool = True,
        pool_size: int = POOL_SIZE,
        hold_timeout: float = HOLD_TIMEOUT,
    ) -> Self:
        """Connect to the database at `url` (in PostgreSQL `schema`, when given: the tests
        use one each) and bring its schema up to date (with `migrate=False`, refuse one that
        is behind instead).

        `hold_timeout` bounds how long one of this store's transactions may hold its locks
        while idle (a replica frozen mid-transaction: SIGSTOP, a paused VM): the server ends
        that session after it, so a frozen leader cannot keep the lease row locked and block
        the takeover; a lease check waits for a lock at most that long too.

        Raises:
            StoreError: it cannot be reached, was written by a newer fireworks-watcher, or
                (`migrate=False`) needs a migration.
        """
        display = display_url(url)
        try:
            params = conninfo_to_dict(url)
            given = str(params.get("options") or "")
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"cannot open state database {display}: {reason(exc)}") from None
        # The URL's own options (`?options=-csearch_path%3Dwatcher`) are kept, then ours.
        held = max(1, round(hold_timeout * 1000))
        ours = f"-c timezone=UTC -c idle_in_transaction_session_timeout={held}" + (
            f" -c search_path={schema}" if schema else ""
        )
        options = f"{given} {ours}".strip()
        kwargs: dict[str, Any] = {
            **{k: v for k, v in TCP_DEFAULTS.items() if k not in params},
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT,
            "options": options,
        }
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs=kwargs,
            open=False,
            timeout=POOL_TIMEOUT,
            name="fireworks-watcher",
        )
        store = cls(pool, display=display, hold_timeout=hold_timeout, on_unreadable=on_unreadable)
        try:
            # One connection first, on its own: its error says why (a wrong password, no
            # such database), where the pool's would only say it timed out.
            with store.db.errors("open"):
                probe = await psycopg.AsyncConnection.connect(url, **kwargs)
                await probe.close()
                await pool.open(wait=True, timeout=POOL_TIMEOUT)
            store.migrated_from = await store._migrate(apply=migrate)
        except BaseException:
            await pool.close()
            raise
        return store

    async def aclose(self) -> None:
        """Close the pool; further calls raise `StoreError`."""
        await self.db.pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- the tables' methods ----------------------------------------------------------------

    last = Forward("state_table", PgState.last)
    last_all = Forward("state_table", PgState.last_all)
    record = Forward("state_table", PgState.record)
    flag = Forward("state_table", PgState.flag)
    flags = Forward("state_table", PgState.flags)
    forget = Forward("state_table", PgState.forget)
    since_all = Forward("state_table", PgState.since_all)
    polled_all = Forward("state_table", PgState.polled_all)
    open_conditions = Forward("state_table", PgState.open_conditions)
    reminder_times = Forward("state_table", PgState.reminder_times)

    due = Forward("outbox_table", PgOutbox.due)
    claim = Forward("outbox_table", PgOutbox.claim)
    claim_target = Forward("outbox_table", PgOutbox.claim_target)
    release_claims = Forward("outbox_table", PgOutbox.release_claims)
    release = Forward("outbox_table", PgOutbox.release)
    next_due_at = Forward("outbox_table", PgOutbox.next_due_at)
    outbox_stats = Forward("outbox_table", PgOutbox.outbox_stats)
    undelivered = Forward("outbox_table", PgOutbox.undelivered)
    mark_delivered = Forward("outbox_table", PgOutbox.mark_delivered)
    mark_retry = Forward("outbox_table", PgOutbox.mark_retry)
    mark_dead = Forward("outbox_table", PgOutbox.mark_dead)
    mark_silenced = Forward("outbox_table", PgOutbox.mark_silenced)
    hold = Forward("outbox_table", PgOutbox.hold)
    settle_many = Forward("outbox_table", PgOutbox.settle_many)
    announce_after_silences = Forward("outbox_table", PgOutbox.announce_after_silences)
    prune = Forward("outbox_table", PgOutbox.prune)

    add_silence = Forward("silence_table", PgSilences.add_silence)
    expire_silence = Forward("silence_table", PgSilences.expire_silence)
    silences = Forward("silence_table", PgSilences.silences)

    history = Forward("history_table", PgHistory.history)
    silenced = Forward("history_table", PgHistory.silenced)
    prune_history = Forward("history_table", PgHistory.prune_history)

    digest_events = Forward("digest_table", PgDigests.digest_events)

    fence = Forward("write_fence", Fence.fence)
    acquire_lease = Forward("lease_table", PgLeases.acquire_lease)
    release_lease = Forward("lease_table", PgLeases.release_lease)
    lease = Forward("lease_table", PgLeases.lease)
    beat = Forward("lease_table", PgLeases.beat)
    replicas = Forward("lease_table", PgLeases.replicas)

    async def _migrate(self, *, apply: bool) -> int:
        """Create or upgrade the schema, once however many replicas start together; refuse a
        database from a newer version (and, unless `apply`, one that is behind). Returns the
        version found."""
        async with self.db.tx("open") as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"cannot open state database {self.display}: written by a newer "
                    f"fireworks-watcher (schema {version}, this one knows {SCHEMA_VERSION})"
                )
            if not apply and version < SCHEMA_VERSION:
                raise StoreError(
                    f"state database {self.display} is at schema {version}, this "
                    f"fireworks-watcher needs {SCHEMA_VERSION}: run `fireworks-watcher migrate`"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                await conn.execute(sql.SQL(script))
                await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
        return version


__all__ = ["PgStore", "psycopg"]
