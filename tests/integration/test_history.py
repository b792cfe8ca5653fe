"""The history: events with their deliveries from a real state file, `history` on the
command line (plain and JSON), and pruning by age."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT
from tests.support.servers import JsonReceiver
from watcher.cli import main
from watcher.cli.history import job_matcher
from watcher.core.decision import Decision
from watcher.core.delivery import Event, OutboxEntry
from watcher.stores.outbox_table import SILENCED
from watcher.stores.sqlite import StateStore

NOW = datetime.now(UTC).replace(microsecond=0)
URL = "json://bot:****@127.0.0.1:9/hook"
#: How the page and `--json` show it: a webhook's path may be its token (issue 20).
SHOWN_URL = "json://bot:****@127.0.0.1:9/****"


def event(key: str, old: str, new: str, at: datetime, kind: str = "", **fields: str) -> Event:
    return Event(key, old, new, at, tuple(sorted(fields.items())), notice=bool(kind), kind=kind)


def entry(e: Event, channel: str = "ml-team", url: str = URL) -> OutboxEntry:
    return OutboxEntry(e.job_key, channel, f"key-{channel}-{url}", url, e.old_state, e.new_state, e.observed_at, event=e)  # fmt: skip


def set_status(path: Path, status: str, *ids: int, silence_id: int | None = None) -> None:
    """What the dispatcher does to a row: here by hand, for the states it can end in."""
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "UPDATE outbox SET status = ?, silence_id = ? WHERE id = ?",
            [(status, silence_id, i) for i in ids],
        )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A state file with a failure delivered to one channel and silenced on another, a
    condition notice still pending, an old transition and a silence."""
    db = tmp_path / "state.db"
    failed = event(
        "sft/my-job", "RUNNING", "FAILED", NOW - timedelta(hours=2),
        display_name="My job", status_message="CUDA out of memory", wandb_url="https://x/y",
    )  # fmt: skip
    stalled = event(
        "dpo/other", "", "STALLED", NOW - timedelta(hours=1), "condition",
        title="other: stalled: no progress for 30m", condition="stalled", job_id="other",
    )  # fmt: skip
    old = event("dpo/other", "PENDING", "RUNNING", NOW - timedelta(days=3))
    with StateStore.open(db) as store:
        store.record(
            Decision(
                [], [entry(failed), entry(failed, "oncall"), entry(stalled)], now=NOW, events=[old]
            )
        )
        store.mark_delivered(1, now=NOW - timedelta(hours=2))
    set_status(db, SILENCED, 2, silence_id=4)
    return db


def test_history_joins_events_and_deliveries(path: Path) -> None:
    """Events since a time come oldest first, each with what became of its deliveries."""
    with StateStore.open(path) as store:
        entries, cut = store.history(since=NOW - timedelta(days=1))

    assert not cut
    assert [("sft/my-job", "FAILED"), ("dpo/other", "STALLED")] == [
        (e.event.job_key, e.event.new_state) for e in entries
    ]
    assert [("ml-team", "delivered", None), ("oncall", SILENCED, 4)] == [
        (t.channel, t.status, t.silence_id) for t in entries[0].deliveries
    ]
    assert NOW - timedelta(hours=2) == entries[0].deliveries[0].delivered_at
    assert ["pending"] == [t.status for t in entries[1].deliveries]


def test_history_keeps_the_latest_and_says_it_cut(path: Path) -> None:
    """Past the limit the oldest events are cut, and the caller is told."""
    with StateStore.open(path) as store:
        entries, cut = store.history(since=NOW - timedelta(days=7), limit=2)

    assert cut
    assert ["FAILED", "STALLED"] == [e.event.new_state for e in entries]


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        pytest.param("dpo/x", "dpo/x", True, id="key"),
        pytest.param("x", "dpo/x", True, id="id-any-kind"),
        pytest.param("x", "sft/x", True, id="id-other-kind"),
        pytest.param("x", "dpo/xy", False, id="id-is-exact"),
        pytest.param("dpo/x", "sft/x", False, id="key-is-exact"),
        pytest.param("prod-*", "sft/prod-1", True, id="glob-id"),
        pytest.param("sft/*", "sft/prod-1", True, id="glob-key"),
        pytest.param("sft/*", "dpo/prod-1", False, id="glob-key-other-kind"),
        pytest.param("prod-?", "dpo/prod-12", False, id="glob-one-char"),
        pytest.param("PROD-*", "dpo/prod-1", False, id="case-sensitive"),
        pytest.param("api", "api", True, id="watcher-subject"),
    ],
)
def test_job_matcher(pattern: str, key: str, expected: bool) -> None:
    """`history JOB` keeps a key, an id of any kind, or a glob on either."""
    assert expected == job_matcher(pattern)(key)


def test_an_unreadable_event_costs_only_itself(path: Path) -> None:
    """An event whose fields do not decode is told and skipped; the rest are listed."""
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE events SET fields = 'garbage' WHERE id = 3")
    told: list[str] = []

    with StateStore.open(path, on_unreadable=lambda row, _: told.append(row)) as store:
        entries, _ = store.history(since=NOW - timedelta(days=1))

    assert ["events 3"] == told
    assert ["FAILED"] == [e.event.new_state for e in entries]


@pytest.mark.parametrize(
    ("status", "age_days", "kept"),
    [
        pytest.param("pending", 100, True, id="pending-old-kept"),
        pytest.param("delivered", 100, False, id="delivered-old"),
        pytest.param("dead", 100, False, id="dead-old"),
        pytest.param(SILENCED, 100, False, id="silenced-old"),
        pytest.param("delivered", 10, True, id="delivered-recent"),
        pytest.param("dead", 10, True, id="dead-recent"),
    ],
)
def test_prune_history(tmp_path: Path, status: str, age_days: int, kept: bool) -> None:
    """Settled deliveries and their events older than the cut go; pending ones and anything
    younger stay, and an event goes only with its last delivery."""
    at = NOW - timedelta(days=age_days)
    e = event("dpo/x", "RUNNING", "FAILED", at)
    lone = event("dpo/x", "PENDING", "RUNNING", NOW - timedelta(days=age_days + 1))
    with StateStore.open(tmp_path / "state.db") as store:
        store.record(Decision([], [entry(e)], now=at, events=[lone]))
        if status == "delivered":
            store.mark_delivered(1, now=at)
        elif status == "dead":
            store.mark_dead(1, now=at, error="gone")
        elif status == SILENCED:
            set_status(tmp_path / "state.db", SILENCED, 1)

        pruned = store.prune_history(NOW - timedelta(days=90))
        entries, _ = store.history(since=NOW - timedelta(days=365))

    if age_days <= 90:
        assert ((0, 0), ["RUNNING", "FAILED"]) == (pruned, [x.event.new_state for x in entries])
    elif kept:
        assert ((1, 0), ["FAILED"]) == (pruned, [x.event.new_state for x in entries])
    else:
        assert ((2, 1), []) == (pruned, entries)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def config(path: Path) -> Path:
    config = path.parent / "watcher.toml"
    config.write_text(f'[watcher]\nstate_path = "{path}"\nhealth_listen = ""\n')
    return config


def test_history_lines(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One line per event: time, job, what happened, and each channel's delivery."""
    code, out, err = cli(capsys, "history", "-c", str(config))

    failed = f"{NOW - timedelta(hours=2):%Y-%m-%d %H:%M:%S}Z"
    stalled = f"{NOW - timedelta(hours=1):%Y-%m-%d %H:%M:%S}Z"
    assert (0, "") == (code, err)
    assert [
        (
            f"{failed}  sft/my-job  RUNNING → FAILED  (CUDA out of memory)  "
            "→ ml-team: delivered; oncall: silenced"
        ),
        (
            f"{stalled}  dpo/other  condition STALLED  other: stalled: no progress for 30m  "
            "→ ml-team: pending"
        ),
    ] == out.splitlines()


def test_history_of_one_job_since(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """JOB and --since narrow the timeline."""
    _, out, _ = cli(capsys, "history", "other", "--since", "4d", "-c", str(config))

    assert ["PENDING → RUNNING", "condition STALLED"] == [
        line.split("  ")[2] for line in out.splitlines()
    ]


def test_history_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json`: ISO times, the kind, chosen fields only and each delivery's display URL."""
    _, out, _ = cli(capsys, "history", "my-job", "--json", "-c", str(config))

    document = json.loads(out)
    (found,) = document["events"]
    assert not document["cut"]
    assert {
        "id": 2,
        "observed_at": (NOW - timedelta(hours=2)).isoformat(),
        "kind": "transition",
        "job": "sft/my-job",
        "old_state": "RUNNING",
        "new_state": "FAILED",
        "details": {"display_name": "My job", "status_message": "CUDA out of memory"},
        "deliveries": [
            {
                "channel": "ml-team",
                "url": SHOWN_URL,
                "status": "delivered",
                "delivered_at": (NOW - timedelta(hours=2)).isoformat(),
                "attempts": 0,
                "last_error": "",
                "silence_id": None,
            },
            {
                "channel": "oncall",
                "url": SHOWN_URL,
                "status": SILENCED,
                "delivered_at": None,
                "attempts": 0,
                "last_error": "",
                "silence_id": 4,
            },
        ],
    } == found


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--since", "0"], "--since: must be more than 0", id="zero"),
        pytest.param(["--since", "yesterday"], "--since: must be a duration", id="words"),
        pytest.param(["--since", "400d"], "--since: must be between 0 and a year", id="long"),
        pytest.param([""], "JOB: must be a job id", id="empty-job"),
    ],
)
def test_history_bad_input(
    config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """A bad flag is one line naming it, exit 2."""
    code, out, err = cli(capsys, "history", *argv, "-c", str(config))

    assert (2, "") == (code, out)
    assert 1 == len(err.splitlines())
    assert message in err


def test_history_of_a_real_run(
    tmp_path: Path,
    sim: Simulator,
    receiver: JsonReceiver,
    env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After `once` saw a job fail and told the receiver, `history` shows the transition
    delivered, with the receiver's password nowhere in the output."""
    config = tmp_path / "watcher.toml"
    config.write_text(
        f"""
[watcher]
state_path = "{tmp_path / "run.db"}"
health_listen = ""

[[watch]]
jobs = ["job-a", "accounts/{ACCOUNT}/dpoJobs/job-b"]

[[channel]]
name = "team"
urls = ["{receiver.url(user="bot", password="hunter2-pw")}"]
"""
    )
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="PENDING")
    assert 0 == cli(capsys, "once", "-c", str(config))[0]
    sim.set_state("job-a", "FAILED", status_code="INTERNAL", status_message="disk full")
    assert 0 == cli(capsys, "once", "-c", str(config))[0]
    receiver.wait_for(1)

    _, text, _ = cli(capsys, "history", "-c", str(config))
    _, raw, _ = cli(capsys, "history", "--json", "-c", str(config))

    (line,) = text.splitlines()
    assert line.endswith("  dpo/job-a  RUNNING → FAILED  (disk full)  → team: delivered")
    assert "hunter2-pw" not in text + raw
    (found,) = json.loads(raw)["events"]
    assert "delivered" == found["deliveries"][0]["status"]


def test_history_without_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before any state exists `history` says there is nothing and creates no file."""
    config = tmp_path / "watcher.toml"
    config.write_text(f'[watcher]\nstate_path = "{tmp_path / "none.db"}"\n')

    code, out, _ = cli(capsys, "history", "-c", str(config))

    assert 0 == code
    assert out.startswith("no events since ")
    assert not (tmp_path / "none.db").exists()
