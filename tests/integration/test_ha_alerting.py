"""Alerting with two replicas on one real PostgreSQL database, across a fail-over: one digest
per period and one reminder per interval, whoever leads; a deposed leader that wakes up queues
nothing. The simulator and a receiver over loopback, an injected wall clock that reaches each
hour without waiting; the lease runs on the database server's own clock, in real time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import anyio.to_thread
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.clocks import T0, Clocks
from tests.support.ha import take_over, titles
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app, config
from watcher.core.clock import SteadyClock

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow


def settings_for(server: ServedApp, state_url: str, receiver: JsonReceiver) -> config.Settings:
    channel = {"digest": "hourly", "repeat_interval": "30m"}
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {"poll_interval": 1, "state_url": state_url},
            "watch": [{"kind": "dpo", "jobs": ["job-a", "job-b"]}],
            "channel": [{"name": "team", "urls": [receiver.url("/team")], **channel}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )


async def test_digests_and_reminders_are_sent_once_across_a_fail_over(
    server: ServedApp, receiver: JsonReceiver, state_url: str
) -> None:
    """Replica A leads and announces a failure, a stall, the first reminder and the 07:00-08:00
    digest, then freezes. B takes over in the same hour and repeats none of them. A wakes up,
    polls a new transition and its writes are refused; B announces it, the stall's end, the
    next reminders and the next digest, each once."""
    clocks = Clocks()
    sim = Simulator(api_key=KEY, account_id=ACCOUNT, clock=clocks.mono, start_time=T0)
    server.app = sim
    sim.add_job("job-a", state="RUNNING", display_name="Nightly DPO")
    sim.add_job("job-b", state="RUNNING")
    settings = await anyio.to_thread.run_sync(settings_for, server, state_url, receiver)
    clock = SteadyClock(clocks.wall, clocks.mono)
    async with (
        app.open_runtime(settings, clock=clock) as a,
        app.open_runtime(settings, clock=clock) as b,
    ):
        await take_over(a)
        await b.leadership.check()
        assert not b.leadership.leader
        a.watcher.new_term()
        await a.watcher.run_once(force=True)  # 07:00 UTC: the baseline

        clocks.until(T0 + timedelta(minutes=10))
        sim.set_state("job-a", "FAILED", status_code="INTERNAL", status_message="NCCL timeout")
        await a.watcher.run_once(force=True)
        clocks.until(T0 + timedelta(minutes=45))  # 35 minutes FAILED: the first reminder
        await a.watcher.run_once(force=True)
        clocks.until(datetime(2026, 12, 2, 8, 0, 30, tzinfo=UTC))  # the hour's digest
        await a.watcher.run_once(force=True)
        before = [
            "Nightly DPO (job-a): RUNNING → FAILED: NCCL timeout",
            "Sim job job-b (job-b): stalled: no progress for 45m 00s in RUNNING",
            "Reminder: Nightly DPO (job-a) still FAILED (35m 00s)",
            "Digest 2026-12-02 07:00-08:00 (UTC): 1 failed, 1 active, 1 open condition",
        ]
        assert before == titles(receiver)

        # A freezes (no more renewals); B takes over in the same hour and starts a term.
        await take_over(b)
        assert b.leadership.epoch == (a.leadership.epoch or 0) + 1
        b.watcher.new_term()
        await b.watcher.run_once(force=True)
        assert before == titles(receiver)

        # A wakes up unaware: what it polls is refused by the fence, so it queues nothing.
        clocks.until(datetime(2026, 12, 2, 8, 5, tzinfo=UTC))
        sim.set_state("job-b", "COMPLETED")
        clocks.until(datetime(2026, 12, 2, 8, 15, tzinfo=UTC))  # the second reminder is due
        await a.watcher.run_once(force=True)
        assert before == titles(receiver)

        await b.watcher.run_once(force=True)
        await b.watcher.run_once(force=True)  # again: nothing more
        clocks.until(datetime(2026, 12, 2, 9, 0, 30, tzinfo=UTC))
        await a.watcher.run_once(force=True)  # still deposed: nothing
        await b.watcher.run_once(force=True)
        await b.watcher.run_once(force=True)
        assert [
            *before,
            "Sim job job-b (job-b): RUNNING → COMPLETED",
            "Reminder: Nightly DPO (job-a) still FAILED (1h 05m 00s)",
            "Sim job job-b (job-b): no longer stalled",
            "Reminder: Nightly DPO (job-a) still FAILED (1h 50m 30s)",  # the third interval
            "Digest 2026-12-02 08:00-09:00 (UTC): 1 completed",
        ] == titles(receiver)
