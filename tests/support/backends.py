"""Both state backends behind one fixture, for the contract suite (`tests/contract/test_contract_*.py`):
every test there runs on SQLite and on a real PostgreSQL, and must pass on both.

`stores` opens stores on one database (a SQLite file, or a PostgreSQL schema of the test's
own, dropped afterwards): two opened from it are two replicas sharing it. `any_store` is
the first of them.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from watcher.stores.aio import AsyncStore
from watcher.stores.pg.store import PgStore

Store = AsyncStore | PgStore
OpenStore = Callable[..., Awaitable[Store]]
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn."""
    return str(request.param)


@pytest.fixture
async def stores(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[OpenStore]:
    """Open stores on this test's database; each is closed after the test."""
    opened: list[Store] = []
    dsn = ""
    schema = f"test_{secrets.token_hex(4)}"
    if backend == "postgresql":
        dsn = request.getfixturevalue("pg_dsn")
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))

    async def open_store(**options: Any) -> Store:
        store: Store
        if backend == "postgresql":
            store = await PgStore.open(dsn, schema=schema, **options)
        else:
            store = await AsyncStore.open(tmp_path / "state.db", **options)
        opened.append(store)
        return store

    try:
        yield open_store
    finally:
        for store in opened:
            await store.aclose()
        if backend == "postgresql":
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
async def any_store(stores: OpenStore) -> Store:
    """One store on this test's database, on each backend."""
    return await stores()
