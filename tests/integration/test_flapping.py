"""A flapping job end to end: the real poller, store and notifier against the simulator and a
real `json://` receiver, on one injected clock (the simulator's and the watcher's), so that
hours of polls at the default 30 s pass without waiting for them.

The job changes state on every poll. Before flapping detection it cost one message per poll
(120 an hour at 30 s); now it costs `flap_threshold` transition messages and one "flapping"
message, then nothing until it settles; its outcome is always sent.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.alerting import Time, cycle, titles, watcher_on
from tests.support.servers import JsonReceiver, ServedApp
from watcher import config
from watcher.runtime.poller import Poller

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

JOB = "flap-dpo"
NAME = f"Sim job {JOB} ({JOB})"
POLL = 30.0  # the default poll_interval
MINUTE = 60.0
HOUR = 3600.0
#: The message a job flapping every 30 s poll gets at its 7th change (the defaults).
FLAPPING = (
    f"{NAME}: flapping: RUNNING → PENDING → RUNNING → PENDING → RUNNING → PENDING → "
    "RUNNING → PENDING (7 changes in 3m 00s)"
)


@pytest.fixture
def time() -> Time:
    return Time()


@pytest.fixture
def flapper(server: ServedApp, time: Time) -> Simulator:
    """A simulator on the fake clock with one RUNNING DPO job."""
    sim = Simulator(api_key=KEY, account_id=ACCOUNT, clock=time.monotonic, start_time=time.wall())
    sim.add_job(JOB, state="RUNNING")
    server.app = sim
    return sim


def settings_for(
    server: ServedApp, state: Path, receiver: JsonReceiver, **watch: Any
) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            # Hours of polls in seconds: the request budget (paced in real time) must not wait.
            "watcher": {
                "poll_interval": POLL,
                "state_path": str(state),
                "max_requests_per_minute": 6000,
            },
            "watch": [{"kind": "dpo", "jobs": [JOB], "stall_after": 0, **watch}],
            "channel": [{"name": "team", "urls": [receiver.url()]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )


def flip(sim: Simulator) -> str:
    """RUNNING <-> PENDING; returns the new state."""
    state = "PENDING" if sim.job(JOB)["state"] == "JOB_STATE_RUNNING" else "RUNNING"
    sim.set_state(JOB, state)
    return state


async def flap(watcher: Poller, sim: Simulator, time: Time, polls: int) -> None:
    """`polls` polls 30 s apart, the job in another state at each."""
    for _ in range(polls):
        flip(sim)
        await cycle(watcher, time, POLL)


def moves(count: int, first: str = "RUNNING") -> list[str]:
    """The titles of `count` alternating transitions starting from `first`."""
    states = ["RUNNING", "PENDING"] if first == "RUNNING" else ["PENDING", "RUNNING"]
    return [f"{NAME}: {states[n % 2]} → {states[(n + 1) % 2]}" for n in range(count)]


async def rows(state: Path, sql: str) -> list[tuple[Any, ...]]:
    def read() -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(state)) as db:
            return db.execute(sql).fetchall()

    return await anyio.to_thread.run_sync(read)


async def test_a_job_flapping_every_poll_costs_seven_messages_not_120_an_hour(
    server: ServedApp, flapper: Simulator, time: Time, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """Defaults (6 changes in 30m), 30 s polls, a state change at every poll for two hours:
    6 transitions and one "flapping" message in the first hour, none in the second (it was
    120 an hour). Its COMPLETED is sent while it flaps; 30 minutes later, "stable again".
    Every folded transition is in the history, marked."""
    state = tmp_path / "state.db"
    settings = settings_for(server, state, receiver)
    per_hour: list[int] = []
    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 0)  # the baseline: RUNNING
        for _ in range(2):
            before = len(receiver.messages)
            await flap(watcher, flapper, time, int(HOUR / POLL))
            per_hour.append(len(receiver.messages) - before)
        assert [7, 0] == per_hour, f"messages per hour of a job flapping every poll: {per_hour}"

        flapper.set_state(JOB, "COMPLETED")
        await cycle(watcher, time, POLL)
        for _ in range(6):
            await cycle(watcher, time, 5 * MINUTE)

    assert [
        *moves(6),
        FLAPPING,
        f"{NAME}: RUNNING → COMPLETED",
        f"{NAME}: stable again in COMPLETED",
    ] == titles(receiver)
    flapping, completed, stable = receiver.messages[6:]
    assert "warning" == flapping["type"]
    assert "outcomes are always sent" in flapping["message"]
    assert "success" == completed["type"]
    assert "it was flapping for 2h" in stable["message"]
    assert [] == await rows(state, "SELECT subject FROM conditions")
    events = await rows(state, "SELECT fields FROM events WHERE kind = '' ORDER BY id")
    folded = [json.loads(fields).get("folded") for (fields,) in events]
    # 240 flips and the outcome: the first 6 sent, the 234 after them folded, COMPLETED sent.
    assert [None] * 6 + ["flapping"] * 234 + [None] == folded


async def test_restarts_neither_reset_the_count_nor_repeat_or_lose_a_message(
    server: ServedApp, flapper: Simulator, time: Time, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """Four changes, a restart, three more: the seventh opens "flapping" (the count survived
    the restart). A restart while it flaps repeats nothing and sends none of its moves; a
    restart while it is stable does not delay "stable again in RUNNING", sent once after 30
    minutes in RUNNING; then its transitions are sent again."""
    settings = settings_for(server, tmp_path / "state.db", receiver)
    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 0)
        await flap(watcher, flapper, time, 4)
    async with watcher_on(settings, time) as watcher:
        await flap(watcher, flapper, time, 3)
        assert 7 == len(receiver.messages)
        await flap(watcher, flapper, time, 4)
    async with watcher_on(settings, time) as watcher:
        await flap(watcher, flapper, time, 4)  # 15 changes: PENDING
        assert "RUNNING" == flip(flapper)
        await cycle(watcher, time, POLL)  # the 16th change, seen
        await cycle(watcher, time, 20 * MINUTE)
    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 9 * MINUTE)  # 29 minutes in RUNNING: not yet
        assert 7 == len(receiver.messages)
        await cycle(watcher, time, MINUTE)
        await cycle(watcher, time, MINUTE)
        flapper.set_state(JOB, "PENDING")
        await cycle(watcher, time, POLL)

    assert [
        *moves(4),
        *moves(2, first="RUNNING"),
        FLAPPING,
        f"{NAME}: stable again in RUNNING",
        f"{NAME}: RUNNING → PENDING",
    ] == titles(receiver)


@pytest.mark.parametrize(
    ("watch", "poll", "sent", "flapping"),
    [
        ({"flap_threshold": 0}, POLL, 8, 0),  # 0 disables it: every move is sent
        ({"flap_threshold": 2, "flap_window": "2m"}, POLL, 3, 1),  # 2 moves, then "flapping"
        # 45 s apart, never more than 3 moves in any 2 minutes: never flapping.
        ({"flap_threshold": 3, "flap_window": "2m"}, 45.0, 8, 0),
    ],
)
async def test_flap_threshold_and_flap_window(
    server: ServedApp,
    flapper: Simulator,
    time: Time,
    tmp_path: Path,
    receiver: JsonReceiver,
    watch: dict[str, Any],
    poll: float,
    sent: int,
    flapping: int,
) -> None:
    """8 changes, each a poll apart: how many messages the keys let through."""
    settings = settings_for(server, tmp_path / "state.db", receiver, **watch)
    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 0)
        for _ in range(8):
            flip(flapper)
            await cycle(watcher, time, poll)

    assert sent == len(receiver.messages), titles(receiver)
    assert flapping == len([t for t in titles(receiver) if ": flapping: " in t])


async def test_status_changes_within_one_state_are_not_flaps(
    server: ServedApp, flapper: Simulator, time: Time, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """A job reporting a new status message every poll while RUNNING is not flapping: only
    changes of `state` count. Each status change is sent."""
    settings = settings_for(server, tmp_path / "state.db", receiver, flap_threshold=2)
    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 0)
        for step in range(5):
            flapper.set_state(JOB, "RUNNING", status_message=f"step {step}")
            await cycle(watcher, time, POLL)

    assert 5 == len(receiver.messages)
    assert all("status changed" in t for t in titles(receiver)), titles(receiver)
