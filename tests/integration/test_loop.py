"""The watcher loop end to end in one process: simulator and receiver over loopback, real SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from structlog.testing import capture_logs

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.alerting import Time, rewired, watcher_on
from tests.support.loop import settings_for
from tests.support.servers import JsonReceiver, ServedApp
from tests.support.waiting import DEADLINE
from watcher import app, config
from watcher.runtime.lanes import DispatchReport
from watcher.runtime.poller import Poller

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

#: A channel's pace (1 a second by default) is kept on real monotonic time: the tests here
#: send faster, and a retry on the fake clock does not wait it out.
UNPACED = {"max_per_second": 100}


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    """Where the state database lives for one test."""
    return tmp_path / "state.db"


@pytest.fixture
def settings(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, state_path: Path
) -> config.Settings:
    """Three DPO jobs watched, one channel posting to the receiver."""
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="PENDING")
    sim.add_job("job-c", state="RUNNING")
    return settings_for(
        server,
        state_path,
        ["job-a", "job-b", "job-c"],
        [{"name": "team", "urls": [receiver.url()], **UNPACED}],
    )


def one_job_to(
    server: ServedApp,
    sim: Simulator,
    state_path: Path,
    receiver: JsonReceiver,
    *,
    unpaced: bool = True,
    **watcher: Any,
) -> config.Settings:
    """job-a RUNNING, watched, its channel `t` on `receiver` (`unpaced`, or at the default
    pace); `watcher` settings."""
    sim.add_job("job-a", state="RUNNING")
    channel = {"name": "t", "urls": [receiver.url()], **(UNPACED if unpaced else {})}
    return settings_for(server, state_path, ["job-a"], [channel], **watcher)


@pytest.fixture
async def watcher(settings: config.Settings) -> AsyncIterator[Poller]:
    """A watcher on the real client, store and notifier."""
    async with app.open_watcher(settings) as w:
        yield w


async def retry_until(watcher: Poller, time: Time, done: Callable[[DispatchReport], bool]) -> None:
    """Dispatch what is due, moving the fake clock to the next wake, until `done` says so of a
    round: each retry's backoff passes on the clock, not in real time."""
    with anyio.fail_after(DEADLINE):
        while not done(await watcher.dispatch_once()):
            time.advance(await watcher.next_wake())
            await anyio.lowlevel.checkpoint()


async def test_first_sight_is_a_silent_baseline(
    watcher: Poller, receiver: JsonReceiver, state_path: Path
) -> None:
    """The first cycle records every job and sends nothing."""
    report = await watcher.run_once(force=True)

    assert 3 == report.polled
    assert [] == receiver.messages
    assert [(3,)] == await query(state_path, "SELECT COUNT(*) FROM jobs")


async def test_transitions_are_announced_with_their_reason(
    watcher: Poller, sim: Simulator, receiver: JsonReceiver
) -> None:
    """RUNNING→COMPLETED, PENDING→RUNNING and RUNNING→FAILED each reach the channel once."""
    await watcher.run_once(force=True)
    sim.set_state("job-a", "COMPLETED")
    sim.set_state("job-b", "RUNNING")
    sim.set_state("job-c", "FAILED", status_code="INTERNAL", status_message="CUDA OOM at step 7")

    report = await watcher.run_once(force=True)
    got = await receiver.wait_for_async(3)
    await watcher.run_once(force=True)

    assert 3 == len(report.transitions)
    titles = sorted(m["title"] for m in got)
    assert [
        "Sim job job-a (job-a): RUNNING → COMPLETED",
        "Sim job job-b (job-b): PENDING → RUNNING",
        "Sim job job-c (job-c): RUNNING → FAILED: CUDA OOM at step 7",
    ] == titles
    failed = next(m for m in got if "FAILED" in m["title"])
    assert "INTERNAL: CUDA OOM at step 7" in failed["message"]
    assert "failure" == failed["type"]
    assert 3 == len(receiver.messages)


async def test_restart_reports_what_changed_while_down_and_repeats_nothing(
    settings: config.Settings, sim: Simulator, receiver: JsonReceiver
) -> None:
    """A new watcher on the same state file announces changes made while none ran, once."""
    async with app.open_watcher(settings) as first:
        await first.run_once(force=True)
        sim.set_state("job-a", "COMPLETED")
        await first.run_once(force=True)
    await receiver.wait_for_async(1)
    sim.set_state("job-b", "RUNNING")

    async with app.open_watcher(settings) as second:
        report = await second.run_once(force=True)
        await second.run_once(force=True)

    got = await receiver.wait_for_async(2)
    assert ["job-b"] == [t.ref.job_id for t in report.transitions]
    assert 2 == len(got)


async def test_failed_channel_gets_the_message_once_it_recovers(
    settings: config.Settings, sim: Simulator, receiver: JsonReceiver
) -> None:
    """A 503 keeps the message in the outbox; it is retried alone until the receiver accepts it
    (the backoff waited out on a fake clock)."""
    time = Time()
    async with watcher_on(settings, time) as watcher:
        await watcher.run_once(force=True)
        receiver.status = 503
        sim.set_state("job-a", "FAILED", status_code="INTERNAL", status_message="boom")

        report = await watcher.run_once(force=True)
        assert 1 == report.failed
        assert 1 == len(receiver.rejected)
        receiver.status = 200

        await retry_until(watcher, time, lambda _: bool(receiver.messages))

    assert 1 == len(receiver.messages)
    assert "boom" in receiver.messages[0]["message"]


async def test_only_the_failed_url_is_retried(
    server: ServedApp, sim: Simulator, state_path: Path
) -> None:
    """With two URLs in a channel and one failing, the healthy one is not sent twice."""
    sim.add_job("job-a", state="RUNNING")
    async with JsonReceiver() as good, JsonReceiver() as bad:
        settings = settings_for(
            server,
            state_path,
            ["job-a"],
            [{"name": "both", "urls": [good.url(), bad.url()], **UNPACED}],
        )
        bad.status = 500
        time = Time()
        async with watcher_on(settings, time) as watcher:
            await watcher.run_once(force=True)
            sim.set_state("job-a", "COMPLETED")
            await watcher.run_once(force=True)
            bad.status = 200
            await retry_until(watcher, time, lambda _: bool(bad.messages))

        assert 1 == len(good.messages)
        assert 1 == len(bad.messages)


async def test_vanished_job_is_reported_once(
    watcher: Poller, sim: Simulator, receiver: JsonReceiver
) -> None:
    """A job whose GET answers 404 becomes NOT_FOUND, announced once with its known name."""
    await watcher.run_once(force=True)
    sim.remove_job("job-a")

    await watcher.run_once(force=True)
    watcher_last = [await watcher.run_once(force=True) for _ in range(2)]

    got = await receiver.wait_for_async(1)
    assert ["Sim job job-a (job-a): RUNNING → NOT_FOUND"] == [m["title"] for m in got]
    assert all(not r.transitions for r in watcher_last)


async def test_resumed_job_is_a_transition(
    watcher: Poller, sim: Simulator, receiver: JsonReceiver
) -> None:
    """An outcome is not final: FAILED→RUNNING after a resume is announced like any move."""
    sim.set_state("job-a", "FAILED")
    await watcher.run_once(force=True)
    sim.set_state("job-a", "RUNNING")

    report = await watcher.run_once(force=True)

    assert ["FAILED → RUNNING"] == [f"{t.old_state} → {t.new_state}" for t in report.transitions]
    await receiver.wait_for_async(1)


async def test_status_change_within_a_state_is_a_transition(
    watcher: Poller, sim: Simulator, receiver: JsonReceiver
) -> None:
    """A new status message while RUNNING is announced with the message."""
    await watcher.run_once(force=True)
    sim.set_state("job-a", "RUNNING", status_code="OK", status_message="re-queued on new node")

    await watcher.run_once(force=True)

    assert "re-queued on new node" in (await receiver.wait_for_async(1))[0]["message"]


async def test_channel_rules_route_messages(
    server: ServedApp, sim: Simulator, state_path: Path
) -> None:
    """`to_states` and `jobs` globs decide which channel hears which transition."""
    sim.add_job("prod-1", state="RUNNING")
    sim.add_job("dev-1", state="RUNNING")
    async with JsonReceiver() as outcomes, JsonReceiver() as prod:
        settings = settings_for(
            server,
            state_path,
            ["prod-1", "dev-1"],
            [
                {"name": "outcomes", "urls": [outcomes.url()], "to_states": ["COMPLETED"]},
                {"name": "prod", "urls": [prod.url()], "jobs": ["prod-*"]},
            ],
        )
        async with app.open_watcher(settings) as watcher:
            await watcher.run_once(force=True)
            sim.set_state("prod-1", "FAILED")
            sim.set_state("dev-1", "COMPLETED")
            await watcher.run_once(force=True)

        assert ["Sim job dev-1 (dev-1): RUNNING → COMPLETED"] == [
            m["title"] for m in await outcomes.wait_for_async(1)
        ]
        assert ["Sim job prod-1 (prod-1): RUNNING → FAILED"] == [
            m["title"] for m in await prod.wait_for_async(1)
        ]


async def test_settled_jobs_are_polled_slowly_but_still_polled(
    server: ServedApp, sim: Simulator, state_path: Path
) -> None:
    """A job with an outcome waits `terminal_poll_interval` between GETs instead of dropping out."""
    sim.add_job("job-a", state="COMPLETED")
    settings = settings_for(server, state_path, ["job-a"], [])
    now = [datetime(2026, 11, 27, 12, 0, tzinfo=UTC)]
    async with app.open_watcher(settings) as real:
        watcher = rewired(real, clock=lambda: now[0])

        first = await watcher.run_once()
        now[0] += timedelta(seconds=settings.watcher.poll_interval)
        second = await watcher.run_once()
        now[0] += timedelta(seconds=real.plan.terminal_poll_interval)
        third = await watcher.run_once()

    assert (1, 0, 1) == (first.polled, second.polled, third.polled)


async def test_run_forever_announces_within_one_interval_and_stops(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, state_path: Path
) -> None:
    """In the daemon's loop a change reaches the channel within one poll interval plus a second."""
    settings = one_job_to(server, sim, state_path, receiver, unpaced=False, poll_interval=1)
    stop = anyio.Event()
    baselined = anyio.Event()
    async with (
        app.open_watcher(settings, on_transition=lambda _: baselined.set()) as watcher,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(watcher.run_forever, stop)
        with anyio.fail_after(10):
            await baselined.wait()
        changed_at = anyio.current_time()
        sim.set_state("job-a", "COMPLETED")
        await receiver.wait_for_async(1, 10.0)
        latency = anyio.current_time() - changed_at
        stop.set()

    assert latency <= settings.watcher.poll_interval + 1.0


async def test_discover_watches_every_job_of_the_kind(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, state_path: Path
) -> None:
    """`discover = true` lists the account's jobs: new ones are baselined, vanished ones confirmed."""
    sim.add_job("found-1", state="RUNNING")
    sim.add_job("found-2", state="RUNNING")
    settings = config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {"state_path": str(state_path)},
            "watch": [{"kind": "dpo", "discover": True}],
            "channel": [{"name": "t", "urls": [receiver.url()]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )
    async with app.open_watcher(settings) as watcher:
        first = await watcher.run_once(force=True)
        sim.add_job("found-3", state="PENDING")
        sim.set_state("found-1", "COMPLETED")
        sim.remove_job("found-2")
        second = await watcher.run_once(force=True)
        third = await watcher.run_once(force=True)

    assert 2 == len(first.transitions)
    moves = sorted(
        f"{t.ref.job_id}: {t.old_state or '-'} → {t.new_state}" for t in second.transitions
    )
    assert [
        "found-1: RUNNING → COMPLETED",
        "found-2: RUNNING → NOT_FOUND",
        "found-3: - → PENDING",
    ] == moves
    assert [] == third.transitions
    titles = sorted(m["title"] for m in await receiver.wait_for_async(2))
    assert [
        "Sim job found-1 (found-1): RUNNING → COMPLETED",
        "Sim job found-2 (found-2): RUNNING → NOT_FOUND",
    ] == titles


async def test_reload_baselines_added_jobs_drops_removed_ones_and_rebuilds_channels(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, state_path: Path
) -> None:
    """After a reload new jobs start silently, dropped jobs are forgotten, and undeliverable
    rows for a removed URL are declared dead instead of retried for a day."""
    for job in ("job-a", "job-b", "job-c"):
        sim.add_job(job, state="RUNNING")
    before = settings_for(
        server, state_path, ["job-a", "job-b"], [{"name": "t", "urls": [receiver.url()], **UNPACED}]
    )
    async with JsonReceiver() as second:
        after = settings_for(
            server, state_path, ["job-a", "job-c"], [{"name": "t2", "urls": [second.url()]}]
        )
        time = Time()
        async with watcher_on(before, time) as watcher:
            await watcher.run_once(force=True)
            receiver.status = 503
            sim.set_state("job-a", "PENDING")
            await watcher.run_once(force=True)
            notifier = app.build_notifier(after)
            watcher.reload(app.build_plan(after, notifier), notifier)
            sim.set_state("job-a", "RUNNING")
            report = await watcher.run_once(force=True)
            if not report.dead:
                await retry_until(watcher, time, lambda round: round.dead > 0)

            assert watcher.last(before.refs()[1]) is None
        assert ["dpo/job-a", "dpo/job-c"] == sorted(t.ref.key for t in report.transitions)
        assert [None] == [t.old for t in report.transitions if t.ref.job_id == "job-c"]
        assert ["Sim job job-a (job-a): PENDING → RUNNING"] == [
            m["title"] for m in await second.wait_for_async(1)
        ]
    assert [("dead", "t"), ("delivered", "t2")] == await query(
        state_path, "SELECT status, channel FROM outbox ORDER BY id"
    )
    assert [("dpo/job-a",), ("dpo/job-c",)] == await query(
        state_path, "SELECT job_key FROM jobs ORDER BY job_key"
    )


async def test_undeliverable_messages_die_after_retry_for(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, state_path: Path
) -> None:
    """A channel that never recovers gets its delivery declared dead after `retry_for`."""
    settings = one_job_to(server, sim, state_path, receiver, retry_for=0.5)
    receiver.status = 500
    time = Time()
    async with watcher_on(settings, time) as watcher:
        await watcher.run_once(force=True)
        sim.set_state("job-a", "FAILED")
        report = await watcher.run_once(force=True)
        await retry_until(watcher, time, lambda round: round.dead > 0)

    assert 1 == report.failed
    assert [("dead",)] == await query(state_path, "SELECT status FROM outbox")


async def test_timed_out_send_is_retried_as_maybe_delivered(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, state_path: Path
) -> None:
    """A send slower than `notify_timeout` may have arrived: it is retried, the one duplicate."""
    settings = one_job_to(server, sim, state_path, receiver, notify_timeout=0.3)
    time = Time()
    async with watcher_on(settings, time) as watcher:
        await watcher.run_once(force=True)
        receiver.delay = 1.0
        sim.set_state("job-a", "COMPLETED")
        with capture_logs() as logs:
            report = await watcher.run_once(force=True)
        receiver.delay = 0.0
        await retry_until(watcher, time, lambda _: len(receiver.messages) >= 2)

    assert 1 == report.failed
    assert ["maybe_delivered"] == [e["outcome"] for e in logs if e["event"] == "notify.failed"]
    first, second = receiver.messages
    assert first["title"] == second["title"]
    assert [("delivered",)] == await query(state_path, "SELECT status FROM outbox")


async def test_notify_new_announces_jobs_created_later(
    server: ServedApp, sim: Simulator, state_path: Path
) -> None:
    """Jobs that exist at the first listing are a silent baseline, even after a restart; a job
    created later reaches channels with `notify_new`, and only those."""
    sim.add_job("old-1", state="RUNNING")
    async with JsonReceiver() as wants_new, JsonReceiver() as plain:
        settings = config.parse(
            {
                "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
                "watcher": {"state_path": str(state_path)},
                "watch": [{"kind": "dpo", "discover": True}],
                "channel": [
                    {"name": "new", "urls": [wants_new.url()], "notify_new": True},
                    {"name": "plain", "urls": [plain.url()]},
                ],
            },
            {"FIREWORKS_API_KEY": KEY},
        )
        async with app.open_watcher(settings) as watcher:
            await watcher.run_once(force=True)
        sim.add_job("fresh-1", state="PENDING")
        async with app.open_watcher(settings) as restarted:
            report = await restarted.run_once(force=True)

        assert [("fresh-1", True)] == [(t.ref.job_id, t.new_job) for t in report.transitions]
        assert ["Sim job fresh-1 (fresh-1): (new job) → PENDING"] == [
            m["title"] for m in await wants_new.wait_for_async(1)
        ]
        assert [] == plain.messages


async def test_delivered_rows_are_pruned_after_history_days(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, state_path: Path
) -> None:
    """Delivered outbox rows are kept `history_days`, then deleted, so the file stays small."""
    settings = one_job_to(server, sim, state_path, receiver, unpaced=False, history_days=7)
    now = [datetime.now(UTC)]
    async with app.open_watcher(settings) as real:
        watcher = rewired(real, clock=lambda: now[0])
        await watcher.run_once(force=True)
        sim.set_state("job-a", "COMPLETED")
        await watcher.run_once(force=True)
        await receiver.wait_for_async(1)
        rows_after_a_day = await outbox_rows(state_path)  # delivered, kept for now
        now[0] += timedelta(days=8)
        await watcher.run_once(force=True)

    assert 1 == rows_after_a_day
    assert 0 == await outbox_rows(state_path)


async def outbox_rows(state_path: Path) -> int:
    """How many outbox rows the state file holds."""
    return int((await query(state_path, "SELECT COUNT(*) FROM outbox"))[0][0])


async def query(state_path: Path, sql: str) -> list[tuple[Any, ...]]:
    """The rows `sql` selects from the state file, read in a worker thread (sqlite3 blocks)."""

    def read() -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(state_path)) as db:
            return db.execute(sql).fetchall()

    return await anyio.to_thread.run_sync(read)
