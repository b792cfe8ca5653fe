"""The hostile run: the daemon, as a real process, against every hostile peer at once.

    python -m tests.support.hostile [--seconds-per-phase 30] [--poll 2] [--phases each,all]

The simulator runs in its own process with `--scenario hostile` (a drip, a gzip bomb, a 50 MB
body, endless pages, a flood of new resources, impostor names, a huge `Retry-After`); beside
it 200 clients flood the daemon's `/metrics`, and a corrupt row is slipped into its outbox.
Through all of it a healthy DPO job `probe` is moved every few seconds, and the time from
each move to its notification at a real receiver is measured.

Each phase lifts every attack but its own (`all` keeps them all); the table gives, per phase,
the probe's detection delay (p50 and max, in poll intervals), what was missed, and the
daemon's peak RSS. CI runs the `all` phase briefly (tests/system/test_hostile.py).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from fireworks_sim.scenarios import HOSTILE_ATTACKS
from tests.support.crash import ACCOUNT, KEY, Incarnation, _daemon_env, _TimedReceiver

#: Watched kinds: the probe's, and one per attacked collection (the config's kind names).
ATTACKED_KINDS: dict[str, str] = {
    "supervisedFineTuningJobs": "sft",
    "reinforcementFineTuningJobs": "rft",
    "deployments": "deployment",
    "rlorTrainerJobs": "rlor",
    "datasets": "dataset",
    "batchInferenceJobs": "batch-inference",
    "evaluationJobs": "evaluation",
}
FLOOD_CLIENTS = 200
AS = ("--api-key", KEY, "--account", ACCOUNT)
#: The real batch job behind the impostors; it fails once, mid-run, and must be told once.
BATCH_REAL = "real-duplicate-names"


@dataclass(slots=True)
class Phase:
    """What one phase measured."""

    name: str
    poll: float
    delays: list[float] = field(default_factory=list)
    missed: int = 0

    @property
    def late(self) -> bool:
        """Some move was told later than 2 poll intervals after it happened."""
        return any(delay > 2 * self.poll for delay in self.delays)

    def row(self, rss_mib: float) -> str:
        p50 = statistics.median(self.delays) / self.poll if self.delays else float("nan")
        top = max(self.delays) / self.poll if self.delays else float("nan")
        return (
            f"| {self.name} | {len(self.delays) + self.missed} | {p50:.2f} | {top:.2f} |"
            f" {self.missed} | {rss_mib:.0f} |"
        )


@dataclass(slots=True)
class HostileReport:
    """The whole run: phases, and what the daemon did besides."""

    phases: list[Phase]
    rss_mib: float
    alive: bool
    tracebacks: list[str]
    batch_failed_told: int
    impostors_told: int
    corrupt_row: str
    flood_requests: int

    @property
    def problems(self) -> list[str]:
        out = [f"{p.name}: {p.missed} probe moves missed" for p in self.phases if p.missed]
        out += [f"{p.name}: a move took {max(p.delays):.1f} s" for p in self.phases if p.late]
        if not self.alive:
            out.append("the daemon died")
        out += [f"traceback or non-JSON line: {line[:200]}" for line in self.tracebacks[:3]]
        if not any(p.name == "all" for p in self.phases):
            return out  # the real batch job and the corrupt row belong to the `all` phase
        if self.batch_failed_told != 1:
            out.append(f"the real batch job's FAILED was told {self.batch_failed_told} times")
        if self.impostors_told:
            out.append(f"{self.impostors_told} notifications about impostor names")
        if self.corrupt_row not in ("dead", "gone"):
            out.append(f"the corrupt outbox row is still {self.corrupt_row!r}")
        return out

    def table(self) -> str:
        head = [
            "| phase | probe moves | detection p50 (intervals) | max | missed | peak RSS MiB |",
            "|---|---|---|---|---|---|",
        ]
        lines = [*head, *(p.row(self.rss_mib) for p in self.phases)]
        lines.append(
            f"daemon alive: {self.alive}; real batch FAILED told {self.batch_failed_told}x;"
            f" impostor notifications {self.impostors_told}; corrupt row {self.corrupt_row};"
            f" /metrics requests served to the flood {self.flood_requests}"
        )
        return "\n".join(lines)


def wait_for_job(daemon: Incarnation, key: str, timeout: float) -> bool:
    """Wait until the daemon has logged `key` (its baseline), so later moves are news."""
    end = time.monotonic() + timeout
    while not any(e.get("job") == key for e in daemon.events):
        if time.monotonic() > end or daemon.proc.poll() is not None:
            return False
        time.sleep(0.05)
    return True


def write_config(workdir: Path, receiver: _TimedReceiver, poll: float) -> Path:
    # The probe moves every few seconds and each move is timed: none may be folded as flapping.
    watches = ['[[watch]]\nkind = "dpo"\njobs = ["probe"]\nflap_threshold = 0\n']
    watches += [f'[[watch]]\nkind = "{k}"\ndiscover = true\n' for k in ATTACKED_KINDS.values()]
    path = workdir / "watcher.toml"
    path.write_text(
        f"""
[watcher]
poll_interval = {poll}
terminal_poll_interval = {poll}
request_timeout = {poll / 4}
max_requests_per_minute = 600
state_path = {json.dumps(str(workdir / "state.db"))}
health_listen = "127.0.0.1:0"

{"".join(watches)}
[[channel]]
name = "team"
urls = [{json.dumps(receiver.url())}]
max_per_second = 100  # the probe's latency is the poller's, not the default pace's
"""
    )
    return path


@contextmanager
def simulator() -> Iterator[str]:
    """`python -m fireworks_sim --scenario hostile` in its own process; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fireworks_sim", "--scenario", "hostile", "--port", "0", *AS],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        yield line.split(" listening on ", 1)[1].split()[0]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def sim_call(sim: str, method: str, path: str, body: dict[str, Any]) -> None:
    httpx.request(method, f"{sim}/_sim/{path}", json=body, timeout=10).raise_for_status()


def only_attack(sim: str, collection: str | None) -> None:
    """Lift every attack but `collection`'s (None: keep them all)."""
    sim_call(sim, "DELETE", "attacks", {})
    for attacked, kind, params in HOSTILE_ATTACKS:
        if collection is None or attacked == collection:
            sim_call(sim, "POST", "attacks", {"collection": attacked, "kind": kind, **params})


def corrupt_outbox(db: Path) -> int:
    """Slip a pending outbox row with unreadable times into the live store; its id."""
    with sqlite3.connect(db, timeout=30) as conn:
        cursor = conn.execute(
            "INSERT INTO outbox (job_key, channel, url_key, url_display, title, body,"
            " old_state, new_state, created_at, status, attempts, next_attempt_at)"
            " SELECT job_key, channel, url_key, url_display, 'corrupt', body, old_state,"
            " new_state, 'garbage', 'pending', 0, 'garbage' FROM outbox LIMIT 1"
        )
        return int(cursor.lastrowid or 0)


def row_status(db: Path, row_id: int) -> str:
    with sqlite3.connect(db, timeout=30) as conn:
        found = conn.execute("SELECT status FROM outbox WHERE id = ?", (row_id,)).fetchone()
    return "gone" if found is None else str(found[0])


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def probe_moves(sim: str, receiver: _TimedReceiver, phase: Phase, seconds: float) -> None:
    """Move the probe between RUNNING and COMPLETED until `seconds` passed; time each move."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = httpx.get(f"{sim}/_sim/jobs/dpoJobs/probe", timeout=10).json()["state"]
        state = "COMPLETED" if now == "JOB_STATE_RUNNING" else "RUNNING"
        told = len(told_about(receiver, "(probe)"))
        moved = time.monotonic()
        sim_call(sim, "POST", "jobs/dpoJobs/probe/state", {"state": state})
        deadline = moved + 5 * phase.poll
        while len(seen := told_about(receiver, "(probe)")) <= told:
            if time.monotonic() > deadline:
                phase.missed += 1
                break
            time.sleep(0.02)
        else:
            phase.delays.append(float(seen[told]["received_at"]) - moved)


def told_about(receiver: _TimedReceiver, needle: str) -> list[dict[str, Any]]:
    return [m for m in receiver.messages if needle in str(m.get("title", ""))]


async def _flood(url: str, seconds: float, clients: int) -> int:
    served = 0
    end = anyio.current_time() + seconds
    limits = httpx.Limits(max_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal served
        while anyio.current_time() < end:
            try:
                await http.get(url, timeout=5)
                served += 1
            except httpx.HTTPError:
                pass

    async with httpx.AsyncClient(limits=limits) as http, anyio.create_task_group() as tg:
        for _ in range(clients):
            tg.start_soon(client, http)
    return served


def run(
    *, poll: float, seconds: float, phases: Sequence[str], workdir: Path, progress: Any = print
) -> HostileReport:
    """Run the phases (`each` attack alone, then `all`) and report."""
    receiver = _TimedReceiver()
    with simulator() as sim, receiver:
        sim_call(sim, "POST", "jobs", {"job_id": "probe", "state": "RUNNING"})
        config = write_config(workdir, receiver, poll)
        daemon = Incarnation(0, config, _daemon_env(sim))
        try:
            if not wait_for_job(daemon, "dpo/probe", timeout=60):
                raise RuntimeError("the daemon did not start:\n" + "".join(daemon.lines[-20:]))
            port = next(e["port"] for e in daemon.events if e.get("event") == "health.listening")
            metrics = f"http://127.0.0.1:{port}/metrics"
            names: list[tuple[str, str | None]] = [("all", None)] if "all" in phases else []
            if "each" in phases:
                names = [(kind, c) for c, kind, _ in HOSTILE_ATTACKS] + names
            results: list[Phase] = []
            flood_served = 0
            corrupt_id = 0
            for name, collection in names:
                only_attack(sim, collection)
                phase = Phase(name, poll)
                flood = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.support.hostile",
                        "--flood",
                        metrics,
                        str(seconds),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                probe_moves(sim, receiver, phase, seconds / 2)
                if name == "all":
                    corrupt_id = corrupt_outbox(workdir / "state.db")
                    sim_call(
                        sim,
                        "POST",
                        f"jobs/batchInferenceJobs/{BATCH_REAL}/state",
                        {"state": "FAILED", "status_message": "hostile run: batch failed"},
                    )
                probe_moves(sim, receiver, phase, seconds / 2)
                out, _ = flood.communicate(timeout=60)
                flood_served += int(out.strip() or 0)
                results.append(phase)
                progress(phase.row(peak_rss_mib(daemon.proc.pid)))
            rss = peak_rss_mib(daemon.proc.pid)
            alive = daemon.proc.poll() is None
        finally:
            daemon.close()
        tracebacks = [line for line in daemon.lines if not line.startswith("{")]
        return HostileReport(
            phases=results,
            rss_mib=rss,
            alive=alive,
            tracebacks=tracebacks,
            batch_failed_told=len(told_about(receiver, f"({BATCH_REAL})")),
            impostors_told=len(told_about(receiver, f"other-{ACCOUNT}")),
            corrupt_row=row_status(workdir / "state.db", corrupt_id) if corrupt_id else "none",
            flood_requests=flood_served,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.hostile", description=__doc__)
    parser.add_argument("--seconds-per-phase", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=2.0, help="poll interval (default 2 s)")
    parser.add_argument("--phases", default="each,all", help="each, all, or both (default)")
    parser.add_argument("--flood", nargs=2, metavar=("URL", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flood:
        print(anyio.run(_flood, args.flood[0], float(args.flood[1]), FLOOD_CLIENTS))
        return 0
    with tempfile.TemporaryDirectory(prefix="watcher-hostile-") as tmp:
        report = run(
            poll=args.poll,
            seconds=args.seconds_per_phase,
            phases=args.phases.split(","),
            workdir=Path(tmp),
        )
    print(report.table())
    for line in report.problems:
        print(f"PROBLEM {line}")
    print("OK" if not report.problems else "FAILED")
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())
