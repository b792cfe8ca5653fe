"""The benchmark: the daemon's poll cycles against the simulator, beside a naive poller.

Run it from the checkout::

    python -m tests.perf.bench [--n 100 1000 10000] [--cycles 5] [--quick] [--json FILE]
    python -m tests.perf.bench --n --budget-scenario     # the budget scenario alone
    python -m tests.perf.bench --profile discover --n 10000

With no `--n` it measures N = 100, 1,000 and 10,000 and then the budget scenario (about 9
minutes on 2 CPUs); `--quick` shortens the latency phase to 5 changes (CI: `--n 1000 --cycles
2 --quick`, about 30 s).

For each N the simulator runs in its own process with N DPO jobs (`job-00000`...). Each mode
is measured in worker processes of its own, so CPU time and peak RSS belong to that mode alone:

* `discover`: the real watcher (`open_watcher`, SQLite, apprise) with `discover = true`;
* `explicit`: the same with all N job ids listed in `jobs`;
* `naive`: one `httpx.Client.get` per job, sequential, compared with a dict of last states.

A cycle worker runs a baseline cycle, then K measured cycles (`run_once(force=True)`), and
reports per cycle the wall time, the CPU seconds (`time.process_time`), the API requests the
simulator served and the jobs polled, plus `ru_maxrss`. A latency worker runs the real loop
(`run_forever`) while this process changes job states through the simulator's control API;
the time from a change to the arrival of its notification at a local `json://` receiver is
the transition→delivery latency. The budget scenario watches 10,000 jobs with
`max_requests_per_minute = 60` and counts the requests actually spent per minute.

It prints figures and PASS/MISS against the targets; nothing is asserted. The exit code is 1
when a worker or the simulator failed (the other modes are still measured), else 0.
`tests/system/test_bench.py` runs it once at N=1,000 to keep it working.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import platform
import pstats
import queue
import random
import re
import resource
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio
import httpx

from tests.support.servers import JsonReceiver
from watcher import config, logs
from watcher.app import open_watcher
from watcher.core.kinds import SETTLED, JobKind
from watcher.core.model import short_state
from watcher.web.health import Health

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "sim-account"
KEY = "sim-key"
MODES: tuple[str, ...] = ("discover", "discover-pg", "explicit", "naive")
#: Where `discover-pg` finds PostgreSQL (`.ci/postgres` prints it); without it that mode is
#: left out of the default modes.
PG_DSN_ENV = "FIREWORKS_WATCHER_TEST_PG_DSN"


def default_modes() -> list[str]:
    """Every mode; `discover-pg` only when a PostgreSQL DSN is given."""
    return [m for m in MODES if m != "discover-pg" or os.environ.get(PG_DSN_ENV)]


DEFAULT_NS: tuple[int, ...] = (100, 1000, 10_000)
#: Every notification names its job, its new state and the change's unique token.
BODY = "{job_id}|{new_state}|{status_message}"
#: So high that no request budget paces the per-cycle and latency measurements.
UNLIMITED_RPM = 1_000_000
#: When the naive poller's measured cycles would take longer than this, it measures one.
NAIVE_TIME_CAP = 60.0
#: Seconds a worker may take for its whole per-cycle run, or to finish its baseline cycle.
WORKER_TIMEOUT = 900.0
#: The budget scenario: N, budget, poll interval, changes and the seconds they are spread over.
BUDGET_JOBS = 10_000
BUDGET_RPM = 60
BUDGET_INTERVAL = 60.0
BUDGET_CHANGES = 10
BUDGET_SPREAD = 180.0
#: Targets: CPU ms per 1,000 job-polls, peak RSS in MiB, slack over the interval in seconds.
DISCOVER_CPU_TARGET = 20.0
EXPLICIT_CPU_TARGET = 150.0
RSS_TARGET_MIB = 120.0
LATENCY_SLACK = 1.0
BUDGET_DETECTION = 60.0


def job_ids(n: int) -> list[str]:
    """The ids `fireworks_sim.populate` gives N jobs."""
    return [f"job-{index:05d}" for index in range(n)]


def latency_interval(n: int) -> float:
    """The poll interval of the latency runs: 2 s up to 1,000 jobs, 5 s above."""
    return 2.0 if n <= 1000 else 5.0


# --- pure figures ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The `q` quantile (0..1), interpolated linearly between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def peak_window(samples: Sequence[tuple[float, int]], window: float) -> int:
    """The largest count increase within any `window` seconds of `(time, running count)` samples."""
    best = 0
    start = 0
    for end in range(len(samples)):
        while samples[end][0] - samples[start][0] > window:
            start += 1
        best = max(best, samples[end][1] - samples[start][1])
    return best


@dataclass(frozen=True, slots=True)
class Cycle:
    """One measured cycle: wall and CPU seconds, API requests served, jobs polled."""

    wall_s: float
    cpu_s: float
    requests: int
    polled: int


@dataclass(frozen=True, slots=True)
class CycleRun:
    """What one cycle worker measured."""

    mode: str
    n: int
    baseline_wall_s: float
    cycles: tuple[Cycle, ...]
    maxrss_kib: int
    note: str = ""

    @property
    def requests_per_cycle(self) -> float:
        """Mean API requests per measured cycle."""
        return sum(c.requests for c in self.cycles) / len(self.cycles)

    @property
    def max_requests(self) -> int:
        """The most API requests any measured cycle made."""
        return max(c.requests for c in self.cycles)

    @property
    def wall_ms(self) -> float:
        """Median cycle wall time in milliseconds."""
        return percentile([c.wall_s for c in self.cycles], 0.5) * 1000

    @property
    def cpu_ms_per_1k(self) -> float:
        """CPU milliseconds per 1,000 job-polls over all measured cycles."""
        polled = sum(c.polled for c in self.cycles)
        cpu = sum(c.cpu_s for c in self.cycles)
        return cpu * 1e6 / polled if polled else math.nan

    @property
    def rss_mib(self) -> float:
        """Peak resident set size of the worker in MiB."""
        return self.maxrss_kib / 1024

    def figures(self) -> dict[str, Any]:
        """Everything, derived figures included, for `--json`."""
        return {
            "mode": self.mode,
            "n": self.n,
            "baseline_wall_s": self.baseline_wall_s,
            "cycles": [
                {"wall_s": c.wall_s, "cpu_s": c.cpu_s, "requests": c.requests, "polled": c.polled}
                for c in self.cycles
            ],
            "requests_per_cycle": self.requests_per_cycle,
            "max_requests_per_cycle": self.max_requests,
            "cycle_wall_ms_median": self.wall_ms,
            "cpu_ms_per_1000_polls": self.cpu_ms_per_1k,
            "peak_rss_mib": self.rss_mib,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class LatencyRun:
    """What one latency run measured: change→arrival seconds and the requests spent meanwhile.

    Attributes:
        changes: state changes made; `latencies` has one entry per change that arrived.
        requests: API requests the simulator served from the worker's start to its stop.
        elapsed_s: seconds from the worker's start to its stop.
        peak_minute: the most requests served within any 60 s.
        cycles: poll cycles the worker ran.
    """

    mode: str
    n: int
    interval: float
    changes: int
    latencies: tuple[float, ...]
    requests: int
    elapsed_s: float
    peak_minute: int
    cycles: int
    max_rpm: int

    @property
    def missing(self) -> int:
        """Changes whose notification never arrived."""
        return self.changes - len(self.latencies)

    @property
    def p50(self) -> float:
        """Median latency in seconds."""
        return percentile(self.latencies, 0.5)

    @property
    def p99(self) -> float:
        """99th percentile latency in seconds; infinite when a change was never delivered."""
        return math.inf if self.missing else percentile(self.latencies, 0.99)

    @property
    def requests_per_minute(self) -> float:
        """Mean API requests per minute over the run."""
        return self.requests * 60 / self.elapsed_s if self.elapsed_s else math.nan

    def figures(self) -> dict[str, Any]:
        """Everything, derived figures included, for `--json`."""
        return {
            "mode": self.mode,
            "n": self.n,
            "interval_s": self.interval,
            "max_requests_per_minute": self.max_rpm,
            "changes": self.changes,
            "delivered": len(self.latencies),
            "latencies_s": list(self.latencies),
            "p50_s": self.p50,
            "p99_s": None if math.isinf(self.p99) else self.p99,
            "requests": self.requests,
            "elapsed_s": self.elapsed_s,
            "requests_per_minute": self.requests_per_minute,
            "peak_requests_in_60s": self.peak_minute,
            "cycles": self.cycles,
        }


@dataclass(frozen=True, slots=True)
class Target:
    """One target: a measured value (None when not run) against an upper bound."""

    name: str
    measured: float | None
    bound: float
    unit: str

    @property
    def verdict(self) -> str:
        """PASS, MISS, or "n/a" when the figure was not measured."""
        if self.measured is None:
            return "n/a "
        return "PASS" if self.measured <= self.bound else "MISS"

    def line(self) -> str:
        """`PASS name: measured unit (target <= bound unit)`."""
        shown = "not measured in this run" if self.measured is None else _num(self.measured)
        unit = f" {self.unit}" if self.measured is not None else ""
        return (
            f"{self.verdict} {self.name}: {shown}{unit} (target ≤ {_num(self.bound)} {self.unit})"
        )


def _num(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "∞"
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def targets(
    cycles: dict[tuple[int, str], CycleRun],
    latencies: dict[tuple[int, str], LatencyRun],
    budget: LatencyRun | None,
) -> list[Target]:
    """The issue's targets, each judged on this run's figures."""
    big = cycles.get((10_000, "discover"))
    big_latency = latencies.get((10_000, "discover"))
    small = cycles.get((1000, "explicit"))
    small_latency = latencies.get((1000, "explicit"))
    return [
        Target(
            "discover, 10,000 jobs: requests in a cycle (the most of any cycle)",
            None if big is None else big.max_requests,
            math.ceil(10_000 / 200) + 1,
            "requests",
        ),
        Target(
            "discover, 10,000 jobs: CPU per 1,000 job-polls",
            None if big is None else big.cpu_ms_per_1k,
            DISCOVER_CPU_TARGET,
            "ms",
        ),
        Target(
            "discover, 10,000 jobs: peak RSS",
            None if big is None else big.rss_mib,
            RSS_TARGET_MIB,
            "MiB",
        ),
        Target(
            "discover, 10,000 jobs: transition→delivery p99 (interval + 1 s)",
            None if big_latency is None else big_latency.p99,
            latency_interval(10_000) + LATENCY_SLACK,
            "s",
        ),
        Target(
            "explicit, 1,000 jobs: CPU per 1,000 job-polls",
            None if small is None else small.cpu_ms_per_1k,
            EXPLICIT_CPU_TARGET,
            "ms",
        ),
        Target(
            "explicit, 1,000 jobs: transition→delivery p99 (interval + 1 s)",
            None if small_latency is None else small_latency.p99,
            latency_interval(1000) + LATENCY_SLACK,
            "s",
        ),
        Target(
            f"budget, {BUDGET_JOBS:,} jobs at {BUDGET_RPM}/min: most requests within any 60 s",
            None if budget is None else budget.peak_minute,
            BUDGET_RPM,
            "requests",
        ),
        Target(
            f"budget, {BUDGET_JOBS:,} jobs at {BUDGET_RPM}/min: detection p99",
            None if budget is None else budget.p99,
            BUDGET_DETECTION,
            "s",
        ),
    ]


def table(
    cycles: dict[tuple[int, str], CycleRun], latencies: dict[tuple[int, str], LatencyRun]
) -> str:
    """The figures as a Markdown table, one row per (N, mode)."""
    head = (
        "| N | mode | cycles | requests/cycle | cycle wall (ms, median) | CPU ms / 1k job-polls"
        " | peak RSS (MiB) | latency p50 (s) | latency p99 (s) | interval (s) | notes |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for (n, mode), run in cycles.items():
        latency = latencies.get((n, mode))
        notes = [run.note] if run.note else []
        if latency is not None and latency.missing:
            notes.append(f"{latency.missing}/{latency.changes} changes not delivered")
        if latency is not None:
            notes.append(f"{latency.changes} changes")
        cells = [
            f"{n:,}",
            mode,
            str(len(run.cycles)),
            _num(run.requests_per_cycle),
            _num(run.wall_ms),
            _num(run.cpu_ms_per_1k),
            _num(run.rss_mib),
            "-" if latency is None else _num(latency.p50),
            "-" if latency is None else _num(latency.p99),
            "-" if latency is None else _num(latency.interval),
            "; ".join(notes),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budget_table(run: LatencyRun) -> str:
    """The budget scenario's figures as a Markdown table."""
    rows = [
        ("jobs (discover)", f"{run.n:,}"),
        ("max_requests_per_minute / poll_interval", f"{run.max_rpm} / {run.interval:g} s"),
        ("run length", f"{run.elapsed_s:.0f} s, {run.cycles} cycles"),
        ("requests served", str(run.requests)),
        ("requests per minute (mean)", _num(run.requests_per_minute)),
        ("most requests within any 60 s", str(run.peak_minute)),
        ("changes made / delivered", f"{run.changes} / {len(run.latencies)}"),
        ("detection→delivery p50 / p99 / max (s)", _latency_triple(run)),
    ]
    return "\n".join(["| figure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def _latency_triple(run: LatencyRun) -> str:
    top = max(run.latencies) if run.latencies else math.nan
    return f"{_num(run.p50)} / {_num(run.p99)} / {_num(top)}"


def machine() -> dict[str, str]:
    """The machine the figures come from: CPUs, CPU model, Python, OS."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "nproc": str(cpus),
        "cpu": model,
        "python": platform.python_version(),
        "system": platform.platform(terse=True),
    }


# --- worker side -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """What the parent tells a worker process."""

    mode: str
    n: int
    url: str
    receiver: str  # http://127.0.0.1:PORT/hook
    cycles: int
    state_dir: Path
    interval: float
    max_rpm: int
    latency: bool
    profile: bool


def _emit(event: str, **fields: Any) -> None:
    """One JSON line on stdout for the parent."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _settings(opts: WorkerOptions) -> config.Settings:
    """The watcher's settings for this worker, through the real config parser."""
    watch: dict[str, Any] = {"kind": "dpo"}
    if opts.mode.startswith("discover"):
        watch["discover"] = True
    else:
        watch["jobs"] = job_ids(opts.n)
    state: dict[str, str] = {"state_path": str(opts.state_dir / "state.db")}
    if opts.mode == "discover-pg":
        state = {"state_url": _pg_url(opts)}
    data = {
        "fireworks": {"account_id": ACCOUNT, "base_url": opts.url},
        "watcher": {
            "poll_interval": opts.interval,
            "max_requests_per_minute": opts.max_rpm,
            **state,
            "health_listen": "",
        },
        "watch": [watch],
        "channel": [
            {
                "name": "bench",
                "urls": ["json://" + opts.receiver.removeprefix("http://")],
                "body": BODY,
                # Latency is the poller's: bursts of changes are not held to the default pace.
                "max_per_second": 100,
            }
        ],
    }
    return config.parse(data, {"FIREWORKS_API_KEY": KEY}, source="bench")


def _health(settings: config.Settings) -> Health:
    # The daemon always runs with its metrics observer; so do the measured cycles.
    return Health(
        poll_interval=settings.watcher.poll_interval,
        terminal_poll_interval=settings.watcher.terminal_poll_interval,
    )


async def _sim_requests(http: httpx.AsyncClient) -> int:
    response = await http.get("/_sim/stats")
    response.raise_for_status()
    return int(response.json()["requests"])


def _profile_text(profiler: cProfile.Profile, title: str) -> str:
    """The top 25 functions by cumulative and by own time, with shortened paths."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"{title}\n\n== top 25 by cumulative time ==\n")
    stats.sort_stats("cumulative").print_stats(25)
    out.write("\n== top 25 by total (own) time ==\n")
    stats.sort_stats("tottime").print_stats(25)
    text = out.getvalue()
    for prefix in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["stdlib"], str(ROOT)):
        text = text.replace(prefix + "/", "")
    return text


async def _watcher_cycles(opts: WorkerOptions) -> None:
    """Baseline, then K forced cycles (or one under cProfile); emits `result` or `profile`."""
    settings = _settings(opts)
    async with (
        httpx.AsyncClient(base_url=opts.url, timeout=60) as control,
        open_watcher(settings, health=_health(settings)) as watcher,
    ):
        started = time.perf_counter()
        await watcher.run_once(force=True)
        baseline = time.perf_counter() - started
        if opts.profile:
            profiler = cProfile.Profile()
            cpu = time.process_time()
            profiler.enable()
            report = await watcher.run_once(force=True)
            profiler.disable()
            cpu = time.process_time() - cpu
            title = (
                f"{opts.mode}, {opts.n:,} jobs: one cycle, {report.polled} jobs polled,"
                f" {cpu * 1000:.0f} ms CPU with the profiler on. Times are wall-clock, main"
                " thread only; select.epoll.poll is waiting for the simulator."
            )
            _emit("profile", text=_profile_text(profiler, title))
            return
        cycles: list[Cycle] = []
        server_cpu = _postgres_cpu() if opts.mode == "discover-pg" else None
        for _ in range(opts.cycles):
            before = await _sim_requests(control)
            cpu = time.process_time()
            wall = time.perf_counter()
            report = await watcher.run_once(force=True)
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
            cycles.append(Cycle(wall, cpu, await _sim_requests(control) - before, report.polled))
    note = ""
    if server_cpu is not None:
        polled = sum(c.polled for c in cycles)
        spent = _postgres_cpu_since(server_cpu)
        note = f"PostgreSQL server: {1e6 * spent / max(1, polled):.1f} CPU ms / 1k job-polls"
    _emit(
        "result",
        baseline_wall_s=baseline,
        cycles=[[c.wall_s, c.cpu_s, c.requests, c.polled] for c in cycles],
        maxrss_kib=_maxrss_kib(),
        note=note,
    )


def _postgres_cpu() -> dict[int, int]:
    """CPU clock ticks of each `postgres` process on this machine (the server's share of a
    `discover-pg` cycle, which the worker's own CPU time leaves out)."""
    found: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it ended meanwhile
        name, rest = text[text.index("(") + 1 :].split(")", 1)
        if name.startswith("postgres"):
            fields = rest.split()
            found[int(stat.parent.name)] = int(fields[11]) + int(fields[12])  # utime, stime
    return found


def _postgres_cpu_since(before: dict[int, int]) -> float:
    """CPU seconds the `postgres` processes used since `before` (new ones count whole; one
    that ended meanwhile is not counted: a backend lives as long as its pooled connection)."""
    now = _postgres_cpu()
    ticks = sum(max(0, cpu - before.get(pid, 0)) for pid, cpu in now.items())
    return ticks / os.sysconf("SC_CLK_TCK")


async def _watcher_latency(opts: WorkerOptions) -> None:
    """The daemon's loop until SIGTERM; emits `ready` after the first cycle, then `result`."""
    settings = _settings(opts)
    stop = anyio.Event()
    cycles = 0

    def on_cycle() -> None:
        nonlocal cycles
        cycles += 1
        if cycles == 1:
            _emit("ready")

    async with (
        open_watcher(settings, health=_health(settings)) as watcher,
        anyio.create_task_group() as tg,
    ):

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    stop.set()
                    return

        tg.start_soon(stop_on_signal)
        await watcher.run_forever(stop, on_cycle=on_cycle)
        tg.cancel_scope.cancel()
    _emit("result", cycles=cycles, maxrss_kib=_maxrss_kib())


class NaivePoller:
    """What a user might write: GET every job in turn, compare with the last state, post changes.

    Args:
        url: the simulator's base URL.
        n: how many jobs (`job-00000`...).
        receiver: where to post a JSON message per change (None: post nothing).
    """

    def __init__(self, url: str, n: int, receiver: str | None = None) -> None:
        self.http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {KEY}", "Accept": "application/json"},
            timeout=60,
        )
        self.ids = job_ids(n)
        self.receiver = receiver
        self.last: dict[str, tuple[str, str]] = {}

    def poll_all(self, stop: threading.Event | None = None) -> int:
        """One pass over every job; returns how many were polled."""
        polled = 0
        for job in self.ids:
            if stop is not None and stop.is_set():
                break
            response = self.http.get(f"/v1/accounts/{ACCOUNT}/dpoJobs/{job}")
            response.raise_for_status()
            document = response.json()
            status = document.get("status") or {}
            seen = (str(document.get("state", "")), str(status.get("message", "")))
            previous = self.last.get(job)
            self.last[job] = seen
            polled += 1
            if previous is not None and previous != seen and self.receiver is not None:
                state = short_state(seen[0])
                message = {"title": f"{job}: {state}", "message": f"{job}|{state}|{seen[1]}"}
                self.http.post(self.receiver, json=message)
        return polled

    def sim_requests(self) -> int:
        """The simulator's API request count."""
        response = self.http.get("/_sim/stats")
        response.raise_for_status()
        return int(response.json()["requests"])

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()


def _naive_cycles(opts: WorkerOptions) -> None:
    """Baseline pass, then K measured passes (one when K would be slow); emits `result`."""
    poller = NaivePoller(opts.url, opts.n)
    try:
        started = time.perf_counter()
        poller.poll_all()
        baseline = time.perf_counter() - started
        if opts.profile:
            profiler = cProfile.Profile()
            cpu = time.process_time()
            profiler.enable()
            polled = poller.poll_all()
            profiler.disable()
            cpu = time.process_time() - cpu
            title = (
                f"naive, {opts.n:,} jobs: one pass, {polled} jobs polled, {cpu * 1000:.0f} ms CPU"
            )
            _emit("profile", text=_profile_text(profiler, title))
            return
        count = opts.cycles
        note = ""
        if baseline * count > NAIVE_TIME_CAP:
            count = 1
            note = f"1 measured cycle only: one sequential pass takes {baseline:.0f} s"
        cycles: list[Cycle] = []
        for _ in range(count):
            before = poller.sim_requests()
            cpu = time.process_time()
            wall = time.perf_counter()
            polled = poller.poll_all()
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
            cycles.append(Cycle(wall, cpu, poller.sim_requests() - before, polled))
    finally:
        poller.close()
    _emit(
        "result",
        baseline_wall_s=baseline,
        cycles=[[c.wall_s, c.cpu_s, c.requests, c.polled] for c in cycles],
        maxrss_kib=_maxrss_kib(),
        note=note,
    )


def _naive_latency(opts: WorkerOptions) -> None:
    """Pass after pass, one interval apart (start to start), until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    poller = NaivePoller(opts.url, opts.n, receiver=opts.receiver)
    try:
        next_at = time.monotonic() + opts.interval
        poller.poll_all()
        cycles = 1
        _emit("ready")
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + opts.interval
            poller.poll_all(stop)
            cycles += 1
    finally:
        poller.close()
    _emit("result", cycles=cycles, maxrss_kib=_maxrss_kib())


def _pg_schema(opts: WorkerOptions) -> str:
    return "bench_" + re.sub(r"[^a-z0-9]", "_", opts.state_dir.name.lower())


def _pg_url(opts: WorkerOptions) -> str:
    """The worker's own schema of the PostgreSQL database, as a `state_url`."""
    dsn = os.environ[PG_DSN_ENV]
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options=-csearch_path%3D{_pg_schema(opts)}"


@contextmanager
def _pg_schema_for(opts: WorkerOptions) -> Iterator[None]:
    """A fresh PostgreSQL schema for a `discover-pg` worker, dropped when it is done."""
    if opts.mode != "discover-pg":
        yield
        return
    import psycopg

    schema = _pg_schema(opts)
    with psycopg.connect(os.environ[PG_DSN_ENV], autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")  # a name of [a-z0-9_] only
        try:
            yield
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def worker_main(opts: WorkerOptions) -> int:
    """Run one measurement in this process and report it as JSON lines on stdout."""
    # Logs go to stderr (the parent keeps them in a file); stdout carries the results.
    logs.configure(level="info", json=True)
    if opts.mode == "naive":
        (_naive_latency if opts.latency else _naive_cycles)(opts)
    else:
        with _pg_schema_for(opts):
            anyio.run(_watcher_latency if opts.latency else _watcher_cycles, opts)
    return 0


# --- parent side -----------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None, so it is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _child_env() -> dict[str, str]:
    # A real key or account in the environment must never reach the simulator or a worker.
    # The test database's DSN is the one exception: `discover-pg` workers need it.
    return {
        k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_") or k == PG_DSN_ENV
    }


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class SimProcess:
    """The simulator in its own process (`python -m fireworks_sim`), driven over HTTP."""

    def __init__(self, n: int, workdir: Path) -> None:
        self.n = n
        self._log_path = workdir / f"simulator-{n}.log"
        self._log = self._log_path.open("w")
        command = [sys.executable, "-m", "fireworks_sim", "--host", "127.0.0.1"]
        command += ["--port", "0", "--jobs", str(n), "--api-key", KEY, "--account", ACCOUNT]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=_child_env(),
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = re.search(r"listening on (http://\S+) with", line)
        if found is None:
            self.close()
            msg = f"the simulator did not start: {line!r} {_tail(self._log_path)}"
            raise RuntimeError(msg)
        self.url = found[1]
        self._http = httpx.Client(base_url=self.url, timeout=120)

    def requests(self) -> int:
        """API requests served so far (`/_sim/` calls excluded)."""
        response = self._http.get("/_sim/stats")
        response.raise_for_status()
        return int(response.json()["requests"])

    def states(self) -> dict[str, str]:
        """Every DPO job's state by id, e.g. `{"job-00000": "JOB_STATE_RUNNING"}`."""
        response = self._http.get("/_sim/jobs/dpoJobs")
        response.raise_for_status()
        return {
            str(job["name"]).rpartition("/")[2]: str(job["state"])
            for job in response.json()["jobs"]
        }

    def set_state(self, job: str, state: str, message: str) -> None:
        """Move a job to `state` with the status message `message`, now."""
        response = self._http.post(
            f"/_sim/jobs/dpoJobs/{job}/state", json={"state": state, "status_message": message}
        )
        response.raise_for_status()

    def close(self) -> None:
        """Stop the simulator (SIGTERM, then SIGKILL after 10 s)."""
        if hasattr(self, "_http"):
            self._http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Worker:
    """A worker subprocess (`python -m tests.perf.bench --worker ...`) and its JSON lines."""

    def __init__(self, args: Sequence[str], log: Path) -> None:
        self._log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.perf.bench", *args],
            cwd=ROOT,
            env=_child_env(),
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="bench-worker", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def event(self, name: str, timeout: float) -> dict[str, Any]:
        """The worker's next JSON line with `"event": name`; RuntimeError on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                msg = f"worker gave no {name!r} within {timeout:g} s\n{_tail(self._log_path)}"
                raise RuntimeError(msg) from None
            if line is None:
                code = self.proc.wait()
                msg = f"worker exited ({code}) before {name!r}\n{_tail(self._log_path)}"
                raise RuntimeError(msg)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and message.get("event") == name:
                return message

    def stop(self) -> None:
        """Ask the worker to stop (SIGTERM)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Wait for the worker to exit (kill it after 30 s) and collect its output."""
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class TimedReceiver(JsonReceiver):
    """A JsonReceiver that stamps each post with `received_at` (time.monotonic())."""

    def _record(self, record: dict[str, Any]) -> int:
        return super()._record({**record, "received_at": time.monotonic()})

    def http_url(self) -> str:
        """The plain HTTP address the apprise `json://` URL posts to."""
        return f"http://127.0.0.1:{self.port}/hook"

    def arrivals(self) -> dict[str, float]:
        """The first arrival time of each token (the third `|` field of the message)."""
        first: dict[str, float] = {}
        for record in self.messages:
            parts = str(record.get("message", "")).strip().split("|")
            if len(parts) == 3:
                first.setdefault(parts[2].strip(), float(record["received_at"]))
        return first


class Sampler:
    """Samples the simulator's request count every half second in a thread."""

    def __init__(self, url: str) -> None:
        self.samples: list[tuple[float, int]] = []
        self._url = url
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self._url, timeout=30) as http:
            while True:
                response = http.get("/_sim/stats")
                response.raise_for_status()
                self.samples.append((time.monotonic(), int(response.json()["requests"])))
                if self._stop.is_set():
                    return  # the sample just taken is the last, at the end of the block
                self._stop.wait(0.5)

    @contextmanager
    def running(self) -> Iterator[Self]:
        """Sample for the duration of the block, with a last sample at its end."""
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=30)


def _wait_until(condition: Callable[[], bool], deadline: float) -> bool:
    """Poll `condition` every 50 ms until it holds (True) or the monotonic `deadline` (False)."""
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass(slots=True)
class Bench:
    """One benchmark run: where it keeps files, its receiver, and what it measured so far."""

    workdir: Path
    receiver: TimedReceiver
    rng: random.Random
    progress: Callable[[str], None]
    cycles: dict[tuple[int, str], CycleRun] = field(default_factory=dict)
    latencies: dict[tuple[int, str], LatencyRun] = field(default_factory=dict)
    budget: LatencyRun | None = None
    failures: list[str] = field(default_factory=list)

    def worker(self, sim: SimProcess, mode: str, name: str, *extra: str) -> Worker:
        """Start a worker of `mode` against `sim`, with its own state directory and log."""
        state_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))
        args = ["--worker", mode, "--n", str(sim.n), "--url", sim.url]
        args += ["--receiver", self.receiver.http_url(), "--state-dir", str(state_dir), *extra]
        return Worker(args, self.workdir / f"{name}.log")

    def measure_cycles(self, sim: SimProcess, mode: str, cycles: int) -> CycleRun:
        """Baseline plus `cycles` forced cycles of `mode` in a fresh worker."""
        worker = self.worker(
            sim,
            mode,
            f"{mode}-{sim.n}-cycles",
            "--cycles",
            str(cycles),
            "--max-rpm",
            str(UNLIMITED_RPM),
        )
        try:
            result = worker.event("result", WORKER_TIMEOUT)
        finally:
            worker.close()
        run = CycleRun(
            mode=mode,
            n=sim.n,
            baseline_wall_s=float(result["baseline_wall_s"]),
            cycles=tuple(
                Cycle(float(w), float(c), int(r), int(p)) for w, c, r, p in result["cycles"]
            ),
            maxrss_kib=int(result["maxrss_kib"]),
            note=str(result["note"]),
        )
        self.cycles[(sim.n, mode)] = run
        return run

    def measure_latency(
        self,
        sim: SimProcess,
        mode: str,
        states: dict[str, str],
        *,
        interval: float,
        changes: int,
        spread: float,
        settle: float,
        max_rpm: int = UNLIMITED_RPM,
    ) -> LatencyRun:
        """Run the real loop of `mode`, change `changes` active jobs, time their notifications.

        Args:
            states: this process's view of every job's state; updated with each change.
            interval: the worker's poll interval.
            spread: the changes fall at random moments over this many seconds.
            settle: seconds after the last change to wait for the last notification.
        """
        self.receiver.clear()
        settled = {s for s, m in JobKind.DPO.spec.states.items() if m in SETTLED}
        active = sorted(job for job, state in states.items() if short_state(state) not in settled)
        chosen = self.rng.sample(active, min(changes, len(active)))
        made: dict[str, float] = {}
        sampler = Sampler(sim.url)
        with sampler.running():
            worker = self.worker(
                sim,
                mode,
                f"{mode}-{sim.n}-latency",
                "--latency",
                "--interval",
                str(interval),
                "--max-rpm",
                str(max_rpm),
            )
            started = time.monotonic()
            try:
                worker.event("ready", WORKER_TIMEOUT)
                origin = time.monotonic() + 0.2
                offsets = sorted(self.rng.uniform(0, spread) for _ in chosen)
                for offset, job in zip(offsets, chosen, strict=True):
                    # Sleeping to a random moment is the point here: changes land anywhere
                    # within the poll intervals.
                    time.sleep(max(0.0, origin + offset - time.monotonic()))
                    new = "COMPLETED" if short_state(states[job]) == "RUNNING" else "RUNNING"
                    token = f"{mode}-{sim.n}-{len(made)}-{self.rng.getrandbits(32):08x}"
                    made[token] = time.monotonic()
                    sim.set_state(job, new, token)
                    states[job] = f"JOB_STATE_{new}"
                _wait_until(
                    lambda: set(made) <= set(self.receiver.arrivals()),
                    time.monotonic() + settle,
                )
                worker.stop()
                result = worker.event("result", 60)
            finally:
                worker.stop()
                worker.close()
            elapsed = time.monotonic() - started
        arrivals = self.receiver.arrivals()
        samples = sampler.samples
        run = LatencyRun(
            mode=mode,
            n=sim.n,
            interval=interval,
            changes=len(made),
            latencies=tuple(arrivals[t] - made[t] for t in made if t in arrivals),
            requests=samples[-1][1] - samples[0][1] if samples else 0,
            elapsed_s=elapsed,
            peak_minute=peak_window(samples, 60.0),
            cycles=int(result["cycles"]),
            max_rpm=max_rpm,
        )
        if max_rpm == UNLIMITED_RPM:
            self.latencies[(sim.n, mode)] = run
        return run

    def run_n(self, n: int, modes: Sequence[str], *, cycles: int, quick: bool) -> None:
        """Every mode at N jobs: the per-cycle figures, then the latency run.

        A mode whose worker fails is noted in `failures` and the next mode runs.
        """
        changes, spread_intervals = (5, 2) if quick else (20, 5)
        with SimProcess(n, self.workdir) as sim:
            states = sim.states()
            for mode in modes:
                try:
                    self._run_mode(sim, mode, states, cycles, changes, spread_intervals)
                except RuntimeError as exc:
                    self.failures.append(f"N={n:,} {mode}: {str(exc).splitlines()[0]}")
                    self.progress(f"N={n:,} {mode} FAILED: {exc}")

    def _run_mode(
        self,
        sim: SimProcess,
        mode: str,
        states: dict[str, str],
        cycles: int,
        changes: int,
        spread_intervals: int,
    ) -> None:
        n = sim.n
        interval = latency_interval(n)
        began = time.monotonic()
        run = self.measure_cycles(sim, mode, cycles)
        self.progress(
            f"N={n:,} {mode}: {len(run.cycles)} cycle(s), {run.wall_ms:.0f} ms median,"
            f" {run.cpu_ms_per_1k:.1f} CPU ms/1k polls ({time.monotonic() - began:.0f} s)"
        )
        began = time.monotonic()
        latency = self.measure_latency(
            sim,
            mode,
            states,
            interval=interval,
            changes=changes,
            spread=spread_intervals * interval,
            # Two intervals and two cycles: a change just missed by one cycle is in the next.
            settle=2 * (interval + run.wall_ms / 1000) + 5,
        )
        self.progress(
            f"N={n:,} {mode}: latency p50 {latency.p50:.2f} s, p99 {latency.p99:.2f} s,"
            f" {len(latency.latencies)}/{latency.changes} delivered"
            f" ({time.monotonic() - began:.0f} s)"
        )

    def run_budget(self) -> LatencyRun:
        """10,000 jobs, discover, 60 requests/min, 60 s interval; ~10 changes over 3 minutes."""
        with SimProcess(BUDGET_JOBS, self.workdir) as sim:
            states = sim.states()
            self.progress(
                f"budget scenario: {BUDGET_JOBS:,} jobs, {BUDGET_RPM}/min,"
                f" {BUDGET_CHANGES} changes over {BUDGET_SPREAD:.0f} s (about 5 minutes)"
            )
            self.budget = self.measure_latency(
                sim,
                "discover",
                states,
                interval=BUDGET_INTERVAL,
                changes=BUDGET_CHANGES,
                spread=BUDGET_SPREAD,
                settle=2 * BUDGET_INTERVAL + 10,
                max_rpm=BUDGET_RPM,
            )
        return self.budget

    def figures(self) -> dict[str, Any]:
        """Everything measured, for `--json`."""
        return {
            "machine": machine(),
            "cycles": [run.figures() for run in self.cycles.values()],
            "latency": [run.figures() for run in self.latencies.values()],
            "budget": None if self.budget is None else self.budget.figures(),
            "failures": list(self.failures),
            "targets": [
                {"name": t.name, "measured": t.measured, "bound": t.bound, "verdict": t.verdict}
                for t in targets(self.cycles, self.latencies, self.budget)
            ],
        }


def profile(mode: str, n: int, workdir: Path) -> str:
    """One cycle of `mode` at N jobs under cProfile (after a baseline), as pstats text."""
    with TimedReceiver() as receiver, SimProcess(n, workdir) as sim:
        bench = Bench(workdir, receiver, random.Random(0), progress=lambda _: None)
        worker = bench.worker(sim, mode, f"{mode}-{n}-profile", "--profile", mode, "--cycles", "1")
        try:
            return str(worker.event("profile", WORKER_TIMEOUT)["text"])
        finally:
            worker.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--n",
        type=int,
        nargs="*",
        default=None,
        metavar="N",
        help="job counts (default 100 1000 10000; none: only the budget scenario)",
    )
    parser.add_argument("--cycles", type=int, default=5, help="measured cycles (default 5)")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=default_modes(),
        help=f"modes (default all; discover-pg when ${PG_DSN_ENV} is set)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short latency phase (5 changes); for CI"
    )
    parser.add_argument(
        "--budget-scenario",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the 10,000-job, 60 requests/min scenario (default: in the full run only)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    parser.add_argument("--seed", type=int, default=0, help="seeds which jobs change, and when")
    parser.add_argument(
        "--profile", choices=MODES, metavar="MODE", help="profile one cycle of MODE instead"
    )
    # The worker side, started by the parent only.
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--receiver", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("--max-rpm", type=int, default=UNLIMITED_RPM, help=argparse.SUPPRESS)
    parser.add_argument("--latency", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: measure, print the machine, the table and the targets."""
    args = _parser().parse_args(argv)
    if args.worker is not None:
        return worker_main(
            WorkerOptions(
                mode=args.worker,
                n=args.n[0],
                url=args.url,
                receiver=args.receiver,
                cycles=args.cycles,
                state_dir=args.state_dir,
                interval=args.interval,
                max_rpm=args.max_rpm,
                latency=args.latency,
                profile=args.profile is not None,
            )
        )
    info = machine()
    header = (
        f"Machine: {info['nproc']} CPUs (nproc), {info['cpu']}, Python {info['python']},"
        f" {info['system']}"
    )
    with tempfile.TemporaryDirectory(prefix="watcher-bench-") as tmp:
        if args.profile is not None:
            n = args.n[0] if args.n else 10_000
            print(header)
            print(profile(args.profile, n, Path(tmp)))
            return 0
        ns: list[int] = list(DEFAULT_NS) if args.n is None else args.n
        with_budget = (
            args.budget_scenario
            if args.budget_scenario is not None
            else not args.n and not args.quick
        )
        began = time.monotonic()

        def progress(line: str) -> None:
            print(f"[{time.monotonic() - began:5.0f} s] {line}", file=sys.stderr, flush=True)

        with TimedReceiver() as receiver:
            bench = Bench(Path(tmp), receiver, random.Random(args.seed), progress)
            for n in ns:
                bench.run_n(n, args.modes, cycles=args.cycles, quick=args.quick)
            if with_budget:
                try:
                    bench.run_budget()
                except RuntimeError as exc:
                    bench.failures.append(f"budget scenario: {str(exc).splitlines()[0]}")
                    progress(f"budget scenario FAILED: {exc}")
    print(header)
    print()
    print(
        f"Per-cycle figures: up to {args.cycles} forced cycle(s) after a baseline, per mode in"
        " its own process; requests counted by the simulator; latency from a state change to"
        " its notification's arrival (the real loop, max_requests_per_minute unlimited)."
    )
    print()
    print(table(bench.cycles, bench.latencies))
    if bench.budget is not None:
        print()
        print("Budget scenario:")
        print()
        print(budget_table(bench.budget))
    print()
    print("Targets:")
    for target in targets(bench.cycles, bench.latencies, bench.budget):
        print(target.line())
    for failure in bench.failures:
        print(f"FAILED {failure}")
    if args.json is not None:
        args.json.write_text(json.dumps(_finite(bench.figures()), indent=2, allow_nan=False))
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
