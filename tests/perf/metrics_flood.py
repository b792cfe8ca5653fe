"""Figure: polling under a flood of `/metrics` requests.

    python -m tests.perf.metrics_flood [--clients 200] [--seconds 10] [--poll 1.0] [--hostile 200]

The daemon's wiring (poller, dispatcher, the health server on loopback, real SQLite and the
simulator) discovers a kind holding a healthy job and `--hostile` others. While `--clients`
concurrent clients (in a thread of their own, with their own event loop) GET `/metrics` as
fast as they can, the healthy job changes state at random phases of the poll cycle and every
hostile one takes a new random 2,000-char state. Printed: polls done against expected, the longest gap between polls, the detection
delay of each change, the size of `/metrics`, and what the flood was answered. Figures are
printed, never asserted (`tests/system/test_metrics_flood.py` asserts generous bounds).
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import anyio
import anyio.to_thread
import httpx

from fireworks_sim import Simulator
from tests.support.servers import ServedApp
from watcher import app, config, logs
from watcher.core.model import Transition
from watcher.ports import Report
from watcher.web.health import Health
from watcher.web.serve import serve_health

KEY = "flood-key-0123456789"
ACCOUNT = "flood"
HEALTHY = ("RUNNING", "PENDING")


@dataclass
class Figures:
    """What one flood run measured."""

    polls: int = 0
    expected_polls: int = 0
    max_gap: float = 0.0
    delays: list[float] = field(default_factory=list)
    changes: int = 0
    metrics_bytes: int = 0
    after_status: int = 0  # the status of one GET /metrics once the flood stopped
    transition_series: int = 0
    answers: Counter[str] = field(default_factory=Counter)


class CycleClock(Health):
    """The daemon's health observer, also noting when each poll cycle finished."""

    def __init__(self, poll: float) -> None:
        super().__init__(poll_interval=poll)
        self.cycles: list[float] = []
        self.first = anyio.Event()

    def cycle_done(self, report: Report, *, at: datetime) -> None:
        super().cycle_done(report, at=at)
        self.cycles.append(anyio.current_time())
        self.first.set()


def hostile_state() -> str:
    """A 2,000-character state no kind documents."""
    return "".join(random.choices(string.ascii_uppercase, k=2000))


def flood(url: str, clients: int, stop: threading.Event, answers: Counter[str]) -> None:
    """`clients` concurrent GETs of `url` until `stop`, on an event loop of this thread."""

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                answers[str((await http.get(url)).status_code)] += 1
            except httpx.HTTPError as exc:
                answers[type(exc).__name__] += 1

    async def main() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with (
            httpx.AsyncClient(limits=limits, timeout=5.0, trust_env=False) as http,
            anyio.create_task_group() as tg,
        ):
            for _ in range(clients):
                tg.start_soon(client, http)

    anyio.run(main)


async def run(
    sim: Simulator,
    base_url: str,
    workdir: Path,
    *,
    clients: int,
    seconds: float,
    poll: float,
    hostile: int = 200,
    allowance: float | None = None,
) -> Figures:
    """Run the daemon under the flood for `seconds`; measure it. A change not detected
    within `allowance` seconds (2 poll intervals) counts as missed."""
    sim.add_job("healthy", state="RUNNING")
    others = [f"hostile-{i}" for i in range(hostile)]
    for job in others:
        sim.add_job(job, state="RUNNING")
    settings = config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": base_url},
            "watcher": {
                "poll_interval": poll,
                "state_path": str(workdir / "state.db"),
                "max_requests_per_minute": 6000,
            },
            "watch": [{"kind": "dpo", "discover": True}],
            "channel": [],
        },
        {"FIREWORKS_API_KEY": KEY},
    )
    figures = Figures()
    health = CycleClock(poll)
    seen: dict[str, float] = {}

    arrived = anyio.Event()

    def on_transition(transition: Transition) -> None:
        if transition.ref.job_id == "healthy" and transition.old is not None:
            seen[transition.new_state] = anyio.current_time()
            arrived.set()

    stop, flooding = anyio.Event(), threading.Event()
    async with (
        app.open_runtime(settings, health=health, on_transition=on_transition) as runtime,
        anyio.create_task_group() as tg,
    ):
        port = await tg.start(serve_health, health.app(), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}/metrics"
        tg.start_soon(runtime.watcher.run_forever, stop)
        with anyio.fail_after(30):
            await health.first.wait()
        thread = threading.Thread(
            target=flood, args=(url, clients, flooding, figures.answers), daemon=True
        )
        thread.start()
        started = anyio.current_time()
        step = 0
        while anyio.current_time() - started < seconds:
            step += 1
            state = HEALTHY[step % 2]
            seen.pop(state, None)
            arrived = anyio.Event()
            sim.set_state("healthy", state)
            for job in others:
                sim.set_state(job, hostile_state())
            changed = anyio.current_time()
            figures.changes += 1
            with anyio.move_on_after(allowance if allowance is not None else 2 * poll):
                await arrived.wait()
            if state in seen:
                figures.delays.append(seen[state] - changed)
            # The next change at another phase of the poll cycle.
            await anyio.sleep(random.uniform(0.1, 0.9) * poll)
        ended = anyio.current_time()
        flooding.set()
        await anyio.to_thread.run_sync(thread.join, 10)
        async with httpx.AsyncClient(trust_env=False) as http:
            await anyio.sleep(getattr(health, "_metrics_max_age", 0.0))  # a fresh rendering
            answer = await http.get(url)
            body, figures.after_status = answer.text, answer.status_code
        stop.set()
        tg.cancel_scope.cancel()
    during = [t for t in health.cycles if started <= t <= ended]
    gaps = [b - a for a, b in zip([started, *during], [*during, ended], strict=True)]
    figures.polls = len(during)
    figures.expected_polls = int((ended - started) / poll)
    figures.max_gap = max(gaps)
    figures.metrics_bytes = len(body.encode())
    figures.transition_series = sum(
        line.startswith("fireworks_watcher_transitions_total{") for line in body.splitlines()
    )
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """Run the flood once and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--hostile", type=int, default=200)
    args = parser.parse_args(argv)
    logs.configure(level="error")  # the figures on stdout; only real trouble on stderr
    sim = Simulator(api_key=KEY, account_id=ACCOUNT)
    with ServedApp(sim) as served, tempfile.TemporaryDirectory() as tmp:
        figures = anyio.run(
            lambda: run(
                sim,
                served.url,
                Path(tmp),
                clients=args.clients,
                seconds=args.seconds,
                poll=args.poll,
                hostile=args.hostile,
            )
        )
    delays = figures.delays or [float("nan")]
    print(
        f"clients: {args.clients}, {args.seconds:g} s, poll_interval {args.poll:g} s, "
        f"{args.hostile} jobs in random 2,000-char states"
    )
    print(f"polls: {figures.polls} done, {figures.expected_polls} expected")
    print(f"max gap between polls: {figures.max_gap:.2f} s")
    print(
        f"changes seen: {len(figures.delays)} of {figures.changes}; detection delay "
        f"max {max(delays):.2f} s, mean {sum(delays) / len(delays):.2f} s"
    )
    print(f"/metrics: {figures.metrics_bytes} bytes, {figures.transition_series} transition series")
    print(f"flood answers: {dict(figures.answers.most_common())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
