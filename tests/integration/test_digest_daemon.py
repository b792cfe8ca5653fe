"""Digests end to end: the simulator and a receiver over loopback, a real watcher recording
transitions into a real SQLite file, on an injected clock that reaches 09:00 without waiting.

The poller plans digests each cycle and writes their rows with the period's mark in the
cycle's one transaction; its dispatcher delivers them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.clocks import T0, Clocks
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app, config
from watcher.core.clock import SteadyClock
from watcher.core.decision import Decision
from watcher.core.delivery import Channel, ChannelPolicy, Event
from watcher.runtime.due_digests import DigestBatch, DigestMemo, due_digests
from watcher.stores.aio import AsyncStore

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow


def settings_for(server: ServedApp, state: Path, receiver: JsonReceiver) -> config.Settings:
    digest = {"digest": "09:00", "digest_timezone": "Europe/Paris"}
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {"poll_interval": 1, "state_path": str(state)},
            "watch": [
                {"kind": "dpo", "jobs": ["job-a", "job-b", "job-c"]},
                {"kind": "sft", "jobs": ["job-d"]},
            ],
            "channel": [
                {"name": "team", "urls": [receiver.url("/team")], **digest},
                {"name": "prod", "urls": [receiver.url("/prod")], "jobs": ["prod-*"], **digest},
                {"name": "plain", "urls": [receiver.url("/plain")]},
            ],
        },
        {"FIREWORKS_API_KEY": KEY},
    )


def digests(receiver: JsonReceiver) -> list[dict[str, Any]]:
    return [m for m in receiver.messages if str(m["title"]).startswith("Digest")]


async def test_one_digest_per_period_exactly_once_across_a_restart(
    server: ServedApp, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """Deployed at 08:00 Paris time: no digest for the day before it ran; at 09:00 one digest
    per digest channel, with the day's outcomes, the active jobs, the open condition and the
    cost; asking again, or after a restart, queues nothing; the next day brings the next."""
    clocks = Clocks()
    sim = Simulator(api_key=KEY, account_id=ACCOUNT, clock=clocks.mono, start_time=T0)
    server.app = sim
    sim.add_job("job-a", state="RUNNING", display_name="Nightly DPO")
    sim.add_job("job-b", state="RUNNING")
    sim.add_job("job-c", state="PENDING")
    sim.add_job(
        "job-d",
        collection="supervisedFineTuningJobs",
        state="RUNNING",
        progress=40,
        estimated_cost_usd=12.5,
    )
    # Parsing reads the zone's file: off the event loop, as the CLI parses before it starts.
    settings = await anyio.to_thread.run_sync(settings_for, server, tmp_path / "state.db", receiver)
    clock = SteadyClock(clocks.wall, clocks.mono)
    async with app.open_runtime(settings, clock=clock) as runtime:
        watcher = runtime.watcher
        await watcher.run_once(force=True)
        # The first cycle marks the period that ended before the daemon ran as done.
        assert {
            "team": "2026-12-01T09:00+01:00",
            "prod": "2026-12-01T09:00+01:00",
        } == await watcher._store.flags("digest:")

        clocks.until(T0 + timedelta(minutes=40))
        sim.set_state("job-a", "COMPLETED")
        sim.set_state("job-b", "FAILED", status_code="INTERNAL", status_message="CUDA OOM")
        sim.set_state("job-c", "RUNNING")
        await watcher.run_once(force=True)
        # Three transitions and job-d's stall (40 minutes at 40 %), to team and plain.
        await receiver.wait_for_async(8)

        clocks.until(T0 + timedelta(minutes=50))
        await watcher.run_once(force=True)
        assert [] == digests(receiver)

        clocks.until(datetime(2026, 12, 2, 8, 0, 30, tzinfo=UTC))
        await watcher.run_once(force=True)
        got = digests(receiver)
        assert 1 == len(got)
        digest = got[0]
        assert "/team" == digest["path"]
        assert (
            "Digest 2026-12-02 09:00 (Europe/Paris): 1 completed, 1 failed, 2 active, "
            "1 open condition"
        ) == digest["title"]
        assert [
            "Digest for 2026-12-01 09:00 to 2026-12-02 09:00 (Europe/Paris, 24h).",
            "",
            "**Completed (1)**",
            "- **Nightly DPO** (`job-a`) COMPLETED at 12-02 08:40 after 40m 00s",
            "",
            "**Failed (1)**",
            (
                "- **Sim job job-b** (`job-b`) FAILED at 12-02 08:40 after 40m 00s: "
                "INTERNAL: CUDA OOM"
            ),
            "",
            "**Active (2)**",
            "- **Sim job job-c** (`job-c`) RUNNING",
            "- **Sim job job-d** (`job-d`) RUNNING, 40% · USD 12.50",
            "",
            "**Open conditions (1)**",
            (
                "- **Sim job job-d** (`job-d`): stalled since 12-02 08:40: "
                "no progress at 40% for 40m 00s in RUNNING"
            ),
            "",
            "**Estimated cost**: USD 12.50 (1 job with an estimate)",
        ] == str(digest["message"]).splitlines()
        assert "info" == digest["type"]
        await watcher.run_once(force=True)  # the same period again: nothing
        assert 1 == len(digests(receiver))

    # A restart on the same file: nothing repeated; the next day brings the next digest.
    async with app.open_runtime(settings, clock=clock) as runtime:
        clocks.until(datetime(2026, 12, 2, 20, 0, tzinfo=UTC))
        await runtime.watcher.run_once(force=True)
        assert 1 == len(digests(receiver))

        clocks.until(datetime(2026, 12, 3, 8, 1, tzinfo=UTC))
        await runtime.watcher.run_once(force=True)
        titles = [m["title"] for m in digests(receiver)]
        assert "Digest 2026-12-03 09:00 (Europe/Paris): 2 active, 2 open conditions" == titles[-1]
        assert 2 == len(titles)


class CountingStore:
    """A real store, counting the reads digests make of it."""

    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self.reads: list[str] = []

    async def flags(self, prefix: str) -> dict[str, str]:
        self.reads.append("flags")
        return await self.store.flags(prefix)

    async def digest_events(
        self, start: datetime, end: datetime, *, limit: int = 10_000
    ) -> list[Event]:
        self.reads.append("events")
        return await self.store.digest_events(start, end, limit=limit)


async def test_nothing_is_read_while_no_period_ends(tmp_path: Path) -> None:
    """Polled every 30 s for an hour with an hourly digest: the flags are read at the start,
    when a period ends, and once more after each mark to see it written; a batch that was
    never written is planned again rather than lost."""
    store = await AsyncStore.open(tmp_path / "state.db")
    with store.sync:
        counting = CountingStore(store)
        team = Channel("team", (), policy=ChannelPolicy(digest="hourly", digest_empty=True))
        memo, now = DigestMemo(), datetime(2026, 12, 2, 9, 0, 15, tzinfo=UTC)

        async def cycle() -> DigestBatch:
            return await due_digests(counting, [team], now=now, last={}, conditions=[], memo=memo)

        await store.record(Decision([], [], now=now, flags=(await cycle()).flags))  # the baseline
        for _ in range(119):
            now += timedelta(seconds=30)
            assert DigestBatch() == await cycle()
        assert ["flags", "flags"] == counting.reads  # the start, then the baseline's mark

        counting.reads.clear()
        now += timedelta(seconds=30)  # 10:00:15
        lost = await cycle()
        assert ["flags", "events"] == counting.reads
        again = await cycle()  # the first batch was never written: planned again
        assert [n.message for n in lost.notices] == [n.message for n in again.notices]
        assert {"digest:team": "2026-12-02T10:00+00:00"} == again.flags
        await store.record(Decision([], [], now=now, flags=again.flags))

        counting.reads.clear()
        for _ in range(10):
            now += timedelta(seconds=30)
            assert DigestBatch() == await cycle()
        assert ["flags"] == counting.reads
