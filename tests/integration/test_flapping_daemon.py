"""A flapping job against the real daemon (`fireworks-watcher run` in a subprocess, real time),
the simulator and a real `json://` receiver: the job changes state at every 0.3 s poll.

With `flap_threshold = 4` and `flap_window = "6s"` the receiver gets exactly the first 4
transitions and one "flapping" message listing the states; none of the moves after it; the
job's COMPLETED at once although it is flapping; and "stable again in COMPLETED" once it has
stayed there 6 s.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fireworks_sim import Simulator
from tests.support.daemon import Daemon, write_config
from tests.support.servers import JsonReceiver
from tests.support.waiting import DEADLINE

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

JOB = "flap-a"
NAME = f"Sim job {JOB} ({JOB})"
THRESHOLD = 4
WINDOW = 6.0
#: Moves made once it flaps: none of them may reach the receiver.
MORE = 5


@pytest.fixture
def config_path(tmp_path: Path, receiver: JsonReceiver) -> Path:
    return write_config(
        tmp_path,
        [receiver.url()],
        watch=f'jobs = ["{JOB}"]\nflap_threshold = {THRESHOLD}\nflap_window = "{WINDOW:g}s"',
    )


@pytest.fixture
def daemons(config_path: Path, daemon_env: dict[str, str]) -> Iterator[Callable[[], Daemon]]:
    """Starts daemons on the config; every one is killed at the end, whatever happened."""
    started: list[Daemon] = []

    def start() -> Daemon:
        started.append(Daemon(config_path, daemon_env))
        return started[-1]

    yield start
    for daemon in started:
        daemon.close()


def flip(sim: Simulator) -> None:
    state = "PENDING" if sim.job(JOB)["state"] == "JOB_STATE_RUNNING" else "RUNNING"
    sim.set_state(JOB, state)


def flap(sim: Simulator, daemon: Daemon, polls: int) -> None:
    """Change the job's state `polls` times, each seen by the daemon before the next."""
    for _ in range(polls):
        flip(sim)
        daemon.wait_event("job.transition")


def test_a_job_flapping_at_every_poll_is_told_once_and_its_outcome_always(
    sim: Simulator, receiver: JsonReceiver, daemons: Callable[[], Daemon]
) -> None:
    """The first 4 moves, then "flapping"; a SIGKILL and a restart repeat nothing and send
    none of the moves after it; COMPLETED at once; "stable again" after the window."""
    sim.add_job(JOB, state="RUNNING")
    first = daemons()
    first.wait_event("job.baseline")
    flap(sim, first, THRESHOLD + 1)
    while first.wait_event("notify.sent")[0]["new_state"] != "FLAPPING":
        continue  # the moves' sends, in order before it
    first.kill()

    second = daemons()
    flap(sim, second, MORE)
    sim.set_state(JOB, "COMPLETED")
    receiver.wait_for(THRESHOLD + 2, timeout=DEADLINE)
    receiver.wait_for(THRESHOLD + 3, timeout=DEADLINE + WINDOW)

    titles = [str(m["title"]) for m in receiver.messages]
    moves = [f"{NAME}: RUNNING → PENDING", f"{NAME}: PENDING → RUNNING"] * 2
    assert moves == titles[:THRESHOLD]
    flapping = rf"{re.escape(NAME)}: flapping: RUNNING( → PENDING → RUNNING){{2}} → PENDING"
    assert re.fullmatch(rf"{flapping} \(5 changes in \d+s\)", titles[THRESHOLD]), titles
    # Ten moves, the last six folded (the fifth opened it); its outcome is not folded.
    assert [
        f"{NAME}: RUNNING → COMPLETED",
        f"{NAME}: stable again in COMPLETED",
    ] == titles[THRESHOLD + 1 :]
    assert 0 == second.stop()
