"""What only the PostgreSQL store has: a password in its URL, a server that may refuse or
be unreachable, schema migrations shared by replicas, connections the server may cut, and
the storing of text PostgreSQL cannot hold (NUL)."""

from __future__ import annotations

import contextlib
import secrets
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import anyio
import psycopg
import pytest
from psycopg import sql
from structlog.testing import capture_logs

from watcher.core.decision import Decision
from watcher.core.delivery import Event, OutboxEntry
from watcher.core.errors import StoreError
from watcher.core.lease import POLLER, Lease
from watcher.core.model import JobKind, JobRef, JobSnapshot
from watcher.runtime.leadership import Leadership
from watcher.stores.pg.migrations import SCHEMA_VERSION
from watcher.stores.pg.store import PgStore
from watcher.stores.rows import RowError, when

pytestmark = pytest.mark.anyio
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def schema(pg_dsn: str) -> AsyncIterator[str]:
    """An empty schema of this test's own, dropped afterwards."""
    name = f"test_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        try:
            yield name
        finally:
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
async def store(pg_dsn: str, schema: str) -> AsyncIterator[PgStore]:
    """A store on this test's schema, closed afterwards."""
    async with await PgStore.open(pg_dsn, schema=schema) as opened:
        yield opened


def with_netloc(dsn: str, *, password: str | None = None, port: int | None = None) -> str:
    """`dsn` with another password or port."""
    parts = urlsplit(dsn)
    user = parts.username or ""
    secret = parts.password if password is None else password
    where = f"{parts.hostname}:{parts.port if port is None else port}"
    return urlunsplit(parts._replace(netloc=f"{user}:{secret}@{where}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestSecrets:
    async def test_a_wrong_password_is_one_line_naming_the_host(self, pg_dsn: str) -> None:
        """The server refuses; the error says so on one line, names the host and user, and
        holds neither the password tried nor the real one."""
        wrong = "Wr0ng-hunter2-pw"

        with pytest.raises(StoreError) as caught:
            await PgStore.open(with_netloc(pg_dsn, password=wrong))

        message = str(caught.value)
        assert "\n" not in message
        assert "127.0.0.1" in message
        assert "password authentication failed" in message
        assert wrong not in message
        assert str(urlsplit(pg_dsn).password) not in message

    async def test_an_unreachable_server_is_one_line_naming_the_host(self, pg_dsn: str) -> None:
        dsn = with_netloc(pg_dsn, port=free_port())

        with pytest.raises(StoreError) as caught:
            await PgStore.open(dsn)

        message = str(caught.value)
        assert "\n" not in message
        assert f"127.0.0.1:{urlsplit(dsn).port}" in message
        assert str(urlsplit(pg_dsn).password) not in message

    async def test_display_shows_no_password(self, store: PgStore, pg_dsn: str) -> None:
        password = str(urlsplit(pg_dsn).password)

        assert password not in store.display
        assert store.display.startswith("postgresql://watcher@127.0.0.1:")


class TestMigrations:
    async def test_migrate_false_refuses_an_empty_schema(self, pg_dsn: str, schema: str) -> None:
        with pytest.raises(StoreError, match="run `fireworks-watcher migrate`"):
            await PgStore.open(pg_dsn, schema=schema, migrate=False)

        async with await PgStore.open(pg_dsn, schema=schema) as migrated:
            assert 0 == migrated.migrated_from
        async with await PgStore.open(pg_dsn, schema=schema, migrate=False) as current:
            assert SCHEMA_VERSION == current.migrated_from

    async def test_replicas_opening_together_migrate_once(self, pg_dsn: str, schema: str) -> None:
        """Three replicas start at once on an empty schema: one migrates, the others find
        it done (the advisory lock), and each version is applied once."""
        opened: list[PgStore] = []

        async def open_one() -> None:
            opened.append(await PgStore.open(pg_dsn, schema=schema))

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(open_one)
            async with opened[0].db.conn() as conn:
                cursor = await conn.execute(
                    "SELECT version, count(*) FROM schema_migrations GROUP BY version "
                    "ORDER BY version"
                )
                rows = await cursor.fetchall()
        finally:
            for each in opened:
                await each.aclose()

        assert [(v, 1) for v in range(1, SCHEMA_VERSION + 1)] == rows
        assert [0, SCHEMA_VERSION, SCHEMA_VERSION] == sorted(s.migrated_from for s in opened)


class TestConnections:
    @pytest.mark.parametrize(
        ("query", "expected"), [("", "30000"), ("tcp_user_timeout=5000", "5000")]
    )
    async def test_a_silent_server_is_given_up_on_by_tcp(
        self, pg_dsn: str, schema: str, query: str, expected: str
    ) -> None:
        """Keepalives and a TCP user timeout on every connection, so a partition ends it in
        about 30 s rather than the kernel's 15 minutes; a value in the URL wins."""
        sep = "&" if "?" in pg_dsn else "?"
        url = f"{pg_dsn}{sep}{query}" if query else pg_dsn
        opened = await PgStore.open(url, schema=schema)
        async with opened, opened.db.pool.connection() as conn:
            params = conn.info.get_parameters()

        assert (params["tcp_user_timeout"], params["keepalives_idle"]) == (expected, "10")

    @pytest.mark.parametrize("pool_size", [1, 3])
    async def test_a_killed_connection_costs_at_most_one_call(
        self, pg_dsn: str, schema: str, pool_size: int
    ) -> None:
        """The server ends every connection of the pool (pg_terminate_backend, as a restart
        or a failover would): at most the next call fails, as a StoreError, and the pool
        then hands out fresh connections."""
        snapshot = JobSnapshot(ref=JobRef(JobKind.SFT, "a"), account_id="acme", state="RUNNING")
        async with await PgStore.open(pg_dsn, schema=schema, pool_size=pool_size) as store:
            await store.record(Decision([snapshot], [], now=T0))
            pids = await pool_pids(store, pool_size)
            await terminate(pg_dsn, pids)

            failures: list[str] = []
            for _ in range(3):
                try:
                    assert {"sft/a": snapshot} == await store.last_all()
                except StoreError as exc:
                    failures.append(str(exc))

            assert len(failures) <= 1, failures
            assert all("\n" not in f and "127.0.0.1" in f for f in failures)
            assert set(pids).isdisjoint(await pool_pids(store, pool_size))
            await store.record(Decision([snapshot], [], now=T0 + timedelta(seconds=1)))


async def pool_pids(store: PgStore, size: int) -> list[int]:
    """The server processes behind every connection of the store's pool (all held at once,
    so each is a different one)."""
    pids: list[int] = []

    async def hold(got: anyio.Event, release: anyio.Event) -> None:
        async with store.db.conn() as conn:
            row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
            assert row is not None
            pids.append(int(row[0]))
            got.set()
            await release.wait()

    release = anyio.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(size):
            got = anyio.Event()
            tg.start_soon(hold, got, release)
            await got.wait()
        release.set()
    return pids


async def terminate(dsn: str, pids: list[int]) -> None:
    """End the server processes `pids`, waiting (up to 5 s each) until each is gone."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT bool_and(pg_terminate_backend(pid, 5000)) FROM unnest(%s::int[]) AS pid",
            (pids,),
        )
        assert (True,) == await cursor.fetchone()


class TestText:
    async def test_nul_is_stored_as_u_fffd_everywhere(self, store: PgStore) -> None:
        """A NUL from the API in a snapshot, an event's fields and an entry's text is stored
        (PostgreSQL's text and jsonb refuse it) as U+FFFD."""
        ev = Event("sft/a", "RUNNING", "FAILED", T0, (("message", "x\x00y"),))
        entry = OutboxEntry("sft/a", "team", "k", "json://h\x00", "RUNNING", "FAILED", T0, ev)
        hostile = JobSnapshot(
            ref=JobRef(JobKind.SFT, "a"), account_id="acme", state="FAILED", reason="r\x00"
        )

        await store.record(Decision([hostile], [entry], now=T0))

        async with store.db.conn() as conn:
            fields = await (await conn.execute("SELECT fields->>'message' FROM events")).fetchone()
            texts = await (await conn.execute("SELECT url_display FROM outbox")).fetchone()
        assert ("x\ufffdy",) == fields
        assert ("json://h\ufffd",) == texts
        assert "r\ufffd" == (await store.last_all())["sft/a"].reason

    async def test_each_entry_points_at_its_own_event(self, store: PgStore) -> None:
        """Events are inserted in one batch; each outbox row gets the id of its own event."""
        events = [
            Event(f"sft/{i}", "RUNNING", state, T0, (("n", str(i)),))
            for i, state in enumerate(["COMPLETED", "FAILED", "CANCELLED", "DELETED"])
        ]
        entries = [
            OutboxEntry(ev.job_key, channel, "k", "json://h", "RUNNING", ev.new_state, T0, ev)
            for ev in reversed(events)
            for channel in ("one", "two")
        ]

        await store.record(Decision([], entries, now=T0, events=[events[2]]))

        async with store.db.conn() as conn:
            cursor = await conn.execute(
                "SELECT o.job_key, o.new_state, e.job_key, e.new_state, e.fields->>'n' "
                "FROM outbox AS o JOIN events AS e ON e.id = o.event_id ORDER BY o.id"
            )
            rows = await cursor.fetchall()
        assert [
            (ev.job_key, ev.new_state, ev.job_key, ev.new_state, ev.job_key[4:])
            for ev in reversed(events)
            for _ in range(2)
        ] == rows

    async def test_last_reads_one_job(self, store: PgStore) -> None:
        ref = JobRef(JobKind.SFT, "a")
        await store.record(
            Decision([JobSnapshot(ref=ref, account_id="acme", state="RUNNING")], [], now=T0)
        )

        found = await store.last(ref)

        assert found is not None
        assert "RUNNING" == found.state
        assert await store.last(JobRef(JobKind.SFT, "b")) is None

    async def test_an_unreadable_snapshot_costs_only_its_row(
        self, pg_dsn: str, schema: str
    ) -> None:
        """A jobs row whose JSON is not a snapshot (written by hand) is skipped and told."""
        told: list[tuple[str, str]] = []
        async with await PgStore.open(
            pg_dsn, schema=schema, on_unreadable=lambda where, why: told.append((where, why))
        ) as store:
            good = JobSnapshot(ref=JobRef(JobKind.SFT, "a"), account_id="acme", state="RUNNING")
            await store.record(Decision([good], [], now=T0))
            async with store.db.conn() as conn:
                await conn.execute(
                    "INSERT INTO jobs (job_key, snapshot, updated_at) "
                    "VALUES ('sft/bad', '[1, 2]', now())"
                )

            assert {"sft/a": good} == await store.last_all()
        assert [where for where, _ in told] == ["jobs 'sft/bad'"]


class TestWhen:
    async def test_an_aware_datetime_is_a_time(self) -> None:
        assert T0 == when("c", T0.astimezone())

    async def test_a_naive_datetime_is_refused(self) -> None:
        with pytest.raises(RowError, match=r"c: .* has no time zone"):
            when("c", T0.replace(tzinfo=None))


@contextlib.asynccontextmanager
async def leader_and_standby(
    pg_dsn: str, schema: str, hold_timeout: float
) -> AsyncIterator[tuple[PgStore, PgStore, Lease]]:
    """Two stores on one schema: the first holds the poller lease (already expired) and is
    fenced at its epoch, as a leader about to write; the second stands by."""
    async with (
        await PgStore.open(pg_dsn, schema=schema, hold_timeout=hold_timeout) as leader,
        await PgStore.open(pg_dsn, schema=schema, hold_timeout=hold_timeout) as standby,
    ):
        old = await leader.acquire_lease(POLLER, "old", ttl=timedelta(0))
        leader.fence(old.epoch)
        yield leader, standby, old


async def test_a_leader_frozen_mid_transaction_cannot_block_the_takeover(
    pg_dsn: str, schema: str
) -> None:
    """The leader froze (SIGSTOP) inside a poll's write, holding the lease row `FOR SHARE`:
    the server ends its idle transaction after `hold_timeout`, so a standby takes the expired
    lease then, instead of waiting for as long as the leader stays frozen."""
    from watcher.core.errors import Fenced

    async with leader_and_standby(pg_dsn, schema, 0.5) as (frozen, standby, old):
        wakes = anyio.Event()
        outcome: list[BaseException] = []

        async def write_then_freeze() -> None:
            try:
                async with frozen.db.tx() as conn:
                    await frozen.lease_table.check_fence(conn)  # the row is now held FOR SHARE
                    await wakes.wait()  # frozen: the transaction idles
                    await conn.execute("SELECT 1")
            except StoreError as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write_then_freeze)
            await anyio.wait_all_tasks_blocked()
            with anyio.fail_after(10):  # without the timeout: blocked until the thaw
                taken = None
                while taken is None or taken.holder != "new":
                    try:
                        taken = await standby.acquire_lease(
                            POLLER, "new", ttl=timedelta(seconds=30)
                        )
                    except StoreError:  # lock_timeout: still held; the next check retries
                        continue
            wakes.set()

        assert taken is not None
        assert (taken.holder, taken.epoch) == ("new", old.epoch + 1)
        assert len(outcome) == 1  # the frozen write failed, and wrote nothing
        with pytest.raises(Fenced):
            await frozen.record(Decision([], [], now=T0, flags={"late": "1"}))


async def test_a_standby_waiting_on_a_frozen_leaders_lock_is_not_given_up_on(
    pg_dsn: str, schema: str
) -> None:
    """A standby's lease check may wait for the lease row's lock up to `hold_timeout` (the
    frozen leader's transaction is ended then): Leadership waits for that answer rather than
    giving the check up, which would cost the connection and slow the takeover (CI saw 2.07 s
    for a 1 s lease when it gave up after one lease time)."""
    async with leader_and_standby(pg_dsn, schema, 1.5) as (frozen, standby, old):
        wakes = anyio.Event()
        new = Leadership(
            standby, fence=standby.fence, holder="new", ttl=1.0, started_at=datetime.now(UTC)
        )

        async def write_then_freeze() -> None:
            with contextlib.suppress(StoreError):
                async with frozen.db.tx() as conn:
                    await frozen.lease_table.check_fence(conn)  # the row is now held FOR SHARE
                    await wakes.wait()
                    await conn.execute("SELECT 1")

        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(write_then_freeze)
                await anyio.wait_all_tasks_blocked()
                with anyio.fail_after(10):
                    while not new.leader:
                        await new.check()
                wakes.set()

        errors = [e.get("error", "") for e in logs if e["event"] == "lease.unreachable"]
        assert not [e for e in errors if e.startswith("no answer")], errors
        assert new.epoch == old.epoch + 1


async def test_a_leader_stuck_mid_statement_is_ended_for_the_takeover(
    pg_dsn: str, schema: str
) -> None:
    """A write that holds the lease row and never ends, out of reach of the idle timeout
    (its session is not idle: a pipeline paused before its Sync, here a long statement):
    once the lease has expired and the transaction is older than `hold_timeout`, the
    standby ends that session and takes the lease, rather than wait for it."""
    async with leader_and_standby(pg_dsn, schema, 0.5) as (stuck, standby, old):
        outcome: list[BaseException] = []
        holding = anyio.Event()

        async def write_forever() -> None:
            try:
                async with stuck.db.tx() as conn:
                    await stuck.lease_table.check_fence(conn)  # the row is now held FOR SHARE
                    holding.set()
                    await conn.execute("SELECT pg_sleep(60)")
            except StoreError as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write_forever)
            await holding.wait()
            with anyio.fail_after(10):  # without it: blocked for the whole minute
                taken = None
                while taken is None or taken.holder != "new":
                    try:
                        taken = await standby.acquire_lease(
                            POLLER, "new", ttl=timedelta(seconds=30)
                        )
                    except StoreError:
                        continue

        assert taken is not None
        assert (taken.holder, taken.epoch) == ("new", old.epoch + 1)
        assert len(outcome) == 1  # its session was ended: the write failed, wrote nothing
