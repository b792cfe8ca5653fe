"""Figures: memory for answers of any size, and pages per cycle for endless pagination.

    python -m tests.perf.answers [--seconds 20] [--only NAME ...]

Each scenario runs in a subprocess of its own (peak RSS, `ru_maxrss`, never goes down), with
the real client against a small ASGI app over loopback:

* `gzip-200MB`: a LIST answer of about 200 KB, gzip, that expands to 200 MB.
* `plain-50MB`: a plain 50 MB LIST answer (valid JSON); RSS is also read after the cycle
  (what the page memo keeps).
* `plain-30MB`: a plain 30 MB answer, under the default 32 MiB cap: what an allowed answer
  costs.
* `endless-empty`, `endless-fresh`: the running daemon (poll_interval 1 s) with an SFT list
  that hands out a new token on every page (empty pages; 200 new jobs a page), beside a
  healthy DPO job that moves every 2 s: pages fetched per cycle, `job.new` lines, and how
  many of the healthy job's moves were seen and how late.

The script works on a tree without the bounds too (it passes the new keys only when the
config knows them), so the same figures can be taken before and after. Printed, never judged.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx

from fireworks_sim import Simulator
from tests.support.servers import ServedApp
from watcher import app, config, logs
from watcher.config.schema import WatcherSettings
from watcher.core.errors import ApiError
from watcher.core.model import JobKind, Transition
from watcher.sources.fireworks import FireworksClient

KEY = "perf-key"
ACCOUNT = "perf"
SFT = "supervisedFineTuningJobs"
SFT_LIST = f"/v1/accounts/{ACCOUNT}/{SFT}"
MB = 1_000_000
SCENARIOS = ("gzip-200MB", "plain-50MB", "plain-30MB", "endless-empty", "endless-fresh")


def rss_mb() -> float:
    """The resident set now, in MB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / MB


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


class Fixed:
    """Answers the SFT list with one fixed body (headers given), the rest from the simulator."""

    def __init__(self, sim: Simulator, body: bytes, encoding: str = "") -> None:
        self.sim, self.body = sim, body
        self.headers = [(b"content-type", b"application/json")]
        if encoding:
            self.headers.append((b"content-encoding", encoding.encode()))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != SFT_LIST:
            await self.sim(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        for i in range(0, len(self.body), 1 << 16):
            piece = self.body[i : i + (1 << 16)]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def whitespace_gzip(size: int) -> bytes:
    """A valid JSON list page padded with `size` bytes of spaces, gzip-compressed."""
    z = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    out = [z.compress(b'{"%s": [], "totalSize": 0' % SFT.encode())]
    chunk = b" " * (1 << 20)
    out += [z.compress(chunk) for _ in range(size // len(chunk))]
    out += [z.compress(b"}"), z.flush()]
    return b"".join(out)


def padded_page(size: int) -> bytes:
    return b'{"%s": [], "pad": "' % SFT.encode() + b"x" * size + b'"}'


def serve_fixed(name: str, urls: Connection) -> None:
    """The child process: serve the scenario's answer until killed (its memory is its own)."""
    if name == "gzip-200MB":
        body, encoding = whitespace_gzip(200 * MB), "gzip"
    else:
        body, encoding = padded_page((50 if name == "plain-50MB" else 30) * MB), ""
    sim = Simulator(api_key=KEY, account_id=ACCOUNT)
    with ServedApp(Fixed(sim, body, encoding)) as served:
        urls.send((served.url, len(body)))
        urls.recv()  # until the parent is done


async def one_answer(name: str) -> dict[str, Any]:
    """LIST the SFT kind three times (three cycles) against the fixed answer, served by a
    child process: the client's peak RSS above its start, and what it holds after the first
    and the last cycle (memory the allocator keeps for reuse shows as flat, a memo as more)."""
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=serve_fixed, args=(name, theirs))
    child.start()
    try:
        url, wire = await anyio.to_thread.run_sync(ours.recv)
        gc.collect()
        start = rss_mb()
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
            client = FireworksClient(http, account_id=ACCOUNT, api_key=KEY, base_url=url)
            kept: list[float] = []
            began = time.perf_counter()
            for _ in range(3):
                try:
                    await client.list_jobs(JobKind.SFT)
                    outcome = "read"
                except ApiError as exc:
                    outcome = f"{type(exc).__name__}: {str(exc)[:90]}"
                gc.collect()
                kept.append(round(rss_mb() - start, 1))
            took = (time.perf_counter() - began) / 3
    finally:
        ours.send("done")
        child.join(30)
    return {
        "scenario": name,
        "wire_bytes": wire,
        "peak_rss_mb": round(peak_mb(), 1),
        "peak_above_start_mb": round(peak_mb() - start, 1),
        "kept_after_cycles_1_2_3_mb": kept,
        "seconds_per_cycle": round(took, 2),
        "outcome": outcome,
    }


class Endless:
    """An SFT list whose every page hands out a fresh token: empty pages, or 200 new jobs."""

    def __init__(self, sim: Simulator, fresh: bool) -> None:
        self.sim, self.fresh = sim, fresh
        self.pages = 0
        self.hostile = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self.hostile or scope["type"] != "http" or scope["path"] != SFT_LIST:
            await self.sim(scope, receive, send)
            return
        self.pages += 1
        items = [
            {"name": f"accounts/{ACCOUNT}/{SFT}/f{self.pages}-{i}", "state": "JOB_STATE_RUNNING"}
            for i in range(200 if self.fresh else 0)
        ]
        body = json.dumps({SFT: items, "nextPageToken": f"t{self.pages}"}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def endless(name: str, seconds: float, workdir: Path) -> dict[str, Any]:
    """The daemon for `seconds` against endless pages, a healthy DPO job moving every 2 s."""
    sim = Simulator(api_key=KEY, account_id=ACCOUNT)
    sim.add_job("job-a", state="RUNNING")
    hostile = Endless(sim, fresh=name == "endless-fresh")
    watcher_keys: dict[str, Any] = {
        "poll_interval": 1,
        "state_path": str(workdir / f"{name}.db"),
        "max_requests_per_minute": 1_000_000,
        "health_listen": "",
    }
    if "max_new_per_cycle" in WatcherSettings.model_fields:
        watcher_keys["max_new_per_cycle"] = 1000  # the default, spelt out
    seen: list[tuple[str, float]] = []  # the healthy job's moves as announced
    new_jobs = 0
    cycles = 0

    def on_transition(transition: Transition) -> None:
        nonlocal new_jobs
        new_jobs += transition.new_job
        if transition.ref.job_id == "job-a" and transition.old is not None:
            seen.append((transition.new_state, time.monotonic()))

    def on_cycle() -> None:
        nonlocal cycles
        cycles += 1

    moves: list[tuple[str, float]] = []
    with ServedApp(hostile) as served:
        settings = config.parse(
            {
                "fireworks": {"account_id": ACCOUNT, "base_url": served.url},
                "watcher": watcher_keys,
                # Both discovered: a LIST is polled every interval, settled jobs or not.
                "watch": [{"kind": "sft", "discover": True}, {"kind": "dpo", "discover": True}],
            },
            {"FIREWORKS_API_KEY": KEY},
        )
        stop = anyio.Event()
        async with (
            app.open_watcher(settings, on_transition=on_transition) as watcher,
            anyio.create_task_group() as tg,
        ):
            await watcher.run_once(force=True)  # the baseline: SFT listed in full, empty
            hostile.hostile = True
            cycles = 0
            tg.start_soon(lambda: watcher.run_forever(stop, on_cycle=on_cycle, max_sleep=0.5))
            ended = time.monotonic() + seconds
            states = ["COMPLETED", "RUNNING"] * 100
            while time.monotonic() < ended:
                state = states[len(moves)]
                sim.set_state("job-a", state)
                moves.append((state, time.monotonic()))
                await anyio.sleep(2.0)
            stop.set()
    # A move is seen when its state is announced after it and before the next move.
    delays = []
    for i, (state, at) in enumerate(moves):
        until = moves[i + 1][1] if i + 1 < len(moves) else math.inf
        delays += [t - at for s, t in seen if s == state and at <= t < until][:1]
    return {
        "scenario": name,
        "seconds": seconds,
        "pages": hostile.pages,
        "cycles_done": cycles,
        "pages_per_cycle": round(hostile.pages / max(cycles, 1), 1),
        "new_jobs_recorded": new_jobs,
        "healthy_moves_seen": f"{len(delays)}/{len(moves)}",
        "worst_detection_s": round(max(delays), 2) if delays else None,
        "peak_rss_mb": round(peak_mb(), 1),
    }


def run_one(name: str, seconds: float) -> dict[str, Any]:
    logs.configure(level="error")  # stderr; the figures go to stdout
    if name.startswith("endless"):
        with tempfile.TemporaryDirectory() as folder:
            return anyio.run(endless, name, seconds, Path(folder))
    return anyio.run(one_answer, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per endless scenario")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scenario:
        print(json.dumps(run_one(args.scenario, args.seconds)))
        return 0
    for name in args.only:
        command = [sys.executable, "-m", "tests.perf.answers", "--scenario", name]
        command += ["--seconds", str(args.seconds)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            print(f"{name}: failed (rc {done.returncode}): {done.stderr[-800:]}")
            continue
        row = json.loads(lines[-1])
        print(" | ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
