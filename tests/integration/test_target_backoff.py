"""A channel that is down is not hammered (issue 21, item 2), against the real daemon, the
simulator and real receivers.

With hundreds of messages pending for a channel that answers 500 (or 429), the channel gets
one request per backoff step (a probe), not one per message; once it answers again, every
message arrives, once, in order, at the channel's pace; a healthy channel beside it hears
everything on time throughout. `max_per_second` paces each URL without folding anything.
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.servers import JsonReceiver, ServedApp
from tests.support.waiting import wait_until_async
from watcher import app, config
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef
from watcher.runtime.poller import Poller

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

#: The pace of both channels in the outage scenarios: 500 messages go in about 5 s.
FAST = 100
#: Jobs changed one after another during an outage, each awaited on the healthy channel.
CANARIES = 300


def settings_for(
    server: ServedApp, tmp_path: Path, channels: list[dict[str, Any]]
) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {
                "poll_interval": 0.5,
                "state_path": str(tmp_path / "state.db"),
                "max_requests_per_minute": 6000,
                "health_listen": "",
            },
            "watch": [{"kind": "dpo", "discover": True}],
            "channel": channels,
        },
        {"FIREWORKS_API_KEY": KEY},
    )


def _heard(receiver: JsonReceiver, title: str) -> bool:
    return title in [m["title"] for m in receiver.messages]


def title(job: str, new: str = "COMPLETED") -> str:
    return f"Sim job {job} ({job}): RUNNING → {new}"


@dataclass
class Outage:
    """What one outage did to the down channel, and how the healthy one fared meanwhile."""

    requests: int  # posts to the down channel while it was down
    first_10_s: int  # of them, in the first 10 s
    minutes: float
    canaries: int  # jobs changed during the outage
    canary_latency: list[float]  # healthy channel: change → arrival, of those that arrived
    cpu: float  # this process's CPU seconds per second during the outage

    def per_minute(self) -> float:
        return self.requests / self.minutes


async def outage(
    watcher: Poller,
    sim: Simulator,
    down: JsonReceiver,
    healthy: JsonReceiver,
    *,
    pending: int,
    canaries: int,
    seconds: float,
) -> Outage:
    """With `down` failing, queue `pending` messages for both channels, keep it down for
    `seconds` after its first request while changing one canary job after another (each
    must reach the healthy channel promptly), then bring it back."""
    await wait_until_async(
        lambda: watcher.last(JobRef(JobKind.DPO, f"bulk-{pending - 1:03}")) is not None,
        "the first listing",
        20,
    )
    for index in range(pending):
        sim.set_state(f"bulk-{index:03}", "COMPLETED")
    await wait_until_async(
        lambda: bool(down.posted_at), "the first request to the down channel", 20
    )
    began, cpu_began = down.posted_at[0], time.process_time()
    latencies: list[float] = []
    made = 0
    # The outage lasts `seconds`: a deadline, with the canaries' own waits inside it.
    with anyio.move_on_after(max(0.0, began + seconds - time.monotonic())):
        await wait_until_async(lambda: len(healthy.messages) >= pending, "the healthy channel", 30)
        for index in range(canaries):
            changed, made = time.monotonic(), index + 1
            sim.set_state(f"canary-{index:03}", "FAILED")
            want = title(f"canary-{index:03}", "FAILED")
            await wait_until_async(functools.partial(_heard, healthy, want), want, 10)
            latencies.append(time.monotonic() - changed)
        await anyio.sleep_forever()  # the rest of the outage, should the canaries run out
    ended, cpu = time.monotonic(), time.process_time() - cpu_began
    attempts = down.posted_at
    down.status = 200
    return Outage(
        requests=len(attempts),
        first_10_s=sum(1 for at in attempts if at < began + 10),
        minutes=(ended - began) / 60,
        canaries=made,
        canary_latency=latencies,
        cpu=cpu / (ended - began),
    )


@pytest.mark.parametrize(
    ("seconds", "most"),
    [
        # Longer outages, on the dispatcher's clock: test_target_backoff_units.py (two hours).
        pytest.param(20.0, 10, id="down 20 s", marks=pytest.mark.timeout(180)),
    ],
)
async def test_a_down_channel_with_500_pending_gets_a_probe_per_backoff_step(
    server: ServedApp, sim: Simulator, tmp_path: Path, seconds: float, most: int
) -> None:
    """500 messages pending for a channel answering 500: a handful of requests while it is
    down (b92baa0 sent 1,707 in the first 10 s), then all 500 delivered in order, once each;
    the healthy channel got all 500 and every change made meanwhile within a few seconds."""
    pending = 500
    for index in range(pending):
        sim.add_job(f"bulk-{index:03}", state="RUNNING")
    for index in range(CANARIES):
        sim.add_job(f"canary-{index:03}", state="RUNNING")
    async with JsonReceiver() as down, JsonReceiver() as healthy:
        down.status = 500
        settings = settings_for(
            server,
            tmp_path,
            [
                {"name": "down", "urls": [down.url()], "max_per_second": FAST},
                {"name": "healthy", "urls": [healthy.url()], "max_per_second": FAST},
            ],
        )
        async with app.open_watcher(settings) as watcher:
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher.run_forever, stop)
                found = await outage(
                    watcher, sim, down, healthy, pending=pending, canaries=CANARIES, seconds=seconds
                )
                came_back = time.monotonic()
                total = pending + found.canaries
                await wait_until_async(lambda: len(down.messages) >= total, "the backlog", 120)
                caught_up = time.monotonic() - came_back
                stop.set()

    print(
        f"\ndown {seconds:.0f} s with {pending} pending: {found.requests} requests"
        f" ({found.first_10_s} in the first 10 s, {found.per_minute():.1f}/min),"
        f" CPU {found.cpu:.0%} of a core; back: {total} delivered in {caught_up:.1f} s"
        f" ({60 * total / caught_up:.0f}/min); healthy canaries"
        f" {len(found.canary_latency)}, slowest {max(found.canary_latency):.2f} s"
    )
    assert found.requests <= most
    got = [m["title"] for m in down.messages]
    # Every message once, in the order they happened (the healthy channel's, never down).
    assert len(got) == len(set(got)) == total
    assert [m["title"] for m in healthy.messages] == got
    assert [title(f"bulk-{i:03}") for i in range(pending)] == got[:pending]
    # The healthy channel was not held up: every canary within a couple of poll intervals.
    assert found.canary_latency
    assert max(found.canary_latency) < 3.0


async def test_a_429_backs_off_only_its_own_target(
    server: ServedApp, sim: Simulator, tmp_path: Path
) -> None:
    """A channel answering 429 (with a Retry-After apprise does not pass on) is probed, not
    hammered, while the other channel hears everything; then all arrive in order, once."""
    pending = 50
    for index in range(pending):
        sim.add_job(f"bulk-{index:03}", state="RUNNING")
    for index in range(20):
        sim.add_job(f"canary-{index:03}", state="RUNNING")
    async with JsonReceiver() as limited, JsonReceiver() as healthy:
        limited.status, limited.retry_after = 429, "2"
        settings = settings_for(
            server,
            tmp_path,
            [
                {"name": "limited", "urls": [limited.url()], "max_per_second": FAST},
                {"name": "healthy", "urls": [healthy.url()], "max_per_second": FAST},
            ],
        )
        async with app.open_watcher(settings) as watcher:
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher.run_forever, stop)
                found = await outage(
                    watcher, sim, limited, healthy, pending=pending, canaries=20, seconds=6
                )
                total = pending + found.canaries
                await wait_until_async(lambda: len(limited.messages) >= total, "the backlog", 60)
                stop.set()

    # A probe at 0 s, then one per step: at most 0.5 + 1 + 2 + 4 s apart within 6 s.
    assert found.requests <= 5
    got = [m["title"] for m in limited.messages]
    assert len(got) == len(set(got)) == total
    assert [m["title"] for m in healthy.messages] == got
    assert max(found.canary_latency) < 3.0


async def test_max_per_second_paces_every_message_in_order(
    server: ServedApp, sim: Simulator, tmp_path: Path
) -> None:
    """Six changes at once to a channel with `max_per_second = 2` arrive one every 0.5 s;
    three to a channel without the key one a second (the default); each in order, none
    folded into a summary."""
    for index in range(6):
        sim.add_job(f"job-{index}", state="RUNNING")
    async with JsonReceiver() as twice, JsonReceiver() as default:
        settings = settings_for(
            server,
            tmp_path,
            [
                {"name": "twice", "urls": [twice.url()], "max_per_second": 2},
                {"name": "default", "urls": [default.url()], "jobs": ["job-[0-2]"]},
            ],
        )
        async with app.open_watcher(settings) as watcher:
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher.run_forever, stop)
                await wait_until_async(
                    lambda: watcher.last(JobRef(JobKind.DPO, "job-5")) is not None, "jobs", 20
                )
                for index in range(6):
                    sim.set_state(f"job-{index}", "COMPLETED")
                await twice.wait_for_async(6, 20)
                await default.wait_for_async(3, 20)
                stop.set()

    def gaps(times: list[float]) -> list[float]:
        return [later - earlier for earlier, later in itertools.pairwise(times)]

    assert [title(f"job-{i}") for i in range(6)] == [m["title"] for m in twice.messages]
    assert [title(f"job-{i}") for i in range(3)] == [m["title"] for m in default.messages]
    # A little under the interval: the pace counts from one send's start, the receiver
    # from its arrival.
    assert min(gaps(twice.delivered_at)) >= 0.45, gaps(twice.delivered_at)
    assert min(gaps(default.delivered_at)) >= 0.9, gaps(default.delivered_at)
    # A pace, not a flood gate: no more than the interval and a little apart either.
    assert max(gaps(twice.delivered_at)) < 1.5, gaps(twice.delivered_at)
