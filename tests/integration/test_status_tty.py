"""`status` on a terminal: a coloured table (rich), with API text shown as written; piped, the
plain columns (tests/unit/test_status.py)."""

from __future__ import annotations

import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.support.terminal import run_on_a_terminal
from watcher.core.conditions import Condition, ConditionName, Since
from watcher.core.decision import Decision
from watcher.core.model import JobKind, JobRef, JobSnapshot
from watcher.stores.sqlite import StateStore


def status_on_a_terminal(tmp_path: Path, db: Path, *, columns: int) -> str:
    """`status` on the state database `db`, on a terminal `columns` wide: all it printed."""
    config = tmp_path / "watcher.toml"
    config.write_text(f'[watcher]\nstate_path = "{db}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_")}
    env |= {"COLUMNS": str(columns), "TERM": "xterm-256color"}
    command = [sys.executable, "-m", "watcher", "status", "-c", str(config)]
    return run_on_a_terminal(command, env).text


def test_status_on_a_terminal_is_a_coloured_table(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    now = datetime.now(UTC)
    with StateStore.open(db) as store:
        store.record(
            Decision(
                [
                    JobSnapshot(ref=JobRef(JobKind.DPO, "good"), state="COMPLETED", account_id="a"),
                    JobSnapshot(
                        ref=JobRef(JobKind.DPO, "bad"),
                        state="FAILED",
                        account_id="a",
                        status_code="INTERNAL",
                        status_message="[bold red]not styled[/] **nor bold**",
                    ),
                ],
                [],
                now=now,
            )
        )
    out = status_on_a_terminal(tmp_path, db, columns=160)

    assert "\x1b[" in out  # styled
    assert "COMPLETED" in out
    assert "FAILED" in out
    assert "[bold red]not styled[/] **nor bold**" in out  # the API's text, as written


def test_status_on_a_terminal_shows_progress_last_poll_readiness_and_no_lease(
    tmp_path: Path,
) -> None:
    """What the page shows the terminal shows too: each job's progress and ETA, the daemon's
    last poll and readiness, and a rejected key first. The lease lines are for a shared
    database (`state_url`): one SQLite file has one daemon, so they are left out."""
    db = tmp_path / "state.db"
    now = datetime.now(UTC)
    hour_ago = now - timedelta(hours=1)
    sft = JobSnapshot(
        ref=JobRef(JobKind.SFT, "tuning"),
        state="RUNNING",
        account_id="acme",
        progress="40",
        create_time=f"{hour_ago:%Y-%m-%dT%H:%M:%SZ}",
    )
    with StateStore.open(db) as store:
        store.record(
            Decision(
                [sft],
                [],
                now=now,
                since={sft.ref.key: Since(hour_ago, hour_ago, entered=True)},
                opened=[Condition("account:acme", ConditionName.KEY_REJECTED, now, "HTTP 401")],
            )
        )
        store.acquire_lease("poller", "host-1", ttl=timedelta(hours=1))
    out = status_on_a_terminal(tmp_path, db, columns=200)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out).replace("\r", "")
    lines = text.splitlines()

    assert lines[0].startswith("Fireworks rejects the API key for account acme (since ")
    assert re.match(r"daemon: last poll \d+s ago \(", lines[2]), lines[2]
    assert lines[2].endswith("not ready: Fireworks rejects the API key for account acme")
    assert ["JOB", "NAME", "STATE", "PROGRESS", "FOR", "POLLED", "STATUS"] == lines[3].split()
    assert re.search(r"sft/tuning\s+RUNNING\s+40% ETA 1h 30m", lines[4]), lines[4]
    assert "lease:" not in text
