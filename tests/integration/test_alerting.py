"""Alerting end to end: conditions, reminders and milestones against the simulator's `busy`
scenario, a real receiver and a real state file, on one injected clock (the simulator's and
the watcher's), so hours pass in a test without waiting for them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import anyio.to_thread
import pytest

from fireworks_sim import Simulator, scenario
from tests.support.account import ACCOUNT, KEY
from tests.support.alerting import MINUTE, SFT, Time, cycle, rows, settings_for, titles, watcher_on
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app
from watcher.core.silences import Silence
from watcher.stores.sqlite import StateStore

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

HOUR = 3600.0


@pytest.fixture
def time() -> Time:
    return Time()


@pytest.fixture
def busy(server: ServedApp, time: Time) -> Simulator:
    """The `busy` scenario (every collection moving), on the fake clock."""
    sim = Simulator(api_key=KEY, account_id=ACCOUNT, clock=time.monotonic, start_time=time.wall())
    scenario(sim, "busy")
    server.app = sim
    return sim


async def test_stalled_job_is_announced_once_resolved_once_and_survives_a_restart(
    server: ServedApp, busy: Simulator, time: Time, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """An SFT job RUNNING at 0 % for 31 minutes opens `stalled` (once, however many cycles
    see it), its progress resolves it (once), and a restart repeats neither."""
    busy.add_job("stuck-sft", collection=SFT, state="RUNNING", progress=0)
    watches = [{"kind": "sft", "discover": True, "stall_after": "30m"}]
    channels = [{"name": "team", "urls": [receiver.url()], "jobs": ["stuck-*"]}]
    settings = settings_for(server, tmp_path / "state.db", watches, channels)

    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 0)
        await cycle(watcher, time, 20 * MINUTE)
        assert [] == receiver.messages
        await cycle(watcher, time, 11 * MINUTE)
        await cycle(watcher, time, 5 * MINUTE)
        (stalled,) = await receiver.wait_for_async(1)
        busy.set_progress("stuck-sft", 12, collection=SFT)
        await cycle(watcher, time, MINUTE)
        resolved = (await receiver.wait_for_async(2))[1]
    async with watcher_on(settings, time) as again:
        await cycle(again, time, MINUTE)

    assert (
        "Sim job stuck-sft (stuck-sft): stalled: no progress for 31m 00s in RUNNING"
        == (stalled["title"])
    )
    assert "warning" == stalled["type"]
    assert "Sim job stuck-sft (stuck-sft): no longer stalled" == resolved["title"]
    assert "Now RUNNING at 12%." in resolved["message"]
    assert "success" == resolved["type"]
    assert 2 == len(receiver.messages)
    assert [] == await rows(tmp_path / "state.db", "SELECT subject FROM conditions")


async def test_waiting_too_long_and_running_too_long(
    server: ServedApp, busy: Simulator, time: Time, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """PENDING past `pending_after`, and active past `max_runtime` (from createTime)."""
    busy.add_job("queued-dpo", state="PENDING")
    created = (time.wall() - timedelta(hours=11)).isoformat().replace("+00:00", "Z")
    busy.add_job("long-dpo", state="RUNNING", create_time=created)
    watches = [
        {
            "kind": "dpo",
            "discover": True,
            "pending_after": "2h",
            "max_runtime": "12h",
            "stall_after": 0,
        }
    ]
    channels = [{"name": "team", "urls": [receiver.url()], "jobs": ["queued-*", "long-*"]}]
    settings = settings_for(server, tmp_path / "state.db", watches, channels)

    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 0)
        await cycle(watcher, time, 61 * MINUTE)
        (long,) = await receiver.wait_for_async(1)
        await cycle(watcher, time, 60 * MINUTE)
        (_, queued) = await receiver.wait_for_async(2)

    assert (
        "Sim job long-dpo (long-dpo): running too long: running for 12h 01m 00s, more than the "
        "limit of 12h 00m 00s"
    ) == long["title"]
    assert (
        "Sim job queued-dpo (queued-dpo): waiting too long: PENDING for 2h 01m 00s"
        == (queued["title"])
    )


async def test_reminders_repeat_until_the_job_is_resumed(
    server: ServedApp, busy: Simulator, time: Time, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """A FAILED job is reminded every `repeat_interval`, then no more once it runs again; a
    channel without the setting hears it once."""
    busy.add_job("flaky-dpo", state="RUNNING")
    watches = [{"kind": "dpo", "discover": True, "stall_after": 0}]
    async with JsonReceiver() as plain:
        channels = [
            {
                "name": "team",
                "urls": [receiver.url()],
                "jobs": ["flaky-*"],
                "repeat_interval": "1h",
            },
            {"name": "plain", "urls": [plain.url()], "jobs": ["flaky-*"]},
        ]
        settings = settings_for(server, tmp_path / "state.db", watches, channels)
        async with watcher_on(settings, time) as watcher:
            await cycle(watcher, time, 0)
            busy.set_state(
                "flaky-dpo", "FAILED", status_code="INTERNAL", status_message="NCCL timeout"
            )
            await cycle(watcher, time, 30)
            await cycle(watcher, time, 59 * MINUTE)  # 59m30s: not yet
            await cycle(watcher, time, MINUTE)
            await receiver.wait_for_async(2)
            await cycle(watcher, time, HOUR)
            await receiver.wait_for_async(3)
        # A restart keeps the rhythm: the next one is an hour after the last, not at once.
        async with watcher_on(settings, time) as watcher:
            await cycle(watcher, time, 30 * MINUTE)
            assert 3 == len(receiver.messages)
            busy.set_state("flaky-dpo", "RUNNING")
            await cycle(watcher, time, 30 * MINUTE)
            await cycle(watcher, time, 2 * HOUR)
            await receiver.wait_for_async(4)
        plain_titles = titles(plain)

    assert [
        "Sim job flaky-dpo (flaky-dpo): RUNNING → FAILED: NCCL timeout",
        "Reminder: Sim job flaky-dpo (flaky-dpo) still FAILED (1h 00m 00s)",
        "Reminder: Sim job flaky-dpo (flaky-dpo) still FAILED (2h 00m 00s)",
        "Sim job flaky-dpo (flaky-dpo): FAILED → RUNNING",
    ] == titles(receiver)
    assert 2 == len(plain_titles)
    assert [] == await rows(tmp_path / "state.db", "SELECT * FROM reminders")


async def test_progress_milestones_with_an_eta(
    server: ServedApp, busy: Simulator, time: Time, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """`progress_every = 25` announces 25, 50 and 75 % once each, with an ETA."""
    busy.add_job("ms-sft", collection=SFT, state="PENDING", progress=0)
    watches = [{"kind": "sft", "discover": True}]
    channels = [
        {
            "name": "team",
            "urls": [receiver.url()],
            "jobs": ["ms-*"],
            "progress_every": 25,
            "to_states": ["COMPLETED"],
        }
    ]
    settings = settings_for(server, tmp_path / "state.db", watches, channels)

    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 0)
        busy.set_state("ms-sft", "RUNNING", collection=SFT)
        await cycle(watcher, time, 30)
        for percent in (10, 30, 40, 55, 80, 90):
            busy.set_progress("ms-sft", percent, collection=SFT)
            await cycle(watcher, time, 10 * MINUTE)
        busy.set_state("ms-sft", "COMPLETED", collection=SFT)
        await cycle(watcher, time, MINUTE)
        await receiver.wait_for_async(4)

    assert [
        "Sim job ms-sft (ms-sft): 25% done, ETA 46m 40s",
        "Sim job ms-sft (ms-sft): 50% done, ETA 32m 43s",
        "Sim job ms-sft (ms-sft): 75% done, ETA 12m 30s",
        "Sim job ms-sft (ms-sft): RUNNING → COMPLETED",
    ] == titles(receiver)


async def test_a_silenced_condition_is_recorded_then_announced_when_the_silence_ends(
    server: ServedApp, busy: Simulator, time: Time, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """A silence written by another process (as `silence add` does) mutes a stall in the
    running watcher; the row is kept as silenced; expiring the silence announces it."""
    busy.add_job("prod-1", collection=SFT, state="RUNNING", progress=0)
    watches = [{"kind": "sft", "discover": True, "stall_after": "30m"}]
    channels = [{"name": "team", "urls": [receiver.url()], "jobs": ["prod-*"]}]
    state = tmp_path / "state.db"
    settings = settings_for(server, state, watches, channels)

    def add() -> int:
        with StateStore.open(state) as store:
            silence = Silence(0, "prod-*", ends_at=time.wall() + timedelta(hours=2))
            return store.add_silence(silence, now=time.wall())

    def expire(silence_id: int) -> bool:
        with StateStore.open(state) as store:
            return store.expire_silence(silence_id, now=time.wall())

    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 0)
        silence_id = await anyio.to_thread.run_sync(add)
        await cycle(watcher, time, 31 * MINUTE)
        await cycle(watcher, time, 2)
        silenced = await rows(state, "SELECT status, silence_id FROM outbox")
        assert [] == receiver.messages
        assert await anyio.to_thread.run_sync(expire, silence_id)
        await cycle(watcher, time, 2)
        (announced,) = await receiver.wait_for_async(1)

    assert [("silenced", silence_id)] == silenced
    assert (
        "Sim job prod-1 (prod-1): stalled: no progress for 31m 00s in RUNNING"
        == (announced["title"])
    )


async def test_a_burst_of_failures_is_one_grouped_message(
    server: ServedApp, busy: Simulator, time: Time, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """40 jobs failing within `group_wait` reach a `group_by = "account"` channel as one."""
    for n in range(40):
        busy.add_job(f"burst-{n:02d}", collection=SFT, state="RUNNING", progress=10)
    watches = [{"kind": "sft", "discover": True}]
    channels = [
        {
            "name": "team",
            "urls": [receiver.url()],
            "jobs": ["burst-*"],
            "group_wait": "30s",
            "group_by": "account",
        }
    ]
    settings = settings_for(server, tmp_path / "state.db", watches, channels)

    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 0)
        for n in range(40):
            busy.set_state(
                f"burst-{n:02d}",
                "FAILED",
                collection=SFT,
                status_code="RESOURCE_EXHAUSTED",
                status_message="Out of GPU quota",
            )
        await cycle(watcher, time, 10)
        assert [] == receiver.messages  # held for the window
        await cycle(watcher, time, 31)
        (burst,) = await receiver.wait_for_async(1)
        await cycle(watcher, time, 60)

    assert "40 jobs FAILED: burst-00, burst-01, burst-02, … and 37 more" == burst["title"]
    assert 40 == burst["message"].count("RUNNING → FAILED")
    assert "failure" == burst["type"]
    assert 1 == len(receiver.messages)


async def test_an_hourly_digest_through_the_poller(
    server: ServedApp, busy: Simulator, time: Time, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """The poller queues one digest at the hour, with what completed in it, and not again."""
    busy.add_job("dig-a", state="RUNNING")
    busy.add_job("dig-b", state="RUNNING")
    watches = [{"kind": "dpo", "discover": True, "stall_after": 0}]
    channels = [
        {
            "name": "team",
            "urls": [receiver.url()],
            "jobs": ["dig-*"],
            "digest": "hourly",
            "to_states": ["UNSPECIFIED"],
        }
    ]
    settings = settings_for(server, tmp_path / "state.db", watches, channels)

    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 5)  # 09:00:05: the first start marks 08:00-09:00 done
        busy.set_state("dig-a", "COMPLETED")
        await cycle(watcher, time, 10 * MINUTE)
        await cycle(watcher, time, 50 * MINUTE)  # 10:00:05
        (digest,) = await receiver.wait_for_async(1)
        await cycle(watcher, time, MINUTE)
    async with watcher_on(settings, time) as again:
        await cycle(again, time, MINUTE)

    assert "Digest 2026-12-01 09:00-10:00 (UTC): 1 completed, 1 active" == digest["title"]
    assert "dig-a" in digest["message"]
    assert "**Active (1)**" in digest["message"]
    assert 1 == len(receiver.messages)


async def test_a_reload_with_a_shorter_stall_after_is_applied_to_quiet_jobs(
    server: ServedApp, busy: Simulator, time: Time, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """Conditions are looked at again only for changed jobs or past a job's deadline; a reload
    that lowers the threshold makes every job count again, so a quiet job stalls at once."""
    busy.add_job("quiet-sft", collection=SFT, state="RUNNING", progress=5)
    watches = [{"kind": "sft", "discover": True, "stall_after": "2h"}]
    channels = [{"name": "team", "urls": [receiver.url()], "jobs": ["quiet-*"]}]
    settings = settings_for(server, tmp_path / "state.db", watches, channels)

    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 0)
        await cycle(watcher, time, 40 * MINUTE)  # quiet for 40 minutes: not yet, at 2 h
        assert [] == receiver.messages
        shorter = settings_for(
            server, tmp_path / "state.db", [{**watches[0], "stall_after": "30m"}], channels
        )
        notifier = app.build_notifier(shorter)
        watcher.reload(app.build_plan(shorter, notifier), notifier)
        await cycle(watcher, time, 30)
        (stalled,) = await receiver.wait_for_async(1)

    assert (
        "Sim job quiet-sft (quiet-sft): stalled: no progress at 5% for 40m 30s in RUNNING"
        == (stalled["title"])
    )
