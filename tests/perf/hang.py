"""Benchmark: detection→delivery latency on a healthy channel while another channel hangs.

    python -m tests.perf.hang [--changes 8] [--poll 1.0] [--notify-timeout 10]

One daemon (the in-process poller and dispatcher, real SQLite, the simulator and two real
`json://` receivers over loopback) watches jobs and announces each change to two channels.
In the `hanging` run one channel answers every post only after `notify_timeout`; in the
`healthy` run both answer at once. The same changes are made in both runs, one after
another, and the time from each change in the simulator to its arrival at the healthy
channel is measured. The design says one slow channel must slow only itself: the two runs'
figures should agree within a poll interval. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.to_thread

from fireworks_sim import Simulator
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app, config, logs
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef

KEY = "bench-key"
ACCOUNT = "bench"


async def measure(
    *, hanging: bool, changes: int, poll: float, notify_timeout: float, workdir: Path
) -> list[float]:
    """Seconds from each change to its arrival at the healthy channel."""
    sim = Simulator(api_key=KEY, account_id=ACCOUNT)
    jobs = [f"job-{i}" for i in range(changes)]
    for job in jobs:
        sim.add_job(job, state="RUNNING")
    latencies: list[float] = []
    with ServedApp(sim) as served, JsonReceiver() as healthy, JsonReceiver() as slow:
        slow.delay = notify_timeout if hanging else 0.0
        settings = config.parse(
            {
                "fireworks": {"account_id": ACCOUNT, "base_url": served.url},
                "watcher": {
                    "poll_interval": poll,
                    "state_path": str(workdir / f"state-{hanging}.db"),
                    "max_requests_per_minute": 6000,
                    "notify_timeout": notify_timeout,
                    "health_listen": "",
                },
                "watch": [{"kind": "dpo", "jobs": jobs}],
                "channel": [
                    {"name": "slow", "urls": [slow.url()]},
                    {"name": "healthy", "urls": [healthy.url()]},
                ],
            },
            {"FIREWORKS_API_KEY": KEY},
        )
        async with app.open_watcher(settings) as watcher:
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher.run_forever, stop)
                last = JobRef(JobKind.DPO, jobs[-1])
                # The baseline is the poller's own state: no event of ours to wait on.
                while watcher.last(last) is None:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                for index, job in enumerate(jobs, start=1):
                    sim.set_state(job, "COMPLETED")
                    changed = time.monotonic()
                    await anyio.to_thread.run_sync(healthy.wait_for, index, 60.0)
                    latencies.append(time.monotonic() - changed)
                stop.set()
    return latencies


def row(mode: str, values: Sequence[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"| {mode} | {len(values)} | {statistics.median(values):.2f} | {p95:.2f} | "
        f"{max(values):.2f} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.hang", description=__doc__)
    parser.add_argument("--changes", type=int, default=8)
    parser.add_argument("--poll", type=float, default=1.0, help="poll_interval, seconds")
    parser.add_argument("--notify-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    logs.configure(level="error")  # the figures on stdout; only real trouble on stderr
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            mode: anyio.run(
                functools.partial(
                    measure,
                    hanging=hanging,
                    changes=args.changes,
                    poll=args.poll,
                    notify_timeout=args.notify_timeout,
                    workdir=Path(tmp),
                )
            )
            for mode, hanging in (("healthy", False), ("hanging", True))
        }
    print(
        f"detection→delivery on the healthy channel, poll_interval {args.poll:g} s, "
        f"the other channel hanging {args.notify_timeout:g} s per post (notify_timeout)"
    )
    print("| run | changes | p50 (s) | p95 (s) | max (s) |")
    print("|---|---|---|---|---|")
    for mode, values in runs.items():
        print(row(mode, values))
    gap = statistics.median(runs["hanging"]) - statistics.median(runs["healthy"])
    print(f"median gap hanging - healthy: {gap:+.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
