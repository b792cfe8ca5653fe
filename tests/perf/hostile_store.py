"""Figures for a hostile state file: corrupt rows among healthy ones, and the file lost.

    python -m tests.perf.hostile_store [--rows 300] [--every 10]

1. `rows` pending notifications over 30 jobs, every `every`-th one corrupted in a rotating
   column (text garbage, a blob, a number, a far-future date, bad JSON): one dispatch round of
   the real dispatcher to a real `json://` receiver. Prints how many were sent, quarantined
   and logged, and how long the round took; then a second round (which must log nothing).
2. A running watcher (poller and dispatcher, the simulator over loopback) whose state file is
   deleted: prints the delay until /readyz's judgement turns to not ready, and the error lines.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import anyio
from structlog.testing import capture_logs

from fireworks_sim import Simulator
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app, config
from watcher.core.decision import Decision
from watcher.core.delivery import Event, OutboxEntry
from watcher.notify.apprise_sender import AppriseNotifier
from watcher.stores.sqlite import StateStore
from watcher.web.health import Health

KEY = "bench-key"
ACCOUNT = "bench"
CORRUPTIONS = [
    ("outbox", "created_at", "garbage"),
    ("outbox", "next_attempt_at", "garbage"),
    ("outbox", "next_attempt_at", b"\x00"),
    ("outbox", "attempts", "many"),
    ("events", "fields", "[" * 10_000),
    ("events", "observed_at", 12345),
]


def settings_for(workdir: Path, base_url: str, url: str) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": base_url},
            "watcher": {
                "poll_interval": 1,
                "state_path": str(workdir / "state.db"),
                "max_requests_per_minute": 6000,
            },
            "watch": [{"kind": "dpo", "jobs": ["job-0"]}],
            "channel": [{"name": "team", "urls": [url]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )


def seed(path: Path, url: str, rows: int, every: int) -> None:
    target = AppriseNotifier([("url", url)]).target(url)
    now = datetime.now(UTC)
    with StateStore.open(path) as store:
        for i in range(rows):
            fields = (("display_name", f"n{i}"), ("job_id", f"job-{i % 30}"), ("kind", "dpo"))
            event = Event(f"dpo/job-{i % 30}", "RUNNING", "COMPLETED", now, fields)
            entry = OutboxEntry(f"dpo/job-{i % 30}", "team", target.url_key, target.url_display, "RUNNING", "COMPLETED", now, event)  # fmt: skip
            store.record(Decision([], [entry], now=now))
    conn = sqlite3.connect(path, isolation_level=None)
    for n, row in enumerate(range(1, rows + 1, every)):
        table, column, value = CORRUPTIONS[n % len(CORRUPTIONS)]
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", (value, row))
    conn.close()


async def corrupt_rows(rows: int, every: int, workdir: Path) -> None:
    with JsonReceiver() as receiver:
        settings = settings_for(workdir, "http://127.0.0.1:9", receiver.url())
        await anyio.to_thread.run_sync(
            seed, settings.watcher.state_path, receiver.url(), rows, every
        )
        for round_ in (1, 2):
            with capture_logs() as logs:
                started = time.perf_counter()
                async with app.open_watcher(settings) as watcher:
                    report = await watcher.dispatch_once()
                took = time.perf_counter() - started
            said = sum(1 for line in logs if line["event"] == "store.row_unreadable")
            crashed = sum(1 for line in logs if line["event"] in ("cycle.crashed", "store.error"))
            print(
                f"round {round_}: {rows} rows, every {every}th corrupt: sent {report.sent}, "
                f"received {len(receiver.messages)}, quarantined+logged {said}, "
                f"crashes/store errors {crashed}, {took:.2f} s"
            )


async def lost_file(workdir: Path) -> None:
    sim = Simulator(api_key=KEY, account_id=ACCOUNT)
    sim.add_job("job-0", state="RUNNING")
    with ServedApp(sim) as served, JsonReceiver() as receiver:
        settings = settings_for(workdir, served.url, receiver.url())
        health = Health(poll_interval=1)
        stop = anyio.Event()
        with capture_logs() as logs:
            async with (
                app.open_runtime(settings, health=health) as runtime,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(runtime.watcher.run_forever, stop)
                while not health.readiness()[0]:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                settings.watcher.state_path.unlink()
                lost_at = time.perf_counter()
                while health.readiness()[0]:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                delay = time.perf_counter() - lost_at
                await anyio.sleep(12)  # a few dispatcher rounds and poll cycles, for the log count
                stop.set()
        lines = [line["event"] for line in logs if line.get("log_level") == "error"]
        restored = settings.watcher.state_path.exists()
        print(
            f"state file deleted: /readyz not ready after {delay:.2f} s; error lines in 12 s: "
            f"{ {event: lines.count(event) for event in sorted(set(lines))} }; "
            f"written back: {restored}; readiness: {health.readiness()[1]}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--every", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        anyio.run(corrupt_rows, args.rows, args.every, Path(one))
        anyio.run(lost_file, Path(two))
    return 0


if __name__ == "__main__":
    sys.exit(main())
