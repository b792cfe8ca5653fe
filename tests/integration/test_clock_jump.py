"""A step of the host's wall clock moves neither the poll schedule nor the deliveries.

Polls are scheduled on the monotonic clock; stored times are stamped and compared through a
`SteadyClock`, which ignores a step. The daemon's tests run the real loop against the
simulator over loopback with a wall clock the test sets a day (or a year) off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from fireworks_sim import Simulator
from tests.support.alerting import rewired
from tests.support.loop import settings_for
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app
from watcher.core.clock import MAX_STEP, SteadyClock, steady_reading
from watcher.ports import NullObserver, Report
from watcher.runtime import host_clocks
from watcher.runtime.poller import Poller

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
YEAR = timedelta(days=365)
POLL = 0.2
#: Generous: a loaded CI machine may take seconds for what takes milliseconds.
DEADLINE = 15.0

# -- the steady clock, pure --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "wall_moved", "expected_moved"),
    [
        pytest.param(1.0, 1.0, 1.0, id="in step: the wall clock"),
        pytest.param(1.0, 1.0 + MAX_STEP, 1.0 + MAX_STEP, id="a slew within the bound"),
        pytest.param(1.0, 1.0 - MAX_STEP, 1.0 - MAX_STEP, id="a slew back within the bound"),
        pytest.param(1.0, 86_401.0, 1.0, id="a day ahead: ignored"),
        pytest.param(1.0, -86_399.0, 1.0, id="a day back: ignored"),
        pytest.param(5.0, 5.0 + 365 * 86_400.0, 5.0, id="a year ahead: ignored"),
        pytest.param(0.0, -3.0, 0.0, id="no time passed, the wall went back"),
        pytest.param(-1.0, 0.0, 0.0, id="a monotonic clock going back is no time"),
    ],
)
def test_steady_reading(elapsed: float, wall_moved: float, expected_moved: float) -> None:
    """The wall clock is followed while it keeps pace with the monotonic one; a step is not."""
    wall = T0 + timedelta(seconds=wall_moved)

    assert T0 + timedelta(seconds=expected_moved) == steady_reading(T0, elapsed, wall)


class Host:
    """A host's clocks: monotonic seconds, and a wall clock that can be set anywhere."""

    def __init__(self) -> None:
        self.mono = 500.0
        self.wall = T0

    def pass_time(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([DAY, -DAY], id="+1 day for a while, then back"),
        pytest.param([-DAY], id="-1 day"),
        pytest.param([YEAR], id="+1 year"),
        pytest.param([timedelta(seconds=3), timedelta(seconds=-7)], id="small steps both ways"),
    ],
)
def test_a_steady_clock_goes_on_at_the_monotonic_pace(steps: list[timedelta]) -> None:
    """Whatever the host clock is set to, the steady clock advances exactly as time passes,
    and `offset` says how far the host clock is off."""
    host = Host()
    clock = SteadyClock(lambda: host.wall, lambda: host.mono)
    for step in steps:
        host.pass_time(10)
        host.wall += step
        host.pass_time(10)
        clock()
    assert T0 + timedelta(seconds=20 * len(steps)) == clock()
    assert sum(steps, timedelta()).total_seconds() == pytest.approx(clock.offset)


# -- the daemon's loop -------------------------------------------------------------------------


class SteppedWall:
    """The real wall clock, plus a step the test sets."""

    def __init__(self) -> None:
        self.step = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.step


class Seen(NullObserver):
    """Counts cycles and send outcomes, and lets a test wait for a count."""

    def __init__(self) -> None:
        self.cycles = 0
        self.sends: list[str] = []
        self._changed = anyio.Event()

    def cycle_done(self, report: Report, *, at: datetime) -> None:
        self.cycles += 1
        self._changed.set()

    def notification(self, channel: str, outcome: str) -> None:
        self.sends.append(outcome)
        self._changed.set()

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until `condition` holds (a generous deadline, then fail naming `what`)."""
        with anyio.move_on_after(DEADLINE) as scope:
            while not condition():
                await self._changed.wait()
                self._changed = anyio.Event()
        assert not scope.cancelled_caught, f"still waiting for {what}"


@asynccontextmanager
async def daemon_loop(
    server: ServedApp, tmp_path: Path, receiver: JsonReceiver, wall: SteppedWall, seen: Seen
) -> AsyncIterator[Poller]:
    """The daemon's loop (`run_forever`) on a stepped wall clock, polling every POLL s."""
    settings = settings_for(
        server,
        tmp_path / "state.db",
        ["job-a"],
        [{"name": "team", "urls": [receiver.url()]}],
        poll_interval=POLL,
    )
    stop = anyio.Event()
    async with app.open_watcher(settings) as real, anyio.create_task_group() as tg:
        watcher = rewired(real, clock=wall, monotonic=host_clocks.monotonic, observer=seen)
        tg.start_soon(watcher.run_forever, stop)
        try:
            yield watcher
        finally:
            stop.set()


STEPS = [
    pytest.param([DAY, -DAY], id="+1 day, then back"),
    pytest.param([-DAY], id="-1 day"),
    pytest.param([YEAR], id="+1 year"),
    pytest.param([-YEAR, YEAR], id="-1 year, then back"),
]


@pytest.mark.parametrize("steps", STEPS)
async def test_polling_keeps_its_interval_across_a_clock_step(
    server: ServedApp,
    sim: Simulator,
    receiver: JsonReceiver,
    tmp_path: Path,
    steps: list[timedelta],
) -> None:
    """After each step the loop goes on polling every interval: GETs reach the simulator."""
    sim.add_job("job-a", state="RUNNING")
    wall, seen = SteppedWall(), Seen()
    async with daemon_loop(server, tmp_path, receiver, wall, seen):
        await seen.until(lambda: seen.cycles >= 2, "the first cycles")
        gets: list[int] = []
        for step in steps:
            wall.step += step
            before, target = sim.request_count, seen.cycles + 5
            await seen.until(lambda: seen.cycles >= target, f"5 polls after {step}")  # noqa: B023
            gets.append(sim.request_count - before)

    assert all(n >= 5 for n in gets), gets


@pytest.mark.parametrize("steps", STEPS)
async def test_deliveries_are_neither_held_nor_given_up_across_a_clock_step(
    server: ServedApp,
    sim: Simulator,
    receiver: JsonReceiver,
    tmp_path: Path,
    steps: list[timedelta],
) -> None:
    """A delivery failing when the clock steps is retried on its policy's schedule: not held
    for the step's length (back), and not given up as a year overdue (ahead)."""
    sim.add_job("job-a", state="RUNNING")
    wall, seen = SteppedWall(), Seen()
    receiver.status = 503
    async with daemon_loop(server, tmp_path, receiver, wall, seen):
        await seen.until(lambda: seen.cycles >= 1, "the baseline")
        sim.set_state("job-a", "COMPLETED")
        await seen.until(lambda: "failed" in seen.sends, "a failed send")
        for step in steps:
            wall.step += step
        failures = seen.sends.count("failed")
        await seen.until(lambda: len(seen.sends) > failures, "a retry after the step")
        receiver.status = 200
        await seen.until(lambda: "sent" in seen.sends, "the delivery")

    assert "dead" not in seen.sends
    assert ["Sim job job-a (job-a): RUNNING → COMPLETED"] == [m["title"] for m in receiver.messages]
