"""`status`: each job's name, time in its state, last poll and open conditions; the
watcher's own conditions, silences in force, and silenced beside undelivered messages."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from watcher.cli import main
from watcher.core.conditions import Condition, ConditionName, Since
from watcher.core.decision import Decision
from watcher.core.delivery import Event, OutboxEntry
from watcher.core.model import JobKind, JobRef, JobSnapshot
from watcher.core.silences import Silence
from watcher.stores.outbox_table import SILENCED
from watcher.stores.sqlite import StateStore

URL = "json://bot:****@127.0.0.1:9/hook"


@pytest.fixture
def now() -> datetime:
    """Now, when the test starts (`status` reads the real clock)."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def config(tmp_path: Path, now: datetime) -> Path:
    """A state file with two jobs (one stalled), the API down, an unreadable listing, a
    silence in force and one silenced and one pending delivery."""
    path = tmp_path / "state.db"
    hours_ago = now - timedelta(hours=3)
    sft = JobSnapshot(JobRef(JobKind.SFT, "my-sft"), "acct", "RUNNING", display_name="My SFT")
    dpo = JobSnapshot(JobRef(JobKind.DPO, "my-dpo"), "acct", "FAILED", status_code="INTERNAL")
    failed = Event("dpo/my-dpo", "RUNNING", "FAILED", now, (("job_id", "my-dpo"),))
    rows = [
        OutboxEntry("dpo/my-dpo", team, f"k-{team}", URL, "RUNNING", "FAILED", now, failed)
        for team in ("ml-team", "oncall")
    ]
    with StateStore.open(path) as store:
        store.record(
            Decision(
                [sft, dpo],
                rows,
                now=now - timedelta(minutes=1),
                since={sft.ref.key: Since(hours_ago, hours_ago, entered=True)},
                opened=[
                    Condition("sft/my-sft", ConditionName.STALLED, hours_ago, "no progress for 3h"),
                    Condition("api", ConditionName.API_DOWN, now, "connection refused"),
                    Condition("list:rft", ConditionName.UNREADABLE, now, "HTTP 400: bad filter"),
                ],
            )
        )
        store.add_silence(
            Silence(0, "my-*", state="FAILED", channel="oncall", comment="known", ends_at=now
                    + timedelta(hours=2)),
            now=now,
        )  # fmt: skip
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE outbox SET status = ?, silence_id = 1 WHERE id = 2", (SILENCED,))
    config = tmp_path / "watcher.toml"
    config.write_text(f'[watcher]\nstate_path = "{path}"\nhealth_listen = ""\n')
    return config


def status(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> str:
    code = main(["status", "-c", str(config), *extra])
    out, err = capsys.readouterr()
    assert (0, "") == (code, err)
    return out


def test_status_text(config: Path, now: datetime, capsys: pytest.CaptureFixture[str]) -> None:
    """The job table has name, time in state and last poll, conditions under their job; the
    rest of what is open, silences and silenced messages follow."""
    out = status(capsys, config)
    hours_ago = now - timedelta(hours=3)
    lines = out.splitlines()

    assert lines[1].startswith("daemon: last poll 1m ")
    assert lines[1].endswith(
        ", not ready: no daemon holds the poller lease; Fireworks API unreachable"
    )
    assert ["JOB", "NAME", "STATE", "FOR", "POLLED", "STATUS"] == lines[2].split()
    dpo, sft, condition = lines[3:6]
    assert ["dpo/my-dpo", "FAILED", "-", "1m"] == dpo.split()[:4]
    assert dpo.endswith("  INTERNAL")
    assert ["sft/my-sft", "My", "SFT", "RUNNING", "3h", "00m"] == sft.split()[:6]
    assert condition.strip().startswith("! stalled for 3h 00m")
    assert condition.endswith(f"(since {hours_ago:%Y-%m-%d %H:%M:%S}Z): no progress for 3h")
    assert "1 open condition(s) of the watcher:\n  api: api_down for " in out
    assert "1 resource(s) the watcher cannot read:\n  list:rft: HTTP 400: bad filter\n" in out
    assert "1 silence(s) in force:\n  1  job=my-* state=FAILED channel=oncall  ends in " in out
    assert "1 undelivered notification(s):\n  dpo/my-dpo RUNNING → FAILED to ml-team" in out
    assert "1 silenced notification(s) (recorded, not sent):\n" in out
    assert (
        "dpo/my-dpo RUNNING → FAILED to oncall (json://bot:****@127.0.0.1:9/****): by silence 1"
        in out
    )


def test_status_json(config: Path, now: datetime, capsys: pytest.CaptureFixture[str]) -> None:
    """`--json` carries ISO timestamps: state_since, polled_at, each condition's opened_at."""
    document = json.loads(status(capsys, config, "--json"))
    hours_ago = now - timedelta(hours=3)
    jobs = {job["job"]: job for job in document["jobs"]}

    sft = jobs["sft/my-sft"]
    assert "My SFT" == sft["display_name"]
    assert hours_ago.isoformat() == sft["state_since"]
    assert (now - timedelta(minutes=1)).isoformat() == sft["polled_at"]
    assert [
        {
            "subject": "sft/my-sft",
            "condition": "stalled",
            "opened_at": hours_ago.isoformat(),
            "detail": "no progress for 3h",
        }
    ] == sft["conditions"]
    assert None is jobs["dpo/my-dpo"]["state_since"]
    assert ["stalled", "api_down", "unreadable"] == [c["condition"] for c in document["conditions"]]
    assert [{"target": "list:rft", "error": "HTTP 400: bad filter"}] == document["unreadable"]
    assert ["pending"] == [d["status"] for d in document["undelivered"]]
    assert 1 == document["silenced_count"]
    assert [("oncall", 1)] == [(d["channel"], d["silence_id"]) for d in document["silenced"]]
    (silence,) = document["silences"]
    assert ("my-*", (now + timedelta(hours=2)).isoformat()) == (silence["job"], silence["ends_at"])


def test_status_without_state_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before the first run `--json` is the empty document, every key present."""
    config = tmp_path / "watcher.toml"
    config.write_text(f'[watcher]\nstate_path = "{tmp_path / "none.db"}"\n')

    document = json.loads(status(capsys, config, "--json"))

    assert 0 == document.pop("silenced_count")
    assert {"state_path", "now"} == {k for k, v in document.items() if v}
    assert not (tmp_path / "none.db").exists()


def key_rejected_state(tmp_path: Path, now: datetime, *, leased: bool = True) -> Path:
    """A state file whose daemon polled a minute ago and holds the lease, and whose API key
    the API rejects for account acme since ten minutes."""
    path = tmp_path / "state.db"
    job = JobSnapshot(JobRef(JobKind.DPO, "my-dpo"), "acme", "RUNNING")
    with StateStore.open(path) as store:
        store.record(
            Decision(
                [job],
                [],
                now=now - timedelta(minutes=1),
                opened=[
                    Condition(
                        "account:acme",
                        ConditionName.KEY_REJECTED,
                        now - timedelta(minutes=10),
                        "GET /v1/accounts/acme/dpoJobs/my-dpo: HTTP 401 UNAUTHENTICATED",
                    )
                ],
            )
        )
        if leased:
            store.acquire_lease("poller", "host-1", ttl=timedelta(hours=1))
    config = tmp_path / "watcher.toml"
    config.write_text(f'[watcher]\nstate_path = "{path}"\nhealth_listen = ""\n')
    return config


def test_a_rejected_key_is_the_first_line(
    tmp_path: Path, now: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first line says the API rejects the key, since when and what it answered; the
    daemon line gives it as why the daemon is not ready; it is not said a third time among
    the watcher's conditions. `--json` has it as `key_rejected`."""
    config = key_rejected_state(tmp_path, now)
    since = now - timedelta(minutes=10)

    lines = status(capsys, config).splitlines()
    document = json.loads(status(capsys, config, "--json"))

    assert (
        f"Fireworks rejects the API key for account acme (since {since:%Y-%m-%d %H:%M:%S}Z): "
        "GET /v1/accounts/acme/dpoJobs/my-dpo: HTTP 401 UNAUTHENTICATED"
    ) == lines[0]
    assert lines[1].startswith("state: ")
    assert lines[2].endswith(", not ready: Fireworks rejects the API key for account acme")
    assert not any("open condition(s)" in line for line in lines)
    assert [
        {
            "account": "acme",
            "message": "Fireworks rejects the API key for account acme",
            "since": since.isoformat(),
            "detail": "GET /v1/accounts/acme/dpoJobs/my-dpo: HTTP 401 UNAUTHENTICATED",
        }
    ] == document["key_rejected"]


def test_the_daemon_line_says_its_last_poll_and_readiness_and_no_lease_without_state_url(
    tmp_path: Path, now: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    """A daemon that holds the lease and polled a minute ago is ready; the same state with
    nobody holding the lease is not. One SQLite file has one daemon: no lease lines."""
    with StateStore.open(tmp_path / "state.db") as store:
        job = JobSnapshot(JobRef(JobKind.DPO, "my-dpo"), "acme", "RUNNING")
        store.record(Decision([job], [], now=now - timedelta(minutes=1)))
        store.acquire_lease("poller", "host-1", ttl=timedelta(hours=1))
    config = tmp_path / "watcher.toml"
    config.write_text(f'[watcher]\nstate_path = "{tmp_path / "state.db"}"\n')
    lines = status(capsys, config).splitlines()
    stale = key_rejected_state(tmp_path / "stale", now, leased=False)
    stale_lines = status(capsys, stale).splitlines()

    ago = now - timedelta(minutes=1)
    assert lines[1].startswith("daemon: last poll 1m ")
    assert lines[1].endswith(f" ago ({ago:%Y-%m-%d %H:%M:%S}Z), ready")
    assert stale_lines[2].endswith(
        ", not ready: no daemon holds the poller lease;"
        " Fireworks rejects the API key for account acme"
    )
    assert not any(line.startswith(("lease:", "  replica ")) for line in lines)
