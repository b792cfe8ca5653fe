"""The contract of the state half of the store (jobs, flags, alert state and `record`'s one
transaction), on both backends: the same tests, and both must pass them."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
import pytest

from tests.support.backends import OpenStore, Store
from watcher.core.conditions import Condition, ConditionName, Since
from watcher.core.decision import Decision
from watcher.core.delivery import Event, OutboxEntry
from watcher.core.errors import StoreError
from watcher.core.model import JobKind, JobRef, JobSnapshot
from watcher.stores.aio import AsyncStore
from watcher.stores.pg.store import PgStore

pytestmark = pytest.mark.anyio
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def snapshot(job: str = "a", state: str = "RUNNING", **fields: str) -> JobSnapshot:
    return JobSnapshot(ref=JobRef(JobKind.SFT, job), state=state, account_id="acme", **fields)


def every_field(job: str = "full") -> JobSnapshot:
    """A snapshot with a distinct value in every field, so a field dropped or swapped shows."""
    names = [f.name for f in dataclasses.fields(JobSnapshot) if f.name != "ref"]
    values = {name: f"{name}-{i} ünï" for i, name in enumerate(names)}
    return JobSnapshot(ref=JobRef(JobKind.DPO, job), **values)


def event(job_key: str = "sft/a", new_state: str = "COMPLETED", **fields: str) -> Event:
    return Event(
        job_key=job_key,
        old_state="RUNNING",
        new_state=new_state,
        observed_at=T0,
        fields=tuple(sorted(fields.items())),
    )


def entry(channel: str = "team", *, ev: Event | None = None, **fields: Any) -> OutboxEntry:
    values: dict[str, Any] = {
        "job_key": "sft/a",
        "channel": channel,
        "url_key": f"key-{channel}",
        "url_display": f"json://{channel}",
        "old_state": "RUNNING",
        "new_state": "COMPLETED",
        "created_at": T0,
        "event": ev or Event("sft/a", "RUNNING", "COMPLETED", T0, (("reason", "done"),)),
    }
    values.update(fields)
    return OutboxEntry(**values)


async def count(store: Store, table: str) -> int:
    """Rows in `table`, read behind the store's back (for what no port method reads)."""
    query = f"SELECT count(*) FROM {table}"
    if isinstance(store, PgStore):
        async with store.db.conn() as conn:
            row = await (await conn.execute(query)).fetchone()
        assert row is not None
        return int(row[0])
    assert isinstance(store, AsyncStore)

    def read() -> int:
        with sqlite3.connect(store.sync.path) as conn:
            return int(conn.execute(query).fetchone()[0])

    return await anyio.to_thread.run_sync(read)


class TestJobs:
    async def test_every_snapshot_field_round_trips(self, any_store: Store) -> None:
        """Every field of a snapshot, of every kind of text, comes back as written."""
        full, plain = every_field(), snapshot("b", "PENDING")

        await any_store.record(Decision([full, plain], [], now=T0))

        assert {full.ref.key: full, plain.ref.key: plain} == await any_store.last_all()

    async def test_a_later_record_replaces_the_snapshot(self, any_store: Store) -> None:
        await any_store.record(Decision([snapshot(state="RUNNING")], [], now=T0))
        await any_store.record(
            Decision([snapshot(state="COMPLETED")], [], now=T0 + timedelta(minutes=1))
        )

        assert {"sft/a": snapshot(state="COMPLETED")} == await any_store.last_all()

    async def test_nul_in_a_status_message_is_stored(self, any_store: Store, backend: str) -> None:
        """The API may send a NUL; PostgreSQL's text cannot hold one, so it reads as U+FFFD
        there (and as itself on SQLite), in the snapshot, its event and its entry."""
        hostile = snapshot(status_message="before\x00after")
        ev = event(message="x\x00y")

        await any_store.record(
            Decision(
                [hostile],
                [entry(ev=ev, url_display="json://b\x00dy")],
                now=T0,
                events=[ev],
                flags={"n": "\x00"},
            )
        )

        shown = "before\ufffdafter" if backend == "postgresql" else "before\x00after"
        assert shown == (await any_store.last_all())["sft/a"].status_message
        assert (1, 1) == (await count(any_store, "events"), await count(any_store, "outbox"))
        assert ("\ufffd" if backend == "postgresql" else "\x00") == await any_store.flag("n")

    async def test_forget_drops_only_the_jobs_named(self, any_store: Store) -> None:
        await any_store.record(Decision([snapshot("a"), snapshot("b")], [], now=T0))

        await any_store.forget(["sft/a", "sft/never-seen"])
        await any_store.forget([])

        assert {"sft/b"} == set(await any_store.last_all())
        assert {"sft/b"} == set(await any_store.polled_all())

    async def test_a_reopened_store_sees_everything(self, stores: OpenStore) -> None:
        """What one store wrote, a store opened afterwards on the same database reads."""
        first = await stores()
        since = Since(T0, T0 + timedelta(seconds=1), entered=True)
        condition = Condition("sft/a", ConditionName.STALLED, T0, "quiet for 30m")
        await first.record(
            Decision(
                [every_field("a"), snapshot("b")],
                [entry(ev=event())],
                now=T0,
                flags={"k": "v"},
                since={"dpo/a": since},
                opened=[condition],
                reminders={("team", "sft/a"): T0 + timedelta(hours=1)},
            )
        )
        await first.aclose()

        again = await stores()

        assert {"dpo/a": every_field("a"), "sft/b": snapshot("b")} == await again.last_all()
        assert "v" == await again.flag("k")
        assert {"dpo/a": since} == await again.since_all()
        assert {"dpo/a": T0, "sft/b": T0} == await again.polled_all()
        assert [condition] == await again.open_conditions()
        assert {("team", "sft/a"): T0 + timedelta(hours=1)} == await again.reminder_times()
        assert (1, 1) == (await count(again, "events"), await count(again, "outbox"))


class TestFlags:
    async def test_a_flag_round_trips_and_is_overwritten(self, any_store: Store) -> None:
        await any_store.record(Decision([], [], now=T0, flags={"api": "down"}))
        await any_store.record(Decision([], [], now=T0, flags={"api": "up"}))

        assert "up" == await any_store.flag("api")
        assert await any_store.flag("missing") is None

    async def test_a_prefix_is_text_not_a_pattern(self, any_store: Store) -> None:
        """`%` and `_` in a prefix match only themselves (no LIKE on user text)."""
        flags = {"a%b": "1", "a_c": "2", "ab": "3", "x": "4", "a%%": "5"}
        await any_store.record(Decision([], [], now=T0, flags=flags))

        assert {"b": "1", "%": "5"} == await any_store.flags("a%")
        assert {"c": "2"} == await any_store.flags("a_")
        assert {"%b": "1", "_c": "2", "b": "3", "%%": "5"} == await any_store.flags("a")
        assert {} == await any_store.flags("a%c")
        assert {"": "4"} == await any_store.flags("x")


class TestAlertState:
    async def test_since_round_trips_for_written_jobs(self, any_store: Store) -> None:
        entered = Since(T0, T0 + timedelta(minutes=5), entered=True)
        seen = Since(T0 - timedelta(days=1), T0, entered=False)

        await any_store.record(
            Decision(
                [snapshot("a"), snapshot("b")], [], now=T0, since={"sft/a": entered, "sft/b": seen}
            )
        )

        assert {"sft/a": entered, "sft/b": seen} == await any_store.since_all()

    async def test_since_of_an_unknown_job_writes_nothing(self, any_store: Store) -> None:
        await any_store.record(Decision([], [], now=T0, since={"sft/nobody": Since(T0, T0)}))

        assert {} == await any_store.since_all()

    async def test_polled_moves_only_the_jobs_named(self, any_store: Store) -> None:
        later = T0 + timedelta(minutes=2)
        await any_store.record(Decision([snapshot("a"), snapshot("b")], [], now=T0))

        await any_store.record(Decision([], [], now=later, polled=["sft/a", "sft/unknown"]))

        assert {"sft/a": later, "sft/b": T0} == await any_store.polled_all()

    async def test_one_job_is_read_alone(self, any_store: Store) -> None:
        """A job page's reads: one job's snapshot, times and poll, whatever the others hold;
        an unknown key reads as nothing."""
        entered = Since(T0, T0 + timedelta(minutes=5), entered=True)
        await any_store.record(
            Decision(
                [snapshot("a", "FAILED"), snapshot("b")],
                [],
                now=T0,
                since={"sft/a": entered, "sft/b": Since(T0, T0)},
            )
        )

        assert "FAILED" == getattr(await any_store.last(JobRef(JobKind.SFT, "a")), "state", None)
        assert {"sft/a": entered} == await any_store.since_all(job="sft/a")
        assert {"sft/a": T0} == await any_store.polled_all(job="sft/a")
        assert await any_store.last(JobRef(JobKind.SFT, "nobody")) is None
        assert {} == await any_store.since_all(job="sft/nobody")
        assert {} == await any_store.polled_all(job="sft/%")

    async def test_conditions_open_update_and_resolve(self, any_store: Store) -> None:
        """Listed oldest first; opening one again keeps its time and takes the new detail;
        a resolved one is gone."""
        stalled = Condition("sft/a", ConditionName.STALLED, T0 + timedelta(minutes=1), "30m")
        down = Condition("api", ConditionName.API_DOWN, T0, "no answer")
        await any_store.record(Decision([], [], now=T0, opened=[stalled, down]))
        again = dataclasses.replace(stalled, opened_at=T0 + timedelta(hours=1), detail="60m")

        await any_store.record(Decision([], [], now=T0, opened=[again]))

        assert [down, dataclasses.replace(stalled, detail="60m")] == (
            await any_store.open_conditions()
        )
        await any_store.record(Decision([], [], now=T0, resolved=[down]))
        assert [dataclasses.replace(stalled, detail="60m")] == await any_store.open_conditions()

    async def test_reminders_are_set_moved_and_dropped(self, any_store: Store) -> None:
        first, second = ("team", "sft/a"), ("ops", "api")
        await any_store.record(
            Decision([], [], now=T0, reminders={first: T0, second: T0 + timedelta(hours=1)})
        )

        await any_store.record(
            Decision([], [], now=T0, reminders={first: T0 + timedelta(hours=4), second: None})
        )

        assert {first: T0 + timedelta(hours=4)} == await any_store.reminder_times()


class TestRecordIsOneTransaction:
    async def test_a_bad_entry_writes_nothing(self, any_store: Store) -> None:
        """An entry the store cannot hold (a title that is not text) fails the whole record:
        no snapshot, flag, time, condition, reminder or event of it is stored."""
        bad = entry(ev=event(), url_display=123)

        with pytest.raises(StoreError):
            await any_store.record(
                Decision(
                    [snapshot("a")],
                    [entry("good", ev=event()), bad],
                    now=T0,
                    flags={"k": "v"},
                    events=[event("sft/b")],
                    since={"sft/a": Since(T0, T0)},
                    opened=[Condition("api", ConditionName.API_DOWN, T0, "down")],
                    reminders={("team", "api"): T0},
                )
            )

        assert {} == await any_store.last_all()
        assert await any_store.flag("k") is None
        assert [] == await any_store.open_conditions()
        assert {} == await any_store.reminder_times()
        assert (0, 0) == (await count(any_store, "events"), await count(any_store, "outbox"))

    async def test_a_naive_time_writes_nothing(self, any_store: Store) -> None:
        naive = datetime(2025, 3, 1, 12, 0)

        with pytest.raises(StoreError):
            await any_store.record(
                Decision(
                    [snapshot()],
                    [],
                    now=T0,
                    opened=[Condition("api", ConditionName.API_DOWN, naive, "down")],
                )
            )

        assert {} == await any_store.last_all()

    async def test_an_event_shared_by_entries_is_stored_once(self, any_store: Store) -> None:
        """One transition heard by three targets is one event (the history) and three
        outbox rows; an event passed in `events` as well is still one."""
        shared, alone = event(), event("sft/b", "FAILED")

        await any_store.record(
            Decision(
                [],
                [entry("one", ev=shared), entry("two", ev=shared), entry("three", ev=shared)],
                now=T0,
                events=[shared, alone],
            )
        )

        assert (2, 3) == (await count(any_store, "events"), await count(any_store, "outbox"))

    async def test_nothing_to_write_is_no_error(self, any_store: Store) -> None:
        await any_store.record(Decision([], [], now=T0))

        assert {} == await any_store.last_all()
