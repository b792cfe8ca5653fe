"""Every target on its own schedule, at the settings a user gets: a listing that drips or a
GET that hangs, with the default `request_timeout` (10 s) and its retries, delays only
itself; a healthy job of another kind that moves every poll interval has each move announced
within two intervals. Reminders are a timer of their own: every `repeat_interval`, on time,
while the job itself is polled only every `terminal_poll_interval`."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.peers import Drip, Hang
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app, config
from watcher.core.model import JobKind, JobRef
from watcher.runtime.poller import Poller

POLL = 1.0  # poll_interval; everything else at its default
#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

MOVES = ("RUNNING", "WRITING_RESULTS", "VALIDATING", "RUNNING", "WRITING_RESULTS", "RUNNING")


def settings_for(
    server: ServedApp,
    tmp_path: Path,
    receiver: JsonReceiver,
    watch: list[dict[str, Any]],
    **watcher: Any,
) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {"poll_interval": POLL, "state_path": str(tmp_path / "state.db")} | watcher,
            "watch": watch,
            "channel": [{"name": "team", "urls": [receiver.url()]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )


@asynccontextmanager
async def running(settings: config.Settings) -> AsyncIterator[Poller]:
    """A watcher running as the daemon does (poller, timer and dispatcher), its first cycle
    over (the baseline)."""
    first = anyio.Event()
    stop = anyio.Event()
    async with app.open_watcher(settings) as watcher, anyio.create_task_group() as tg:
        tg.start_soon(lambda: watcher.run_forever(stop, on_cycle=first.set))
        with anyio.fail_after(15):
            await first.wait()
        yield watcher
        stop.set()


async def announce_latencies(sim: Simulator, receiver: JsonReceiver) -> list[float]:
    """Move `dpo/job-a` once per poll interval; each move's seconds until it was announced."""
    latencies: list[float] = []
    for count, state in enumerate(MOVES[1:], start=1):
        moved = anyio.current_time()
        sim.set_state("job-a", state)
        # Two poll intervals, and a second of margin for a loaded machine.
        await receiver.wait_for_async(count, 2 * POLL + 1)
        latencies.append(anyio.current_time() - moved)
        await anyio.sleep_until(moved + POLL)  # the next move one interval after this one
    print("announced after (s):", [round(t, 2) for t in latencies])
    return latencies


async def test_a_listing_that_drips_delays_only_itself_at_the_default_timeout(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """The SFT listing answers one byte every 0.1 s (a whole answer would take 45 s), so each
    try ends at the default 10 s deadline; a DPO job moving every second is announced each
    time within 2 intervals (before, the cycle waited 3 x 10 s for the listing)."""
    drip = Drip(sim)
    server.app = drip
    sim.add_job("job-a", state=MOVES[0])
    watch: list[dict[str, Any]] = [
        {"kind": "sft", "discover": True},
        {"kind": "dpo", "jobs": ["job-a"]},
    ]
    async with running(settings_for(server, tmp_path, receiver, watch)):
        latencies = await announce_latencies(sim, receiver)

    assert len(latencies) == len(MOVES) - 1
    assert drip.dripped > 0  # the listing was really being dripped meanwhile
    print([m["title"] for m in receiver.messages])
    assert [m["title"] for m in receiver.messages][-1].endswith("RUNNING")


@pytest.mark.slow
@pytest.mark.parametrize(
    "attack",
    [
        "drip",
        "gzip-bomb",
        "huge",
        "endless-pages",
        "new-job-flood",
        "duplicate-names",
        "retry-after",
    ],
)
async def test_a_hostile_kind_delays_only_itself_at_the_defaults(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path, attack: str
) -> None:
    """Each of the simulator's attacks on the SFT collection, discovered, at every default
    but the poll interval: a DPO job moving every second is announced each time within 2
    intervals."""
    sim.add_job("job-a", state=MOVES[0])
    sim.attack("supervisedFineTuningJobs", attack)
    watch: list[dict[str, Any]] = [
        {"kind": "sft", "discover": True},
        {"kind": "dpo", "jobs": ["job-a"]},
    ]
    settings = settings_for(server, tmp_path, receiver, watch)
    stop = anyio.Event()
    async with app.open_watcher(settings) as poller, anyio.create_task_group() as tg:
        tg.start_soon(lambda: poller.run_forever(stop))
        with anyio.fail_after(15):
            # No event tells of a baseline: the watcher's memory is read until the deadline.
            while poller.last(JobRef(JobKind.DPO, "job-a")) is None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        latencies = await announce_latencies(sim, receiver)
        stop.set()

    assert len(latencies) == len(MOVES) - 1


@pytest.mark.parametrize("stuck", [1, 6])
async def test_gets_that_hang_delay_only_their_jobs_at_the_default_timeout(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path, stuck: int
) -> None:
    """SFT jobs whose GETs never answer (each try ends at the default 10 s deadline), more of
    them than GETs may run at once: a DPO job moving every second is announced each time
    within 2 intervals."""
    names = [f"stuck-{i}" for i in range(stuck)]
    # Among 1,000 SFT jobs a LIST costs more pages than the GETs: the jobs are read by GET.
    for name in [*names, *(f"other-{i:04d}" for i in range(1000))]:
        sim.add_job(name, collection="supervisedFineTuningJobs", state="RUNNING")
    hang = Hang(sim, "supervisedFineTuningJobs/stuck-")
    server.app = hang
    sim.add_job("job-a", state=MOVES[0])
    watch = [{"kind": "sft", "jobs": names}, {"kind": "dpo", "jobs": ["job-a"]}]
    # With more stuck jobs than GETs may run side by side, a budget that lets them all start.
    budget = {"max_requests_per_minute": 6000} if stuck > 4 else {}
    settings = settings_for(server, tmp_path, receiver, watch, **budget)
    stop = anyio.Event()
    async with app.open_watcher(settings) as poller, anyio.create_task_group() as tg:
        # No first cycle to wait for: the hanging GETs are in it. The DPO job's baseline is.
        tg.start_soon(lambda: poller.run_forever(stop))
        with anyio.fail_after(5):
            # No event tells of a baseline: the watcher's memory is read until the deadline.
            while poller.last(JobRef(JobKind.DPO, "job-a")) is None:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        latencies = await announce_latencies(sim, receiver)
        stop.set()

    assert len(latencies) == len(MOVES) - 1
    assert hang.hung >= min(stuck, 4)  # every place of its kind taken


@pytest.mark.slow
async def test_reminders_come_every_repeat_interval_on_a_settled_job(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """A FAILED job is polled every terminal_poll_interval (300 s), yet its reminders with
    `repeat_interval = "10s"` arrive every 10 s (+- 1 s): the timer does not wait for a poll
    (before: at +55 s and +105 s)."""
    sim.add_job("job-a", state="RUNNING")
    settings = config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {"poll_interval": POLL, "state_path": str(tmp_path / "state.db")},
            "watch": [{"kind": "dpo", "jobs": ["job-a"]}],
            "channel": [{"name": "team", "urls": [receiver.url()], "repeat_interval": "10s"}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )
    async with running(settings):
        sim.set_state("job-a", "FAILED")
        await receiver.wait_for_async(1, 2 * POLL + 1)
        await receiver.wait_for_async(4, 35)

    arrived = receiver.delivered_at[:4]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(arrived)]
    print("reminder gaps (s):", gaps)
    assert all(9.0 <= gap <= 11.0 for gap in gaps), gaps
    assert all("FAILED" in m["title"] or "FAILED" in m["message"] for m in receiver.messages[:4])
