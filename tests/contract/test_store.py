"""Tests for watcher.stores.sqlite: real SQLite files in tmp_path, no mocks."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from watcher.core.decision import Decision
from watcher.core.delivery import Delivery, Event, OutboxEntry
from watcher.core.errors import LeaseLost, StateLocked, StoreError
from watcher.core.model import JobKind, JobRef, JobSnapshot
from watcher.stores.lock import exclusive
from watcher.stores.sqlite import StateStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SECRET_URL = "slack://hunter2-Secret-Token@T1234/B5678/#ml-alerts"

needs_permissions = pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")


def snapshot(job_id: str = "my-job", state: str = "RUNNING", **fields: str) -> JobSnapshot:
    """A DPO job snapshot with the given fields."""
    return JobSnapshot(ref=JobRef(JobKind.DPO, job_id), account_id="acme", state=state, **fields)


def entry(job_key: str = "dpo/my-job", *, minutes: int = 0, **fields: Any) -> OutboxEntry:
    """An outbox entry created `minutes` after T0, for the masked form of SECRET_URL."""
    values: dict[str, Any] = {
        "job_key": job_key,
        "channel": "ml-team",
        "url_key": hashlib.sha256(SECRET_URL.encode()).hexdigest(),
        "url_display": "slack://h...n/T1234/B5678/#ml-alerts",
        "old_state": "RUNNING",
        "new_state": "COMPLETED",
        "created_at": T0 + timedelta(minutes=minutes),
        "event": Event(
            job_key,
            "RUNNING",
            "COMPLETED",
            T0 + timedelta(minutes=minutes),
            (("body", "done"), ("title", f"{job_key}: RUNNING → COMPLETED")),
            notice=True,
        ),
    }
    values.update(fields)
    return OutboxEntry(**values)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the state database lives in a test."""
    return tmp_path / "state.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[StateStore]:
    """An open store, closed after the test."""
    with StateStore.open(db_path) as opened:
        yield opened


def raw_sql(path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Run one statement on the database through a second connection, as another tool would."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(sql, params)
    finally:
        conn.close()


class TestSnapshots:
    def test_unknown_job_is_none(self, store: StateStore) -> None:
        """A job never recorded has no last state."""
        assert None is store.last(JobRef(JobKind.DPO, "never"))
        assert {} == store.last_all()

    @pytest.mark.parametrize(
        "snap",
        [
            snapshot(),
            snapshot(
                state="FAILED",
                status_code="INTERNAL",
                status_message="out of memory",
                display_name="tune llama",
                base_model="accounts/fireworks/models/llama-v3p1-8b-instruct",
                output_model="accounts/acme/models/out",
                dataset="accounts/acme/datasets/prefs",
                created_by="ana@example.com",
                create_time="2025-03-01T10:00:00Z",
                completed_time="2025-03-01T11:00:00.123Z",
                wandb_url="https://wandb.ai/acme/proj/runs/abc",
            ),
            snapshot(state="SOME_FUTURE_STATE"),
            snapshot(job_id="jöb-λ", display_name="Ünïcødé 🚀 名前", status_message="é\n\"'\\"),
        ],
        ids=["minimal", "every-field", "unknown-state", "unicode"],
    )
    def test_round_trip(self, store: StateStore, snap: JobSnapshot) -> None:
        """A recorded snapshot reads back equal, by ref and in last_all."""
        store.record(Decision([snap], [], now=T0))

        assert snap == store.last(snap.ref)
        assert {snap.ref.key: snap} == store.last_all()

    def test_upsert_replaces(self, store: StateStore) -> None:
        """Recording a job again replaces its last state."""
        store.record(Decision([snapshot(state="RUNNING")], [], now=T0))
        store.record(Decision([snapshot(state="COMPLETED")], [], now=T0 + timedelta(seconds=30)))

        assert "COMPLETED" == store.last_all()["dpo/my-job"].state

    def test_kinds_are_separate(self, store: StateStore) -> None:
        """The same job id under two kinds is two jobs."""
        dpo = snapshot(job_id="x")
        sft = replace(dpo, ref=JobRef(JobKind.SFT, "x"), state="PENDING")
        store.record(Decision([dpo, sft], [], now=T0))

        assert {"dpo/x": dpo, "sft/x": sft} == store.last_all()

    @pytest.mark.parametrize(
        "text",
        [
            "not json",
            "[1, 2]",
            '{"kind": "dpo", "job_id": "my-job", "account_id": "acme"}',
            '{"kind": "nope", "job_id": "my-job", "account_id": "acme", "state": "RUNNING"}',
            '{"kind": "dpo", "job_id": "my-job", "account_id": "acme", "state": 3}',
            '{"kind": "dpo", "job_id": "other", "account_id": "acme", "state": "RUNNING"}',
        ],
        ids=["not-json", "not-object", "no-state", "unknown-kind", "non-str-value", "key-mismatch"],
    )
    def test_undecodable_row_is_absent(self, db_path: Path, text: str) -> None:
        """A job row that does not decode is treated as never seen, without hiding the others."""
        good = snapshot(job_id="good")
        with StateStore.open(db_path) as store:
            store.record(Decision([good, snapshot()], [], now=T0))
        raw_sql(db_path, "UPDATE jobs SET snapshot = ? WHERE job_key = 'dpo/my-job'", (text,))

        with StateStore.open(db_path) as store:
            assert None is store.last(JobRef(JobKind.DPO, "my-job"))
            assert {"dpo/good": good} == store.last_all()

    def test_unknown_json_keys_are_ignored(self, db_path: Path) -> None:
        """Extra keys in a stored snapshot do not make it unreadable."""
        text = '{"kind": "dpo", "job_id": "my-job", "account_id": "acme", "state": "X", "n": "1"}'
        with StateStore.open(db_path):
            pass
        raw_sql(
            db_path,
            "INSERT INTO jobs (job_key, snapshot, updated_at) VALUES ('dpo/my-job', ?, '')",
            (text,),
        )

        with StateStore.open(db_path) as store:
            assert snapshot(state="X") == store.last(JobRef(JobKind.DPO, "my-job"))

    def test_forget_keeps_outbox(self, store: StateStore) -> None:
        """Forgetting a job drops its last state but not its pending notifications."""
        store.record(Decision([snapshot(), snapshot(job_id="kept")], [entry()], now=T0))

        store.forget(["dpo/my-job", "dpo/not-there"])

        assert ["dpo/kept"] == list(store.last_all())
        assert ["dpo/my-job"] == [d.entry.job_key for d in store.undelivered()]

    def test_forget_nothing(self, store: StateStore) -> None:
        """Forgetting an empty collection is a no-op."""
        store.record(Decision([snapshot()], [], now=T0))
        store.forget(iter([]))

        assert ["dpo/my-job"] == list(store.last_all())


class TestRecord:
    def test_entries_start_pending(self, store: StateStore) -> None:
        """A recorded entry is pending, never attempted and due at its creation time."""
        e = entry(minutes=5)
        store.record(Decision([snapshot()], [e], now=T0))

        [delivery] = store.undelivered()
        assert Delivery(delivery.id, e, 0, e.created_at, "", "pending") == delivery

    def test_nothing_to_record_writes_nothing(self, db_path: Path) -> None:
        """record([], []) starts no transaction: it works even while another writer holds the lock."""
        with StateStore.open(db_path) as store:
            other = sqlite3.connect(db_path, isolation_level=None)
            try:
                other.execute("BEGIN EXCLUSIVE")
                store.record(Decision([], [], now=T0))
                other.execute("ROLLBACK")
            finally:
                other.close()

    @pytest.mark.parametrize(
        "bad",
        [{"channel": 42}, {"url_display": b"bytes"}, {"url_key": None}],
        ids=["int", "bytes", "none"],
    )
    def test_bad_entry_rolls_back_snapshot(self, store: StateStore, bad: dict[str, Any]) -> None:
        """An entry that cannot be written undoes the snapshot upsert of the same call."""
        store.record(Decision([snapshot(state="RUNNING")], [], now=T0))

        with pytest.raises(StoreError, match="must be str"):
            store.record(
                Decision(
                    [snapshot(state="COMPLETED"), snapshot(job_id="new")],
                    [entry(), entry(**bad)],
                    now=T0,
                )
            )

        assert {"dpo/my-job": snapshot(state="RUNNING")} == store.last_all()
        assert [] == store.undelivered()

    def test_database_failure_rolls_back(self, db_path: Path) -> None:
        """A failure inside SQLite mid-transaction is a StoreError and undoes the whole call."""
        with StateStore.open(db_path) as store:
            store.record(Decision([snapshot(state="RUNNING")], [], now=T0))
        raw_sql(
            db_path,
            "CREATE TRIGGER boom BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'boom'); END",
        )

        with StateStore.open(db_path) as store:
            with pytest.raises(StoreError, match=r"^cannot write state database .*: boom$"):
                store.record(Decision([snapshot(state="COMPLETED")], [entry()], now=T0))

            assert snapshot(state="RUNNING") == store.last(JobRef(JobKind.DPO, "my-job"))
            assert [] == store.undelivered()

    def test_naive_datetime_rejected(self, store: StateStore) -> None:
        """A naive created_at is refused rather than guessed, and nothing is written."""
        with pytest.raises(StoreError, match="naive"):
            store.record(Decision([snapshot()], [entry(created_at=datetime(2025, 1, 1))], now=T0))

        assert {} == store.last_all()

    def test_times_normalised_to_utc(self, store: StateStore) -> None:
        """A created_at in another zone reads back as the same instant in UTC."""
        paris = datetime(2025, 3, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
        store.record(Decision([], [entry(created_at=paris)], now=T0))

        [delivery] = store.undelivered()
        assert (T0, UTC) == (delivery.entry.created_at, delivery.entry.created_at.tzinfo)


class TestOutbox:
    def test_retry_then_delivered(self, store: StateStore) -> None:
        """pending -> retried (attempts 1, later due, error kept) -> delivered (gone from lists)."""
        store.record(Decision([], [entry()], now=T0))
        [d] = store.due(T0)

        store.mark_retry(d.id, next_attempt_at=T0 + timedelta(seconds=2), error="HTTP 503")

        [retried] = store.undelivered()
        assert (1, T0 + timedelta(seconds=2), "HTTP 503", "pending") == (
            retried.attempts,
            retried.next_attempt_at,
            retried.last_error,
            retried.status,
        )
        assert [] == store.due(T0 + timedelta(seconds=1))
        assert [d.id] == [x.id for x in store.due(T0 + timedelta(seconds=2))]

        store.mark_delivered(d.id, now=T0 + timedelta(seconds=2))

        assert [] == store.due(T0 + timedelta(days=1))
        assert [] == store.undelivered()
        assert None is store.next_due_at()

    def test_dead(self, store: StateStore) -> None:
        """pending -> dead: no longer due, still listed as undelivered with its error."""
        store.record(Decision([], [entry()], now=T0))
        [d] = store.due(T0)

        store.mark_dead(d.id, now=T0 + timedelta(hours=24), error="gave up: HTTP 404")

        assert [] == store.due(T0 + timedelta(days=2))
        assert None is store.next_due_at()
        [dead] = store.undelivered()
        assert (d.id, "dead", 1, "gave up: HTTP 404") == (
            dead.id,
            dead.status,
            dead.attempts,
            dead.last_error,
        )

    def test_unknown_id(self, store: StateStore) -> None:
        """Marking a row that does not exist is a StoreError naming it, like every store error."""
        with pytest.raises(LeaseLost, match="42"):
            store.mark_delivered(42, now=T0)

    def test_due_filters_and_orders(self, store: StateStore) -> None:
        """due() returns pending rows due by `now`, in the order they were recorded, up to `limit`."""
        store.record(Decision([], [entry("dpo/a", minutes=0), entry("dpo/b", minutes=10)], now=T0))
        store.record(Decision([], [entry("dpo/c", minutes=5), entry("dpo/d", minutes=1)], now=T0))

        def keys(deliveries: list[Delivery]) -> list[str]:
            return [d.entry.job_key for d in deliveries]

        assert [] == keys(store.due(T0 - timedelta(microseconds=1)))
        assert ["dpo/a"] == keys(store.due(T0))
        assert ["dpo/a", "dpo/c", "dpo/d"] == keys(store.due(T0 + timedelta(minutes=5)))
        assert ["dpo/a", "dpo/b", "dpo/c", "dpo/d"] == keys(store.due(T0 + timedelta(hours=1)))
        assert ["dpo/a", "dpo/b"] == keys(store.due(T0 + timedelta(hours=1), limit=2))

    def test_next_due_at(self, store: StateStore) -> None:
        """next_due_at is the earliest pending next attempt, None when nothing is pending."""
        assert None is store.next_due_at()

        store.record(Decision([], [entry(minutes=7), entry(minutes=3)], now=T0))
        assert T0 + timedelta(minutes=3) == store.next_due_at()

        [late, early] = store.undelivered()
        store.mark_retry(early.id, next_attempt_at=T0 + timedelta(minutes=9), error="x")
        assert T0 + timedelta(minutes=7) == store.next_due_at()

        store.mark_dead(late.id, now=T0, error="x")
        assert T0 + timedelta(minutes=9) == store.next_due_at()

    def test_undelivered_lists_pending_and_dead(self, store: StateStore) -> None:
        """undelivered() shows pending and dead rows oldest first, never delivered ones."""
        store.record(Decision([], [entry("dpo/a"), entry("dpo/b"), entry("dpo/c")], now=T0))
        a, b, _c = store.undelivered()
        store.mark_delivered(a.id, now=T0)
        store.mark_dead(b.id, now=T0, error="x")

        assert [("dpo/b", "dead"), ("dpo/c", "pending")] == [
            (d.entry.job_key, d.status) for d in store.undelivered()
        ]

    def test_prune(self, store: StateStore) -> None:
        """prune() deletes delivered rows older than the cutoff, never pending or dead ones."""
        store.record(
            Decision(
                [], [entry("dpo/old"), entry("dpo/new"), entry("dpo/p"), entry("dpo/x")], now=T0
            )
        )
        old, new, _pending, dead = store.undelivered()
        store.mark_delivered(old.id, now=T0)
        store.mark_delivered(new.id, now=T0 + timedelta(days=2))
        store.mark_dead(dead.id, now=T0, error="x")

        assert 1 == store.prune(delivered_before=T0 + timedelta(days=1))
        assert 0 == store.prune(delivered_before=T0 + timedelta(days=1))
        assert 1 == store.prune(delivered_before=T0 + timedelta(days=3))
        assert ["dpo/p", "dpo/x"] == [d.entry.job_key for d in store.undelivered()]


class TestDurability:
    def test_reopen_keeps_everything(self, db_path: Path) -> None:
        """State and outbox written before close are all there after reopening (a restart)."""
        snap = snapshot(state="FAILED", status_message="boom ✗")
        with StateStore.open(db_path) as store:
            store.record(Decision([snap], [entry(), entry("dpo/b", minutes=1)], now=T0))
            first, second = store.undelivered()
            store.mark_retry(first.id, next_attempt_at=T0 + timedelta(seconds=4), error="503")
            store.mark_delivered(second.id, now=T0)
            before = store.undelivered()

        with StateStore.open(db_path) as store:
            assert {snap.ref.key: snap} == store.last_all()
            assert before == store.undelivered()
            assert T0 + timedelta(seconds=4) == store.next_due_at()

    def test_close_twice_and_use_after_close(self, db_path: Path) -> None:
        """close() is idempotent; using a closed store is a StoreError, not a crash."""
        store = StateStore.open(db_path)
        store.close()
        store.close()

        with pytest.raises(StoreError, match=r"^cannot read state database"):
            store.last_all()

    def test_pragmas(self, store: StateStore, db_path: Path) -> None:
        """The database runs in WAL mode (persisted in the file)."""
        conn = sqlite3.connect(db_path)
        try:
            assert ("wal",) == conn.execute("PRAGMA journal_mode").fetchone()
        finally:
            conn.close()


class TestFile:
    def test_created_private(self, tmp_path: Path) -> None:
        """A new database, its WAL file and a missing parent directory are private to the user."""
        path = tmp_path / "var" / "lib" / "state.db"
        old_umask = os.umask(0o022)
        try:
            with StateStore.open(path) as store:
                store.record(Decision([snapshot()], [], now=T0))
                wal = path.with_name("state.db-wal")
                assert 0o600 == stat.S_IMODE(wal.stat().st_mode)
                assert 0o600 == stat.S_IMODE(path.stat().st_mode)
        finally:
            os.umask(old_umask)

        assert 0o700 == stat.S_IMODE(path.parent.stat().st_mode)

    def test_secret_url_never_written(self, db_path: Path) -> None:
        """Neither the database nor its WAL file contains the channel URL's credentials."""
        with StateStore.open(db_path) as store:
            store.record(Decision([snapshot()], [entry(), entry("dpo/b")], now=T0))
            store.mark_retry(1, next_attempt_at=T0, error="HTTP 500 from slack")
            files = [p for p in db_path.parent.iterdir() if p.name.startswith("state.db")]
            assert db_path.with_name("state.db-wal") in files
            contents = b"".join(p.read_bytes() for p in files)

        assert b"ml-alerts" in contents  # the masked form is there: we grep the right bytes
        for secret in (SECRET_URL, "hunter2-Secret-Token", "hunter2"):
            assert secret.encode() not in contents

    def test_existing_empty_file(self, db_path: Path) -> None:
        """An empty file (e.g. pre-created by an installer) becomes a database."""
        db_path.touch()

        with StateStore.open(db_path) as store:
            store.record(Decision([snapshot()], [], now=T0))
            assert ["dpo/my-job"] == list(store.last_all())

    def test_migrates_database_without_version(self, db_path: Path) -> None:
        """A SQLite file without our meta table is given the current schema."""
        raw_sql(db_path, "CREATE TABLE unrelated (x)")

        with StateStore.open(db_path) as store:
            store.record(Decision([snapshot()], [entry()], now=T0))
            assert 1 == len(store.undelivered())

    def test_newer_schema_rejected(self, db_path: Path) -> None:
        """A database written by a newer version is refused, naming the path."""
        with StateStore.open(db_path):
            pass
        newer = StateStore.SCHEMA_VERSION + 1
        raw_sql(db_path, f"UPDATE meta SET value = '{newer}' WHERE key = 'schema_version'")

        with pytest.raises(StoreError, match="newer fireworks-watcher") as info:
            StateStore.open(db_path)
        assert f"cannot open state database {db_path}: " in str(info.value)

    def test_garbled_schema_version_rejected(self, db_path: Path) -> None:
        """A schema version that is not a number is refused rather than overwritten."""
        with StateStore.open(db_path):
            pass
        raw_sql(db_path, "UPDATE meta SET value = 'two' WHERE key = 'schema_version'")

        with pytest.raises(StoreError, match="unreadable schema version"):
            StateStore.open(db_path)


class TestOpenErrors:
    def test_path_is_directory(self, db_path: Path) -> None:
        """A directory at the database path is a one-line StoreError naming the path."""
        db_path.mkdir()

        with pytest.raises(StoreError) as info:
            StateStore.open(db_path)
        assert f"cannot open state database {db_path}: Is a directory" == str(info.value)

    def test_not_a_database(self, db_path: Path) -> None:
        """A file that is not SQLite is a StoreError, and is left untouched."""
        junk = b"this is a config file, not a database\n" * 100
        db_path.write_bytes(junk)

        with pytest.raises(StoreError) as info:
            StateStore.open(db_path)
        assert f"cannot open state database {db_path}: file is not a database" == str(info.value)
        assert junk == db_path.read_bytes()

    def test_parent_is_a_file(self, tmp_path: Path) -> None:
        """A parent directory that cannot be created is a StoreError."""
        (tmp_path / "blocker").write_text("x")

        with pytest.raises(StoreError, match=r"^cannot open state database .*state\.db: "):
            StateStore.open(tmp_path / "blocker" / "state.db")

    @needs_permissions
    def test_read_only_directory(self, tmp_path: Path) -> None:
        """A database that cannot be created in a read-only directory is a StoreError."""
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        try:
            with pytest.raises(StoreError) as info:
                StateStore.open(ro / "state.db")
        finally:
            ro.chmod(0o700)
        assert f"cannot open state database {ro / 'state.db'}: Permission denied" == str(info.value)

    @needs_permissions
    def test_read_only_file(self, db_path: Path) -> None:
        """An existing database the user cannot write is refused at open, not at first write."""
        with StateStore.open(db_path):
            pass
        db_path.chmod(0o400)

        with pytest.raises(StoreError, match=r"^cannot open state database .*: Permission denied$"):
            StateStore.open(db_path)


class TestFlagsAndStats:
    def test_flags_are_written_with_the_record_and_survive_reopening(self, db_path: Path) -> None:
        """A flag saved in `record` is read back after a restart, and can be overwritten."""
        with StateStore.open(db_path) as store:
            assert store.flag("api_down_announced") is None
            store.record(Decision([], [], now=T0, flags={"api_down_announced": "1"}))
        with StateStore.open(db_path) as store:
            assert "1" == store.flag("api_down_announced")
            store.record(Decision([], [], now=T0, flags={"api_down_announced": "0"}))
            assert "0" == store.flag("api_down_announced")

    def test_flags_roll_back_with_the_transaction(self, store: StateStore) -> None:
        """A record that fails writes no flag either."""
        with pytest.raises(StoreError):
            store.record(Decision([], [entry(channel=7)], now=T0, flags={"f": "1"}))

        assert store.flag("f") is None

    def test_outbox_stats_count_pending_only(self, store: StateStore) -> None:
        """Outbox depth and the oldest pending creation time ignore delivered and dead rows."""
        assert (0, None) == store.outbox_stats()
        store.record(Decision([], [entry(minutes=1), entry(minutes=2), entry(minutes=3)], now=T0))
        first, second, _ = store.due(T0 + timedelta(hours=1))
        store.mark_delivered(first.id, now=T0)
        store.mark_dead(second.id, now=T0, error="gone")

        assert (1, T0 + timedelta(minutes=3)) == store.outbox_stats()


LEASE = timedelta(seconds=60)
OTHER_URL = hashlib.sha256(b"json://other").hexdigest()


def ids(deliveries: list[Delivery]) -> list[int]:
    return [d.id for d in deliveries]


class TestClaims:
    """Deliveries are claimed with a lease; one job's rows reach a target in order."""

    def test_claim_takes_due_rows_once(self, store: StateStore) -> None:
        """A claimed row is not offered again while its lease runs; marks name the claim."""
        store.record(Decision([], [entry("dpo/a"), entry("dpo/b")], now=T0))

        first = store.claim(T0, holder="d1", lease=LEASE)
        again = store.claim(T0 + timedelta(seconds=1), holder="d2", lease=LEASE)

        assert ([1, 2], []) == (ids(first), ids(again))
        assert {"d1"} == {d.claim for d in first}

    def test_a_jobs_later_row_waits_for_the_earlier_one(self, store: StateStore) -> None:
        """CREATING→PENDING must reach a target before PENDING→RUNNING, even after retries."""
        store.record(Decision([], [entry("dpo/a", new_state="PENDING")], now=T0))
        store.record(Decision([], [entry("dpo/a", minutes=1, new_state="RUNNING")], now=T0))
        store.record(Decision([], [entry("dpo/a", url_key=OTHER_URL, new_state="PENDING")], now=T0))
        later = T0 + timedelta(minutes=2)

        (first, other) = store.claim(later, holder="d", lease=LEASE)
        store.mark_retry(
            first.id, next_attempt_at=later + timedelta(minutes=5), error="503", claim="d"
        )
        while_retrying = store.claim(later, holder="d", lease=LEASE)
        store.mark_delivered(other.id, now=later, claim="d")
        store.mark_delivered(
            store.claim(later + timedelta(minutes=6), holder="d", lease=LEASE)[0].id,
            now=later,
            claim="d",
        )
        after = store.claim(later + timedelta(minutes=6), holder="d", lease=LEASE)

        assert ([1, 3], [], [2]) == ([first.id, other.id], ids(while_retrying), ids(after))

    def test_a_dead_row_unblocks_the_next(self, store: StateStore) -> None:
        """A given-up row no longer holds the job's later messages back."""
        store.record(Decision([], [entry("dpo/a"), entry("dpo/a", minutes=1)], now=T0))
        (first,) = store.claim(T0 + timedelta(minutes=1), holder="d", lease=LEASE)
        store.mark_dead(first.id, now=T0, error="gone", claim="d")

        assert [2] == ids(store.claim(T0 + timedelta(minutes=1), holder="d", lease=LEASE))

    def test_busy_targets_are_skipped(self, store: StateStore) -> None:
        """Rows of a target with a send in flight are left for its own lane."""
        store.record(Decision([], [entry("dpo/a"), entry("dpo/b", url_key=OTHER_URL)], now=T0))

        claimed = store.claim(T0, holder="d", lease=LEASE, busy=[entry().url_key])

        assert [2] == ids(claimed)

    def test_an_expired_lease_is_claimed_again_and_the_old_mark_refused(
        self, store: StateStore
    ) -> None:
        """A holder presumed dead loses its rows: a new claim takes them, a late mark fails."""
        store.record(Decision([], [entry("dpo/a")], now=T0))
        (mine,) = store.claim(T0, holder="old", lease=LEASE)

        (theirs,) = store.claim(T0 + LEASE + timedelta(seconds=1), holder="new", lease=LEASE)
        with pytest.raises(LeaseLost):
            store.mark_delivered(mine.id, now=T0, claim="old")
        store.mark_delivered(theirs.id, now=T0, claim="new")

        assert [] == store.undelivered()

    def test_release_claims_at_start(self, store: StateStore) -> None:
        """The lock holder voids claims left by a dead process: the row is due again at once."""
        store.record(Decision([], [entry("dpo/a")], now=T0))
        store.claim(T0, holder="dead", lease=LEASE)

        released = store.release_claims()

        assert (1, [1]) == (released, ids(store.claim(T0, holder="alive", lease=LEASE)))

    def test_next_due_waits_for_a_claim(self, store: StateStore) -> None:
        """A claimed row is next due when its lease ends, not at its retry time."""
        store.record(Decision([], [entry("dpo/a")], now=T0))
        store.claim(T0, holder="d", lease=LEASE)

        assert T0 + LEASE == store.next_due_at()


class TestMigration:
    """A state file of schema 1 (the previous release) upgrades in place, nothing lost."""

    SCHEMA_1 = """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
    INSERT INTO meta VALUES ('schema_version', '1'), ('flag:api_down_announced', '1');
    CREATE TABLE jobs (job_key TEXT PRIMARY KEY, snapshot TEXT NOT NULL, updated_at TEXT);
    INSERT INTO jobs VALUES ('dpo/a', '{"kind": "dpo", "job_id": "a", "account_id": "acme",
        "state": "RUNNING", "status_code": "OK", "status_message": "", "display_name": "A",
        "base_model": "", "output_model": "", "dataset": "", "created_by": "",
        "create_time": "", "completed_time": "", "wandb_url": ""}', '2025-03-01');
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT, job_key TEXT NOT NULL, channel TEXT NOT NULL,
        url_key TEXT NOT NULL, url_display TEXT NOT NULL, title TEXT NOT NULL,
        body TEXT NOT NULL, old_state TEXT NOT NULL, new_state TEXT NOT NULL,
        created_at TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL, last_error TEXT NOT NULL DEFAULT '', delivered_at TEXT
    );
    CREATE INDEX outbox_status_next ON outbox (status, next_attempt_at);
    INSERT INTO outbox (job_key, channel, url_key, url_display, title, body, old_state,
        new_state, created_at, status, attempts, next_attempt_at, last_error) VALUES
        ('dpo/a', 'team', 'k1', 'json://x', 'a: PENDING → RUNNING', 'b', 'PENDING', 'RUNNING',
         '2025-03-01T12:00:00.000000+00:00', 'pending', 2,
         '2025-03-01T12:00:00.000000+00:00', '503'),
        ('dpo/a', 'team', 'k1', 'json://x', 'a: done', 'b', 'RUNNING', 'COMPLETED',
         '2025-03-01T11:00:00.000000+00:00', 'delivered', 1,
         '2025-03-01T11:00:00.000000+00:00', '');
    """

    def test_schema_1_upgrades_with_nothing_lost(self, db_path: Path) -> None:
        """Jobs, both outbox rows and the API-down flag (now an open condition) survive; the
        pending row is claimable."""
        with sqlite3.connect(db_path) as db:
            db.executescript(self.SCHEMA_1)

        with StateStore.open(db_path) as store:
            snapshot = store.last_all()["dpo/a"]
            pending = store.claim(T0, holder="d", lease=LEASE)
            conditions = [(c.subject, str(c.name)) for c in store.open_conditions()]
            flag = "1" if conditions == [("api", "api_down")] else "?"
        with sqlite3.connect(db_path) as db:
            version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            rows = db.execute("SELECT COUNT(*) FROM outbox").fetchone()

        assert ("RUNNING", "A", "1") == (snapshot.state, snapshot.display_name, flag)
        # A row from before events existed keeps its text: it is sent as written, like a notice.
        assert [("a: PENDING → RUNNING", 2, True)] == [
            (d.entry.event.field_map()["title"], d.attempts, d.entry.event.notice) for d in pending
        ]
        assert (str(StateStore.SCHEMA_VERSION), 2) == (version[0], rows[0])


class TestExclusive:
    """One daemon per state file."""

    def test_second_holder_is_refused_naming_the_pid(self, db_path: Path) -> None:
        """While one holds the lock, another gets StateLocked with the holder's pid."""
        with (
            exclusive(db_path),
            pytest.raises(StateLocked, match=f"pid {os.getpid()}"),
            exclusive(db_path),
        ):
            pass  # pragma: no cover

    def test_released_on_exit(self, db_path: Path) -> None:
        """After the holder is done, the next one gets the lock."""
        with exclusive(db_path):
            pass
        with exclusive(db_path):
            pass


class TestEvents:
    """Events are stored once, however many rows point at them, and come back with them."""

    def test_an_event_shared_by_rows_is_stored_once(self, store: StateStore, db_path: Path) -> None:
        """Two URLs hearing one transition: one event row, two outbox rows pointing at it."""
        event = Event("dpo/a", "RUNNING", "FAILED", T0, (("job_id", "a"), ("kind", "dpo")))
        history = Event("dpo/b", "PENDING", "RUNNING", T0, (("job_id", "b"),))
        store.record(
            Decision(
                [],
                [entry("dpo/a", event=event), entry("dpo/a", url_key=OTHER_URL, event=event)],
                now=T0,
                events=[event, history],
            )
        )

        claimed = store.claim(T0, holder="d", lease=LEASE)
        with sqlite3.connect(db_path) as db:
            events = db.execute("SELECT job_key FROM events ORDER BY id").fetchall()

        assert [("dpo/a",), ("dpo/b",)] == events
        assert [event.field_map()] * 2 == [
            d.entry.event.field_map() for d in claimed if d.entry.event
        ]
        assert {"FAILED"} == {d.entry.event.new_state for d in claimed if d.entry.event}
