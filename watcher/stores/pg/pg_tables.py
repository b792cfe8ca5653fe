"""What the tables of `PgStore` share: `PgDb`, the connection pool with its transactions, the
one translation of psycopg's errors to `StoreError`, the database's display name, the idle
hold timeout and the hook for unreadable rows. Each table takes the `PgDb` it works over."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from watcher.core.errors import StoreError
from watcher.stores.dialect import clean
from watcher.stores.tables import OnUnreadable

Connection = psycopg.AsyncConnection[tuple[Any, ...]]
#: Seconds the idle connections may take to be tested after one broke.
CHECK_TIMEOUT = 2.0


@dataclass(frozen=True, kw_only=True)
class PgDb:
    """The pool of one PostgreSQL database, and what its tables do with it."""

    pool: AsyncConnectionPool[Connection]
    #: The database as logs and errors show it: no password, ever.
    display: str
    #: Seconds a transaction may idle holding locks, and a lease check wait for one.
    hold_timeout: float
    on_unreadable: OnUnreadable

    @asynccontextmanager
    async def tx(self, action: str = "write") -> AsyncIterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.errors(action):
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    yield conn
            except psycopg.OperationalError:
                await self._drop_broken()
                raise

    @asynccontextmanager
    async def conn(self, action: str = "read") -> AsyncIterator[Connection]:
        """A connection for reads (autocommit: each statement on its own)."""
        with self.errors(action):
            try:
                async with self.pool.connection() as conn:
                    yield conn
            except psycopg.OperationalError:
                await self._drop_broken()
                raise

    async def rows(self, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read."""
        async with self.conn() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

    async def _drop_broken(self) -> None:
        """A connection broke (the server restarted, or cut it): test the idle ones at once
        and replace the dead, so one failed call is the whole cost. (The pool's own check
        before each use backs off 1, 2, 4 s per dead connection: seconds a leader lacks.)"""
        with anyio.move_on_after(CHECK_TIMEOUT), contextlib.suppress(psycopg.Error, PoolTimeout):
            await self.pool.check()

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """The one translation to the error tree: nothing but StoreError leaves the store."""
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


__all__ = ["CHECK_TIMEOUT", "Connection", "PgDb", "clean", "reason"]
