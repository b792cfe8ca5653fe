"""Flapping with two replicas on one real PostgreSQL database, across a fail-over: the count of
changes, the "flapping" announcement and the folding survive the change of leader; a deposed
leader that wakes up queues nothing. The simulator and a receiver over loopback, an injected
wall clock; the lease runs on the database server's clock, in real time."""

from __future__ import annotations

from datetime import timedelta

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

JOB = "job-a"
NAME = f"Sim job {JOB} ({JOB})"


def settings_for(server: ServedApp, state_url: str, receiver: JsonReceiver) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {
                "poll_interval": 1,
                "state_url": state_url,
                "max_requests_per_minute": 6000,
            },
            "watch": [{"kind": "dpo", "jobs": [JOB], "stall_after": 0}],
            "channel": [{"name": "team", "urls": [receiver.url("/team")]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )


async def test_flapping_is_told_once_across_a_fail_over(
    server: ServedApp, receiver: JsonReceiver, state_url: str
) -> None:
    """A sees four changes and freezes; B takes over and sees three more: the seventh opens
    "flapping" (B counted A's changes, from the history). A wakes up: its writes are refused.
    B folds every later move, and says "stable again" once, 30 minutes after the last."""
    clocks = Clocks()
    sim = Simulator(api_key=KEY, account_id=ACCOUNT, clock=clocks.mono, start_time=T0)
    server.app = sim
    sim.add_job(JOB, state="RUNNING")
    settings = await anyio.to_thread.run_sync(settings_for, server, state_url, receiver)
    clock = SteadyClock(clocks.wall, clocks.mono)

    def flip() -> None:
        state = "PENDING" if sim.job(JOB)["state"] == "JOB_STATE_RUNNING" else "RUNNING"
        sim.set_state(JOB, state)

    async def flap(runtime: app.Runtime, polls: int) -> None:
        for _ in range(polls):
            flip()
            clocks.until(clocks.wall() + timedelta(seconds=30))
            await runtime.watcher.run_once(force=True)

    async with (
        app.open_runtime(settings, clock=clock) as a,
        app.open_runtime(settings, clock=clock) as b,
    ):
        await take_over(a)
        a.watcher.new_term()
        await a.watcher.run_once(force=True)  # the baseline
        await flap(a, 4)
        assert 4 == len(receiver.messages)

        await take_over(b)  # A froze: no more renewals
        b.watcher.new_term()
        await flap(b, 3)
        await flap(a, 2)  # A wakes up unaware: refused by the fence, it queues nothing
        await flap(b, 5)  # the state it ends in: RUNNING
        clocks.until(clocks.wall() + timedelta(minutes=29))
        await b.watcher.run_once(force=True)
        announced = titles(receiver)
        clocks.until(clocks.wall() + timedelta(minutes=1))
        await b.watcher.run_once(force=True)
        await b.watcher.run_once(force=True)

    moves = [f"{NAME}: RUNNING → PENDING", f"{NAME}: PENDING → RUNNING"]
    flapping = (
        f"{NAME}: flapping: RUNNING → PENDING → RUNNING → PENDING → RUNNING → PENDING → "
        "RUNNING → PENDING (7 changes in 3m 00s)"
    )
    assert [*moves, *moves, *moves, flapping] == announced
    assert [*announced, f"{NAME}: stable again in RUNNING"] == titles(receiver)
