"""A real PostgreSQL server for the tests (the groundwork of issue 12's backend): it is there,
the test role may create and drop schemas, and `FOR UPDATE SKIP LOCKED` hands one row to one
claimer at a time, which the outbox claims on PostgreSQL will rest on."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool


@pytest.fixture
async def schema(pg_dsn: str) -> AsyncIterator[str]:
    """A schema of this test's own, dropped afterwards."""
    name = f"test_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        try:
            yield name
        finally:
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


async def test_the_server_answers(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        row = await (
            await conn.execute("SELECT current_setting('server_version_num')::int")
        ).fetchone()

    assert row is not None
    assert row[0] >= 130000  # PostgreSQL 13 or newer


async def test_skip_locked_gives_a_row_to_one_claimer(pg_dsn: str, schema: str) -> None:
    """Two claimers at once: the first holds the oldest due row, the second skips it and
    takes the next; with both held, a third gets none."""
    table = sql.Identifier(schema, "outbox")
    claim = sql.SQL(
        "SELECT id FROM {} WHERE status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    ).format(table)
    async with AsyncConnectionPool(pg_dsn, min_size=3, max_size=3, open=False) as pool:
        async with pool.connection() as setup:
            await setup.execute(
                sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, status text NOT NULL)").format(
                    table
                )
            )
            await setup.execute(
                sql.SQL("INSERT INTO {} (status) VALUES ('pending'), ('pending')").format(table)
            )
        async with (
            pool.connection() as first,
            pool.connection() as second,
            pool.connection() as third,
            first.transaction(),
            second.transaction(),
            third.transaction(),
        ):
            taken = await (await first.execute(claim)).fetchall()
            skipped = await (await second.execute(claim)).fetchall()
            none = await (await third.execute(claim)).fetchall()

    assert ([(1,)], [(2,)], []) == (taken, skipped, none)
