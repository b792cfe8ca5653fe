"""A hostile state file: every cell the store decodes holding garbage, and the file itself
deleted or replaced under a running daemon. Real SQLite files, a real receiver, no mocks.

A row the store cannot read costs only itself: an outbox row is quarantined (dead, the reason
as its error, logged once) and every other row is still sent; a job row is re-baselined with
one warning; a flag is unset. A lost state file turns /readyz to 503, is logged once, and what
was pending survives (written back, or saved beside the replacement).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.daemon import Daemon, write_config
from tests.support.servers import JsonReceiver, ServedApp
from tests.support.waiting import wait_until
from watcher import app, config
from watcher.cli import main
from watcher.core.decision import Decision
from watcher.core.delivery import Event, OutboxEntry
from watcher.core.errors import StoreError
from watcher.core.model import JobKind, JobRef, JobSnapshot
from watcher.notify.apprise_sender import AppriseNotifier
from watcher.stores.rows import MAX_JSON_CHARS
from watcher.stores.sqlite import StateStore

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
FAR_FUTURE = "9999-12-31T23:59:59.999999+00:00"
FAR_PAST = "0001-01-01T00:00:00.000000+00:00"
BLOB = b"\x00\xff"
DEEP = "[" * 100_000
#: The rows seeded: the victim (corrupted), a later row of the same job and target (which the
#: victim must not hold up), and a row of another job.
TOKENS = ("victim", "after", "other")


def settings_for(tmp_path: Path, receiver: JsonReceiver, base_url: str) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": base_url},
            "watcher": {"poll_interval": 1, "state_path": str(tmp_path / "state.db")},
            "watch": [{"kind": "dpo", "jobs": ["job-a", "job-b"]}],
            "channel": [{"name": "team", "urls": [receiver.url()], "max_per_second": 100}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )


def seed(path: Path, url: str, at: datetime = T0) -> None:
    """One pending outbox row (with its event) per token, ids 1, 2, 3 in TOKENS' order."""
    target = AppriseNotifier([("url", url)]).target(url)
    with StateStore.open(path) as store:
        for token in TOKENS:
            job = "job-b" if token == "other" else "job-a"
            fields = {"display_name": token, "job_id": job, "kind": "dpo", "state": "COMPLETED"}
            event = Event(f"dpo/{job}", "RUNNING", "COMPLETED", at, tuple(sorted(fields.items())))
            entry = OutboxEntry(f"dpo/{job}", "team", target.url_key, target.url_display, "RUNNING", "COMPLETED", at, event)  # fmt: skip
            store.record(Decision([], [entry], now=at))


def corrupt(path: Path, table: str, column: str, value: object, row: object = 1) -> None:
    """Write `value` into one cell, as another tool (or a bad disk) would."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        key = "key" if table == "meta" else "job_key" if table == "jobs" else "id"
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (value, row))
    finally:
        conn.close()


def rows(path: Path) -> dict[int, tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        found = conn.execute("SELECT id, status, last_error FROM outbox").fetchall()
    finally:
        conn.close()
    return {row[0]: row[1:] for row in found}


def sent_tokens(receiver: JsonReceiver) -> set[str]:
    """The display names of the messages received (a title starts with it)."""
    return {str(m.get("title", "")).split(" (")[0] for m in receiver.messages}


@dataclass(frozen=True)
class Cell:
    table: str
    column: str
    value: object
    outcome: str  # "dead" (quarantined), "sent" (readable after all), "ignored" (never served)

    def __str__(self) -> str:
        return f"{self.table}.{self.column}={repr(self.value)[:24]}"


DEAD, SENT, IGNORED = "dead", "sent", "ignored"
TIMES = ["garbage", 12345, BLOB, "", "9" * 1_000_000, "2026-02-31T00:00:00.000000+00:00"]
CELLS = [
    *(Cell("outbox", "created_at", v, DEAD) for v in [*TIMES, "2026-01-01T00:00:00"]),
    Cell("outbox", "created_at", FAR_FUTURE, SENT),
    Cell("outbox", "created_at", FAR_PAST, SENT),
    *(Cell("outbox", "next_attempt_at", v, DEAD) for v in [*TIMES, "2026-01-01T00:00:00"]),
    Cell("outbox", "next_attempt_at", FAR_FUTURE, SENT),  # no retry is that far: due now
    Cell("outbox", "next_attempt_at", FAR_PAST, SENT),
    *(Cell("outbox", "claimed_until", v, SENT) for v in ["garbage", BLOB, 7, FAR_FUTURE]),
    *(Cell("outbox", "attempts", v, DEAD) for v in ["garbage", -1, 2**62, 1.5, BLOB]),
    *(
        Cell("outbox", column, BLOB, DEAD)
        for column in ("job_key", "url_key", "new_state", "last_error")
    ),
    # A row with its event is sent from the event: the text columns of rows from before
    # events existed are not read for it.
    *(Cell("outbox", column, BLOB, SENT) for column in ("title", "body")),
    Cell("outbox", "claim", BLOB, SENT),  # every claim is released at start
    Cell("outbox", "status", "garbage", IGNORED),
    *(Cell("outbox", "event_id", v, DEAD) for v in [999, "garbage", BLOB]),
    *(Cell("events", "observed_at", v, DEAD) for v in ["garbage", BLOB, 0]),
    *(Cell("events", "fields", v, DEAD) for v in ["not json", "[1, 2]", "null", DEEP, BLOB]),
    Cell("events", "fields", '"' + "x" * MAX_JSON_CHARS + '"', DEAD),
    *(Cell("events", "notice", v, DEAD) for v in ["garbage", 7, 1.5, BLOB]),
    *(Cell("events", column, BLOB, DEAD) for column in ("job_key", "new_state")),
]


@pytest.mark.parametrize("cell", CELLS, ids=str)
async def test_a_corrupt_cell_costs_only_its_row(
    tmp_path: Path, receiver: JsonReceiver, cell: Cell
) -> None:
    """The dispatcher of `run` keeps sending every other row (the victim's own job's later one
    included); the victim ends dead with its reason, said in one log line, and only once."""
    settings = settings_for(tmp_path, receiver, "http://127.0.0.1:9")
    path = settings.watcher.state_path

    def prepare() -> None:
        seed(path, receiver.url())
        corrupt(path, cell.table, cell.column, cell.value)

    await anyio.to_thread.run_sync(prepare)
    with capture_logs() as logs:
        for _ in range(2):  # a second start and round: nothing is said twice
            async with app.open_watcher(settings) as watcher:
                await watcher.dispatch_once()

    expected = {"after", "other"} | ({"victim"} if cell.outcome == SENT else set())
    assert expected == sent_tokens(receiver)
    said = [line for line in logs if line["event"] == "store.row_unreadable"]
    status, error = (await anyio.to_thread.run_sync(rows, path))[1]
    if cell.outcome == DEAD:
        assert ("dead", True) == (status, f"{cell.table}.{cell.column}" in error)
        assert [("outbox 1", "error")] == [(line["row"], line["log_level"]) for line in said]
    else:
        assert (cell.outcome == SENT, []) == (status == "delivered", said)
    assert not [line for line in logs if line["event"] in ("cycle.crashed", "store.error")]


@pytest.mark.parametrize("value", [*TIMES, "2026-01-01T00:00:00", FAR_FUTURE])
@pytest.mark.parametrize("column", ["created_at", "next_attempt_at", "claimed_until"])
def test_sql_over_corrupt_times_survives(tmp_path: Path, column: str, value: object) -> None:
    """MIN() over a corrupt column (the only pending row's) answers, never raises."""
    path = tmp_path / "state.db"
    seed(path, "json://127.0.0.1:9/hook")
    for row in (1, 2, 3):
        corrupt(path, "outbox", column, value, row)
    with StateStore.open(path) as store:
        due = store.next_due_at()
        count, oldest = store.outbox_stats()
    assert 3 == count
    assert due is None or due.tzinfo is not None
    assert oldest is None or oldest.tzinfo is not None


SNAPSHOTS = ["garbage", BLOB, DEEP, "[]", '{"kind": "dpo", "job_id": "elsewhere", "state": "X"}']


@pytest.mark.parametrize("value", SNAPSHOTS, ids=lambda v: repr(v)[:16])
async def test_a_corrupt_job_row_is_rebaselined_with_one_warning(
    tmp_path: Path, receiver: JsonReceiver, server: ServedApp, sim: Simulator, value: object
) -> None:
    """A job whose row cannot be read counts as never seen: one warning, then its state now is
    recorded silently (the row is readable again) and the other job is unaffected."""
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="RUNNING")
    settings = settings_for(tmp_path, receiver, server.url)
    path = settings.watcher.state_path

    def prepare() -> None:
        with StateStore.open(path) as store:
            for job in ("job-a", "job-b"):
                snap = JobSnapshot(JobRef(JobKind.DPO, job), ACCOUNT, "RUNNING")
                store.record(Decision([snap], [], now=T0))
        corrupt(path, "jobs", "snapshot", value, row="dpo/job-a")

    await anyio.to_thread.run_sync(prepare)
    sim.set_state("job-b", "COMPLETED")

    with capture_logs() as logs:
        async with app.open_watcher(settings) as watcher:
            await watcher.run_once()
        async with app.open_watcher(settings) as watcher:
            await watcher.run_once()

    said = [(x["row"], x["log_level"]) for x in logs if x["event"] == "store.row_unreadable"]
    assert [("jobs 'dpo/job-a'", "warning")] == said
    titles = [str(m["title"]) for m in receiver.messages]
    assert [True] == ["(job-b)" in t and "COMPLETED" in t for t in titles], titles

    def victim_state() -> str:
        with StateStore.open(path) as store:
            return store.last_all()["dpo/job-a"].state

    assert "RUNNING" == await anyio.to_thread.run_sync(victim_state)


@pytest.mark.parametrize("value", [None, BLOB], ids=["NULL", "blob"])
def test_a_corrupt_flag_is_unset(tmp_path: Path, value: object) -> None:
    """A flag that is not text reads as unset (never the text "None"), and says so."""
    path = tmp_path / "state.db"
    with StateStore.open(path) as store:
        store.record(
            Decision([], [], now=T0, flags={"api_down": "1", "unreadable:dpo/a": "x", "u:b": "y"})
        )
    corrupt(path, "meta", "value", value, row="flag:api_down")
    corrupt(path, "meta", "value", value, row="flag:unreadable:dpo/a")
    said: list[tuple[str, str]] = []
    with StateStore.open(path, on_unreadable=lambda row, error: said.append((row, error))) as store:
        assert (None, {}) == (store.flag("api_down"), store.flags("unreadable:"))
        assert {"b": "y"} == store.flags("u:")
    assert ["meta 'flag:api_down'", "meta 'flag:unreadable:dpo/a'"] == [row for row, _ in said]


@pytest.fixture
def status_config(tmp_path: Path) -> Path:
    path = tmp_path / "watcher.toml"
    path.write_text(f'[watcher]\nstate_path = "{tmp_path / "state.db"}"\nhealth_listen = ""\n')
    return path


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_status_lists_unreadable_rows_and_the_rest(
    tmp_path: Path, status_config: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    """`status` shows every readable row and names each unreadable one: exit 0, no traceback."""
    path = tmp_path / "state.db"
    seed(path, "json://127.0.0.1:9/hook")
    with StateStore.open(path) as store:
        store.record(
            Decision([JobSnapshot(JobRef(JobKind.DPO, "job-a"), ACCOUNT, "RUNNING")], [], now=T0)
        )
    corrupt(path, "outbox", "created_at", "garbage", 1)
    corrupt(path, "outbox", "next_attempt_at", BLOB, 2)
    corrupt(path, "events", "fields", DEEP, 3)
    corrupt(path, "jobs", "snapshot", "garbage", "dpo/job-a")

    code = main(["status", "-c", str(status_config), *(["--json"] if as_json else [])])

    out, err = capsys.readouterr()
    assert (0, "") == (code, err)
    for row in ("outbox 1", "outbox 2", "outbox 3", "jobs 'dpo/job-a'"):
        assert row in out
    assert "every notification delivered" not in out


@pytest.fixture
def daemon_config(tmp_path: Path, receiver: JsonReceiver, sim: Simulator) -> Path:
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="RUNNING")
    path = write_config(
        tmp_path,
        [receiver.url()],
        watch='jobs = ["job-a", "job-b"]',
        health=True,
        channel="max_per_second = 100",
    )
    seed(tmp_path / "state.db", receiver.url(), datetime.now(UTC))
    return path


@pytest.fixture
def daemons(daemon_config: Path, daemon_env: dict[str, str]) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.close()


def test_run_starts_and_serves_the_rest_despite_corrupt_rows(
    tmp_path: Path, receiver: JsonReceiver, daemon_config: Path, daemon_env: dict[str, str],
    daemons: list[Daemon],
) -> None:  # fmt: skip
    """The issue's two rows (garbage next_attempt_at, garbage created_at): `run` starts, says
    each once, sends the rest, and stops with 0; no traceback."""
    corrupt(tmp_path / "state.db", "outbox", "next_attempt_at", "garbage", 1)
    corrupt(tmp_path / "state.db", "outbox", "created_at", "garbage", 3)
    daemons.append(daemon := Daemon(daemon_config, daemon_env))

    said = daemon.wait_event("store.row_unreadable", 2)
    daemon.wait_event("notify.sent")

    assert ["outbox 1", "outbox 3"] == sorted(line["row"] for line in said)
    assert {"after"} == sent_tokens(receiver)
    assert 0 == daemon.stop()
    assert not [line for line in daemon.lines if "Traceback" in line or "crashed" in line]
    assert {1: "dead", 2: "delivered", 3: "dead"} == {
        k: v[0] for k, v in rows(tmp_path / "state.db").items()
    }


def pending_in(path: Path) -> set[int]:
    return {id_ for id_, (status, _) in rows(path).items() if status == "pending"}


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_state_file_lost_while_running_is_loud_and_loses_nothing(
    tmp_path: Path, receiver: JsonReceiver, daemon_config: Path, daemon_env: dict[str, str],
    daemons: list[Daemon], how: str,
) -> None:  # fmt: skip
    """Deleted, or another file renamed over it: /readyz turns 503 naming it, one error line,
    nothing more is written; what was pending is kept (the original file keeps it, and it is
    written back at the path, or saved beside the replacement) and sent after a restart."""
    state = tmp_path / "state.db"
    receiver.status = 500  # everything stays pending
    daemons.append(daemon := Daemon(daemon_config, daemon_env))
    base = daemon.health_url()
    wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, "ready")
    daemon.wait_event("notify.failed", 3)
    os.link(state, tmp_path / "original.db")  # to look into the file the daemon had open
    replacement = b""
    if how == "deleted":
        state.unlink()
    else:
        replacement = replace_with_database(state)

    wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 503, "503")
    [lost] = daemon.wait_event("store.file_lost")
    assert f"state file {state} was {how}" in httpx.get(f"{base}/readyz").text
    assert ("error", True) == (lost["level"], how in lost["error"])
    daemon.wait_event("store.error")  # the dispatcher's calls fail, said once
    assert 0 == daemon.stop()
    assert 1 == sum('"store.file_lost"' in line for line in daemon.lines)
    assert 1 == sum('"store.error"' in line for line in daemon.lines)

    assert {1, 2, 3} == pending_in(tmp_path / "original.db")
    if how == "replaced":
        assert replacement == state.read_bytes()  # someone else's file is left alone
        [saved] = tmp_path.glob("state.db.orphaned-*")
        assert {1, 2, 3} == pending_in(saved)
        return
    assert {1, 2, 3} == pending_in(state)
    receiver.status = 200
    daemons.append(daemon := Daemon(daemon_config, daemon_env))
    receiver.wait_for(3)
    assert set(TOKENS) == sent_tokens(receiver)


async def test_a_lost_store_is_said_once_by_poller_and_dispatcher_together(
    tmp_path: Path, receiver: JsonReceiver, server: ServedApp, sim: Simulator
) -> None:
    """Every part that meets the lost store fails, and `store.error` is one line: a send in
    flight and the poller's next write used to add their own (CI saw two)."""
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="RUNNING")
    settings = settings_for(tmp_path, receiver, server.url)
    receiver.status = 500  # the row stays pending, so every dispatch reads the store
    with capture_logs() as logs:
        async with app.open_watcher(settings) as watcher:
            await watcher.run_once(force=True)
            await anyio.to_thread.run_sync(settings.watcher.state_path.unlink)
            for state in ("COMPLETED", "FAILED"):
                sim.set_state("job-a", state)  # a change to write, each round
                await watcher.poll_once(force=True)
                await watcher.dispatch_once()
    said = [line for line in logs if line["event"] == "store.error"]
    assert 1 == len(said), said
    assert "was deleted" in said[0]["error"]


def replace_with_database(path: Path) -> bytes:
    StateStore.open(other := path.with_name("other.db")).close()
    content = other.read_bytes()
    other.rename(path)
    return content


def replace_with_text(path: Path) -> bytes:
    path.with_name("other.txt").write_bytes(b"not a database")
    path.with_name("other.txt").rename(path)
    return b"not a database"


@pytest.mark.parametrize("replace", [None, replace_with_database, replace_with_text])
def test_a_lost_file_stops_the_store_once_and_keeps_its_content(
    tmp_path: Path, replace: Any
) -> None:
    """Every later call raises the same one-line StoreError, the loss is told once, and what
    the store held is at the path again (deleted) or beside the untouched replacement."""
    path = tmp_path / "state.db"
    seed(path, "json://127.0.0.1:9/hook")
    told: list[str] = []
    with StateStore.open(path, on_lost=told.append) as store:
        store.record(Decision([], [], now=T0, flags={"kept": "1"}))
        os.link(path, tmp_path / "original.db")
        path.unlink()
        replacement = replace(path) if replace is not None else None
        calls = [
            lambda: store.flag("kept"),
            lambda: store.flags(""),
            lambda: store.forget(["dpo/job-a"]),
            store.next_due_at,
            store.undelivered,
        ]
        for call in calls:
            with pytest.raises(StoreError, match=r"was (deleted|replaced by another file)"):
                call()
    assert 1 == len(told)
    assert "\n" not in told[0]
    if replace is None:
        saved = path
    else:
        assert replacement == path.read_bytes()
        [saved] = tmp_path.glob("state.db.orphaned-*")
    assert str(saved) in told[0] or saved == path
    for kept in (saved, tmp_path / "original.db"):
        assert {1, 2, 3} == pending_in(kept)
        with StateStore.open(kept) as store:
            assert "1" == store.flag("kept")
