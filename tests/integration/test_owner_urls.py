"""Per-message channel URLs end to end (`json://…?:owner={owner}`, `json://…/{owner_name}`):
the simulator's jobs by three people (two in the directory) and one with no owner, the real
client, store and notifier, real receivers over loopback, on one fake clock."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.alerting import MINUTE, SFT, Time, cycle, watcher_on
from tests.support.daemon import Daemon, run_watcher, serve_health, write_config
from tests.support.servers import JsonReceiver, ServedApp
from watcher import config

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
PEOPLE = [{"email": ALICE, "name": "Alice"}, {"email": BOB, "name": "Bob"}]


@pytest.fixture
def time() -> Time:
    return Time()


@pytest.fixture
def fake_sim(server: ServedApp, time: Time) -> Simulator:
    sim = Simulator(api_key=KEY, account_id=ACCOUNT, clock=time.monotonic, start_time=time.wall())
    server.app = sim
    return sim


def settings_for(server: ServedApp, tmp_path: Path, *channels: dict[str, Any]) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {"poll_interval": 30, "state_path": str(tmp_path / "state.db")},
            "watch": [{"kind": "sft", "discover": True}],
            "person": PEOPLE,
            "channel": list(channels),
        },
        {"FIREWORKS_API_KEY": KEY},
    )


def outbox(state: Path) -> list[tuple[str, str, str, str]]:
    with closing(sqlite3.connect(state)) as db:
        return db.execute(
            "SELECT job_key, channel, url_key, status || ':' || last_error FROM outbox ORDER BY id"
        ).fetchall()


async def test_each_owner_gets_their_jobs_and_no_owner_is_skipped(
    server: ServedApp, fake_sim: Simulator, time: Time, tmp_path: Path
) -> None:
    """`?:owner={owner}` puts each job's owner into the payload, one target (url_key) per
    owner; `/{owner_name}` reaches only directory people; a job with no owner is recorded as
    skipped for both, never sent nor retried."""
    for job_id, creator in (("a-sft", ALICE), ("b-sft", BOB), ("c-sft", CAROL), ("n-sft", "")):
        fake_sim.add_job(job_id, collection=SFT, state="RUNNING", created_by=creator)
    async with JsonReceiver() as by_field, JsonReceiver() as by_name:
        settings = settings_for(
            server,
            tmp_path,
            {
                "name": "owner-field",
                "urls": [by_field.url("/hook?:owner={owner}")],
                "body": "{job_id}",
                "max_per_second": 100,
            },
            {
                "name": "owner-path",
                "urls": [by_name.url("/{owner_name}")],
                "body": "{job_id}",
                "max_per_second": 100,
            },
        )
        async with watcher_on(settings, time) as watcher:
            await cycle(watcher, time, 0)
            for job_id in ("a-sft", "b-sft", "c-sft", "n-sft"):
                fake_sim.set_state(job_id, "COMPLETED", collection=SFT)
            await cycle(watcher, time, MINUTE)
            await by_field.wait_for_async(3)
            await by_name.wait_for_async(2)
            for _ in range(3):  # later cycles: nothing more goes out, nothing is retried
                await cycle(watcher, time, MINUTE)
    got = sorted((m["message"], m.get("owner")) for m in by_field.messages)
    assert got == [("a-sft", ALICE), ("b-sft", BOB), ("c-sft", CAROL)]
    assert sorted((m["message"], m["path"]) for m in by_name.messages) == [
        ("a-sft", "/Alice"),
        ("b-sft", "/Bob"),
    ]
    rows = await anyio.to_thread.run_sync(outbox, tmp_path / "state.db")
    field_keys = {key for job, channel, key, _ in rows if channel == "owner-field"}
    assert len(field_keys) == 4  # a target per owner (and one for the empty owner)
    assert len({key.partition("#")[0] for key in field_keys}) == 1
    statuses = {(job, channel): status for job, channel, _, status in rows}
    assert (
        statuses[("sft/n-sft", "owner-field")] == "skipped:skipped: {owner} empty for this message"
    )
    assert statuses[("sft/n-sft", "owner-path")].startswith("skipped:")
    assert (
        statuses[("sft/c-sft", "owner-path")]
        == "skipped:skipped: {owner_name} empty for this message"
    )
    assert statuses[("sft/a-sft", "owner-field")] == "delivered:"


@pytest.mark.slow
async def test_a_slow_owner_delays_no_other_owner(
    server: ServedApp, fake_sim: Simulator, time: Time, tmp_path: Path
) -> None:
    """The receiver answers each post after 5 s. Alice's and Bob's messages go to two lanes
    of one templated URL: both arrive within the first answer's 5 s (one lane would post
    the second only after the first answer)."""
    fake_sim.add_job("a-sft", collection=SFT, state="RUNNING", created_by=ALICE)
    fake_sim.add_job("b-sft", collection=SFT, state="RUNNING", created_by=BOB)
    async with JsonReceiver() as receiver:
        receiver.delay = 5.0
        settings = settings_for(
            server,
            tmp_path,
            {
                "name": "by-name",
                "urls": [receiver.url("/{owner_name}")],
                "body": "{job_id}",
                "max_per_second": 100,
            },
        )
        async with watcher_on(settings, time) as watcher:
            await cycle(watcher, time, 0)
            fake_sim.set_state("a-sft", "FAILED", collection=SFT)
            fake_sim.set_state("b-sft", "FAILED", collection=SFT)
            await cycle(watcher, time, MINUTE)
            await receiver.wait_for_async(2)
            first, second = receiver.posted_at[:2]
    assert sorted(m["message"] for m in receiver.messages) == ["a-sft", "b-sft"]
    assert second - first < 4.0


@pytest.mark.parametrize(
    ("url", "channel", "error"),
    [
        pytest.param(
            "json://u:pw0123456@127.0.0.1:9/hook?:owner={ownr}",
            "",
            "channel[0].urls[0]: unknown field {ownr}",
            id="unknown-field",
        ),
        pytest.param(
            "json://u:pw0123456@127.0.0.1:9/{owner}",
            "group_wait = 30",
            "channel[0].urls[0]: a URL with fields cannot be used in a channel that groups",
            id="batched-channel",
        ),
    ],
)
def test_check_refuses_a_url_it_cannot_template(
    tmp_path: Path, daemon_env: dict[str, str], url: str, channel: str, error: str
) -> None:
    """`check` exits 2 with a one-line error naming the key, the URL's password not in it."""
    config = write_config(tmp_path, [url], channel=channel)
    done = run_watcher("check", "-c", str(config), env=daemon_env)
    assert done.returncode == 2
    assert f"fireworks-watcher: error: {error}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "pw0123456" not in done.stdout + done.stderr


PASSWORD = "s3cretHookPass"


def run_cli(env: dict[str, str], *argv: str) -> str:
    """A command as a person runs it: its stdout, then its stderr (the log lines)."""
    done = run_watcher(*argv, env=env)
    return done.stdout + done.stderr


@pytest.mark.slow
def test_a_templated_url_keeps_its_password_out_of_every_output(
    sim: Simulator, receiver: JsonReceiver, tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    """`json://user:PASSWORD@127.0.0.1:PORT/{owner}`: the password is in none of `once`
    (debug logs, a failed send's error included), `status`, `status --json`, `history`,
    `history --json`, `check`, `test-notify`, the outbox, a daemon's log and page; the
    receiver got it (basic auth) on the owner's path; the job with no owner is `skipped` in
    the history, the job's page and its API document."""
    url = receiver.url("/{owner}", user="user", password=PASSWORD)
    config = write_config(tmp_path, [url], watch='jobs = ["job-a", "job-n"]')
    c = str(config)
    sim.add_job("job-a", state="RUNNING", created_by=ALICE)
    sim.add_job("job-n", state="RUNNING", created_by="")
    receiver.status = 503
    outputs = [run_cli(daemon_env, "--log-level", "debug", "once", "-c", c)]
    sim.set_state("job-a", "FAILED", status_code="INTERNAL", status_message="OOM")
    sim.set_state("job-n", "FAILED", status_code="INTERNAL", status_message="OOM")
    outputs.append(run_cli(daemon_env, "--log-level", "debug", "once", "-c", c))
    assert "notify.failed" in outputs[-1]
    receiver.status = 200
    outputs.append(run_cli(daemon_env, "--log-level", "debug", "once", "-c", c))
    for command in (["status"], ["status", "--json"], ["history"]):
        outputs.append(run_cli(daemon_env, *command, "-c", c))
    history_json = run_watcher("history", "--json", "-c", c, env=daemon_env)
    outputs += [history_json.stdout, history_json.stderr]
    outputs.append(run_cli(daemon_env, "check", "-c", c))
    test_notify = run_cli(daemon_env, "test-notify", "-c", c)
    outputs.append(test_notify)
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        outputs += [row[0] for row in db.execute("SELECT url_display FROM outbox")]
        (skipped_key,) = db.execute(
            "SELECT job_key FROM outbox WHERE status = 'skipped'"
        ).fetchone()
    # The page: the job's history shows the skipped delivery (a grey badge), its API too.
    serve_health(config)
    daemon = Daemon(config, daemon_env)
    try:
        base = daemon.health_url()
        page = httpx.get(f"{base}/jobs/{skipped_key}", timeout=10).text
        api = httpx.get(f"{base}/api/v1/jobs/{skipped_key}", timeout=10)
        outputs += [page, api.text, "".join(daemon.lines)]
    finally:
        daemon.close()
    assert '<span class="badge m-tombstone">team: skipped</span>' in page
    api_statuses = [d["status"] for e in api.json()["history"] for d in e["deliveries"]]
    assert api_statuses == ["skipped"]
    for text in outputs:
        assert PASSWORD not in text
    assert "team: skipped" in outputs[5]
    events = json.loads(history_json.stdout)["events"]
    (skipped,) = [d for e in events if e["job"].endswith("job-n") for d in e["deliveries"]]
    assert skipped["status"] == "skipped"
    assert skipped["last_error"] == "skipped: {owner} empty for this message"
    assert "skipped (its URL uses {owner})" in test_notify
    got = receiver.wait_for(1)
    assert [m["path"] for m in got] == [f"/{ALICE}"]
    assert got[0]["auth"].startswith("Basic ")
