"""What every table mixin of `PgStore` works over: the connection pool, its transactions, the
one translation of psycopg's errors to `StoreError`, the fence, and the hook for unreadable
rows (`PgStore` fills them in)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from watcher.core.errors import StoreError
from watcher.core.lease import POLLER
from watcher.stores.dialect import clean
from watcher.stores.lease_table import check_fence
from watcher.stores.tables import OnUnreadable

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
#: Seconds the idle connections may take to be tested after one broke.
CHECK_TIMEOUT = 2.0


class PgTables:
    """The base of the table mixins: declarations filled in by `PgStore`, and the helpers."""

    _pool: AsyncConnectionPool[Connection]
    _on_unreadable: OnUnreadable
    _fence: int | None = None
    #: Seconds a transaction may idle holding locks, and a lease check wait for one.
    hold_timeout: float = 5.0
    #: The database as logs and errors show it: no password, ever.
    display: str = "postgresql"

    @asynccontextmanager
    async def _tx(self, action: str = "write") -> AsyncIterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._errors(action):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    yield conn
            except psycopg.OperationalError:
                await self._drop_broken()
                raise

    @asynccontextmanager
    async def _conn(self, action: str = "read") -> AsyncIterator[Connection]:
        """A connection for reads (autocommit: each statement on its own)."""
        with self._errors(action):
            try:
                async with self._pool.connection() as conn:
                    yield conn
            except psycopg.OperationalError:
                await self._drop_broken()
                raise

    async def _rows(self, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read."""
        async with self._conn() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

    async def _drop_broken(self) -> None:
        """A connection broke (the server restarted, or cut it): test the idle ones at once
        and replace the dead, so one failed call is the whole cost. (The pool's own check
        before each use backs off 1, 2, 4 s per dead connection: seconds a leader lacks.)"""
        with anyio.move_on_after(CHECK_TIMEOUT), contextlib.suppress(psycopg.Error, PoolTimeout):
            await self._pool.check()

    def fence(self, epoch: int | None) -> None:
        """See `ports.StateRepo.fence`."""
        self._fence = epoch

    async def _check_fence(self, conn: Connection) -> None:
        """Inside a poll's write transaction: refuse it when the epoch has moved on.

        FOR SHARE holds the lease row until the transaction ends, so a takeover (an UPDATE of
        the row) waits for this write, and every write after the takeover sees the new epoch.
        """
        if self._fence is None:
            return
        cursor = await conn.execute(
            "SELECT holder, epoch FROM leases WHERE name = %s FOR SHARE", (POLLER,)
        )
        check_fence(await cursor.fetchone(), self._fence)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        # The one translation to the error tree: nothing but StoreError leaves the store.
        try:
            yield
        except StoreError:
            raise
        except PoolTimeout:
            raise StoreError(
                f"cannot {action} state database {self.display}: no connection (timed out)"
            ) from None
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot {action} state database {self.display}: {reason(exc)}"
            ) from None


def reason(exc: Exception) -> str:
    """A psycopg error as one line (its first line: the rest is context and hints)."""
    text = str(exc).strip().splitlines()
    return " ".join(text[0].split()) if text else type(exc).__name__


__all__ = ["CHECK_TIMEOUT", "Connection", "PgTables", "clean", "reason"]
