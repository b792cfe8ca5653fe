"""The store's surface: `record` takes one `Decision` on every backend, the async SQLite adapter
forwards the ports through one typed mechanism (no hand-written forwarders), and both
backends offer the ports with the same signatures."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_thread

from tests.support.backends import Store
from watcher import ports
from watcher.core.conditions import Condition, ConditionName, Since
from watcher.core.decision import Decision
from watcher.core.delivery import Delivery, Event, OutboxEntry
from watcher.core.model import JobKind, JobRef, JobSnapshot
from watcher.stores import aio
from watcher.stores.aio import AsyncStore
from watcher.stores.pg.store import PgStore
from watcher.stores.sqlite import StateStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PORTS = (ports.StateRepo, ports.Outbox, ports.Leases)


def port_methods() -> list[str]:
    """Every method the runtime reaches the store through."""
    return sorted(
        {
            name
            for port in PORTS
            for name, member in vars(port).items()
            if not name.startswith("_") and callable(member)
        }
    )


def params(method: Callable[..., object]) -> list[tuple[str, object, object]]:
    """A method's parameters after `self`: name, kind and default."""
    found = list(inspect.signature(method).parameters.values())[1:]
    return [(p.name, p.kind, p.default) for p in found]


def test_record_takes_one_decision_on_every_backend_and_the_port() -> None:
    """`record(decision)`: one parameter, on the port and on both backends."""
    for record in (ports.StateRepo.record, StateStore.record, PgStore.record):
        names = [
            name for name, kind, _ in params(record) if kind is not inspect.Parameter.VAR_KEYWORD
        ]
        assert names[0] == "decision", record.__qualname__
    assert ["decision"] == [name for name, _, _ in params(ports.StateRepo.record)]


def test_a_decision_is_frozen_with_empty_defaults() -> None:
    write = Decision(now=T0)

    assert write.empty
    assert ((), (), {}, (), {}, (), (), (), {}) == (
        write.snapshots,
        write.entries,
        write.flags,
        write.events,
        write.since,
        write.polled,
        write.opened,
        write.resolved,
        write.reminders,
    )
    assert not Decision(now=T0, polled=["sft/a"]).empty
    try:
        write.now = T0 + timedelta(1)  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("a Decision can be changed")


def test_the_async_adapter_forwards_every_port_method_through_one_mechanism() -> None:
    """No hand-written forwarders: every port method of `AsyncStore` but `record` (whose
    keyword shim the runtime still uses) is a `Threaded` descriptor over `StateStore`'s."""
    own = vars(AsyncStore)
    hand_written = [
        name
        for name in port_methods()
        if name not in ("record", "fence") and not isinstance(own.get(name), aio.Threaded)
    ]

    assert [] == hand_written


def test_both_backends_offer_the_ports_with_the_same_signatures() -> None:
    """One surface: each port method takes the same parameters on SQLite and PostgreSQL."""
    differ = [
        name
        for name in port_methods()
        if name != "record"  # its first parameter is checked above; the keyword shim differs
        and params(getattr(StateStore, name)) != params(getattr(PgStore, name))
    ]

    assert [] == differ


async def test_one_write_is_read_back_whole(any_store: Store) -> None:
    """Every part of one `Decision` lands in one `record`, on both backends."""
    snapshot = JobSnapshot(ref=JobRef(JobKind.SFT, "a"), state="FAILED", account_id="acme")
    event = Event("sft/a", "RUNNING", "FAILED", T0, fields=(("reason", "OOM"),))
    entry = OutboxEntry(
        job_key="sft/a",
        channel="team",
        url_key="k",
        url_display="json://x",
        old_state="RUNNING",
        new_state="FAILED",
        created_at=T0,
        event=event,
    )
    condition = Condition("sft/a", ConditionName.STALLED, T0, "30m")

    await any_store.record(
        Decision(
            [snapshot],
            [entry],
            now=T0,
            flags={"n": "1"},
            since={"sft/a": Since(T0, T0, True)},
            opened=[condition],
            reminders={("team", "sft/a"): T0 + timedelta(hours=1)},
        )
    )

    assert {"sft/a": snapshot} == await any_store.last_all()
    assert "1" == await any_store.flag("n")
    assert {"sft/a": Since(T0, T0, True)} == await any_store.since_all()
    assert {"sft/a": T0} == await any_store.polled_all()
    assert [condition] == await any_store.open_conditions()
    assert {("team", "sft/a"): T0 + timedelta(hours=1)} == await any_store.reminder_times()
    claimed = await any_store.claim(T0, holder="d", lease=timedelta(minutes=1))
    assert [(entry.job_key, event)] == [(d.entry.job_key, d.entry.event) for d in claimed]


async def test_a_forwarded_call_reads_the_arguments_as_they_were_passed(tmp_path: Path) -> None:
    """The worker thread gets copies: a caller that changes its busy set while the claim
    runs in the worker changes nothing in it."""
    store = await AsyncStore.open(tmp_path / "state.db")
    inside, go = anyio.Event(), threading.Event()
    seen: list[tuple[str, ...]] = []

    def spy(sync: StateStore, now: datetime, *, busy: Collection[str]) -> list[Delivery]:
        anyio.from_thread.run_sync(inside.set)
        go.wait(10)
        seen.append(tuple(sorted(busy)))
        return sync.claim(now, holder="d", lease=timedelta(minutes=1), busy=busy)

    claim = aio.Threaded(spy).__get__(store, AsyncStore)
    busy = {"a"}
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(claim, T0, busy=busy))
            await inside.wait()
            busy.add("b")  # while the worker holds the call
            go.set()
    finally:
        await anyio.to_thread.run_sync(store.sync.close)
    assert [("a",)] == seen
