"""The state database from the settings: SQLite (one process per file) or PostgreSQL
(several replicas on one database). Part of the composition root, with `app`."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeAlias

import structlog

from watcher import logs
from watcher.config import WatcherSettings
from watcher.core.lease import POLLER, lease_ttl
from watcher.stores.aio import AsyncStore
from watcher.stores.lock import exclusive
from watcher.stores.pg import url as pg_url
from watcher.stores.tables import OnUnreadable
from watcher.web.health import Health

if TYPE_CHECKING:
    from watcher.stores.pg.store import PgStore

log = structlog.get_logger("watcher")

#: The state database, on either backend (the CLI reads `status` and `history` through it).
StateDb: TypeAlias = "AsyncStore | PgStore"


@asynccontextmanager
async def open_state(
    settings: WatcherSettings,
    *,
    migrate: bool = True,
    health: Health | None = None,
    on_unreadable: OnUnreadable | None = None,
) -> AsyncIterator[StateDb]:
    """The state database the settings name: PostgreSQL with `watcher.state_url`, else the
    SQLite file at `watcher.state_path`. Closed on exit; no lock taken (see `exclusive_use`).
    Rows that cannot be read are logged, or told to `on_unreadable` (the CLI lists them).

    Raises:
        StoreError: it cannot be opened, or (`migrate=False`) its schema is behind.
    """
    told = on_unreadable or _row_unreadable
    url = settings.state_url
    if url is not None:
        # psycopg is imported only when used: SQLite's daemons and the CLI start without it.
        from watcher.stores.pg.store import PgStore

        dsn = url.get_secret_value()
        logs.add_secrets([dsn, *filter(None, [pg_url.password(dsn)])])
        # A transaction idle past half a lease is a frozen replica's: the server ends it.
        hold = max(1.0, lease_ttl(settings.poll_interval) / 2)
        pg = await PgStore.open(dsn, on_unreadable=told, migrate=migrate, hold_timeout=hold)
        try:
            yield pg
        finally:
            await pg.aclose()
        return
    store = await AsyncStore.open(
        settings.state_path,
        on_unreadable=told,
        on_lost=functools.partial(_state_lost, health),
        migrate=migrate,
    )
    with store.sync:
        yield store


@asynccontextmanager
async def exclusive_use(store: StateDb) -> AsyncIterator[None]:
    """One process per SQLite file: hold its lock, and void what a dead process left (its
    claims, its lease). Several replicas share a PostgreSQL database: nothing to do."""
    if not isinstance(store, AsyncStore):
        yield
        return
    with exclusive(store.sync.path):
        await store.release_claims()
        lease = await store.lease(POLLER)
        if lease is not None:
            await store.release_lease(POLLER, lease.holder)
        yield


def _row_unreadable(row: str, error: str) -> None:
    # Once per row: an outbox row is quarantined (a notification lost: error), a job row is
    # re-baselined and a flag taken as unset (warnings).
    if row.startswith("outbox"):
        log.error("store.row_unreadable", row=row, error=error)
    else:
        log.warning("store.row_unreadable", row=row, error=error)


def _state_lost(health: Health | None, reason: str) -> None:
    log.error("store.file_lost", error=reason)
    if health is not None:
        health.fail(reason)
