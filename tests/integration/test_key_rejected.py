"""A key the API rejects is announced (issue 20): after `api_down_after` cycles in which the API
answered 401 (or 403 on every call), every channel hears "Fireworks rejects the API key for
account X" once, then "accepts ... again" once; a restart or a fail-over repeats neither.
`status` says it in its first line and the page in its header.

The watcher runs in-process (and as a daemon) against the simulator over loopback, whose
accepted key a test changes to "fix" the key without restarting the watcher."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT
from tests.support.daemon import Daemon, run_watcher, wait_cycles, write_config
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app, config
from watcher.runtime.poller import Poller

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

#: The key the watcher presents; the simulator accepts `KEY` until a test accepts this one.
WRONG = "fw_wrong-key-5a1e7c9d3b"
REJECTED = f"Fireworks rejects the API key for account {ACCOUNT}"
ACCEPTED = f"Fireworks accepts the API key for account {ACCOUNT} again"


@pytest.mark.parametrize(
    ("calls", "answered", "refusals", "verdict"),
    [
        (2, 2, [401, 401], True),  # the key itself is refused
        (3, 3, [401], True),  # one 401 is enough: the API does not know the key
        (2, 2, [403, 403], True),  # nothing this key may read
        (2, 2, [403], False),  # one resource forbidden, another read: the key works
        (3, 2, [403, 403], None),  # a timeout among 403s: not every call was refused
        (2, 2, [404, 400], False),  # an answer about the resource: the key was let through
        (1, 1, [], False),
        (2, 0, [], None),  # timeouts and 5xx say nothing of the key
        (0, 0, [], None),  # a cycle with nothing due
        (1, 1, [0], None),  # a request never sent
    ],
)
def test_which_cycles_reject_the_key(
    calls: int, answered: int, refusals: list[int], verdict: bool | None
) -> None:
    from watcher.core.conditions import key_verdict  # here: the rest runs on older code too

    assert verdict is key_verdict(calls, answered, refusals)


def test_the_messages_name_the_account_never_the_proxy_password() -> None:
    """The announcement, its end and its reminder name the account; the API's base URL is
    shown without an authenticating proxy's user and password."""
    from datetime import UTC, datetime, timedelta

    from watcher.core.conditions import Condition, ConditionName
    from watcher.core.notices import condition_notice, reminder_notice

    opened = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    detail = "GET /v1/accounts/acme/dpoJobs/a: HTTP 401 UNAUTHENTICATED"
    condition = Condition(f"account:{ACCOUNT}", ConditionName.KEY_REJECTED, opened, detail)
    base = "https://user:proxy-pass@proxy.example/fireworks"

    down = condition_notice(condition, None, api_label=base)
    up = condition_notice(condition, None, resolved_at=opened, api_label=base)
    reminder = reminder_notice(
        condition.subject,
        None,
        what="with its API key rejected",
        since=opened,
        now=opened + timedelta(hours=2),
        channel="team",
        condition=str(condition.name),
    )

    assert (REJECTED, ACCEPTED) == (down.message.title, up.message.title)
    assert ("API_KEY_REJECTED", "API_KEY_ACCEPTED") == (down.new_state, up.new_state)
    assert detail in down.message.body
    assert "https://proxy.example/fireworks rejects the API key" in down.message.body
    assert "proxy-pass" not in down.message.body + up.message.body
    assert "Reminder: account acme still with its API key rejected (2h 00m 00s)" == (
        reminder.message.title
    )


def settings_for(
    server: ServedApp, state: Path, receiver: JsonReceiver, *, account: str = ACCOUNT
) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": account, "base_url": server.url},
            "watcher": {
                "poll_interval": 1,
                "state_path": str(state),
                "api_down_after": 3,
                "max_requests_per_minute": 6000,  # back-to-back cycles, unpaced
            },
            # Two kinds: one GET each (never a LIST standing in for both).
            "watch": [{"kind": "dpo", "jobs": ["job-a"]}, {"kind": "sft", "jobs": ["job-b"]}],
            "channel": [{"name": "team", "urls": [receiver.url()]}],
        },
        {"FIREWORKS_API_KEY": WRONG},
    )


@asynccontextmanager
async def started(settings: config.Settings) -> AsyncIterator[Poller]:
    async with app.open_watcher(settings) as watcher:
        yield watcher


async def cycles(watcher: Poller, count: int) -> None:
    """`count` poll cycles, every job due, each with its dispatch waited for."""
    for _ in range(count):
        await watcher.run_once(force=True)


def titles(receiver: JsonReceiver) -> list[str]:
    return [str(m["title"]) for m in receiver.messages]


@pytest.fixture
def jobs(sim: Simulator) -> Simulator:
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", collection="supervisedFineTuningJobs", state="RUNNING")
    return sim


async def state_rows(path: Path) -> list[str]:
    def read() -> list[str]:
        with closing(sqlite3.connect(path)) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            return [str(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"')]

    return await anyio.to_thread.run_sync(read)


async def test_a_rejected_key_is_announced_once_then_accepted_again_once_across_a_restart(
    server: ServedApp, jobs: Simulator, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """Two rejected cycles say nothing; the third announces it to every channel, once;
    more rejected cycles, before and after a restart, add nothing. The first cycle the API
    accepts the key says so, once. The key is in no message and nowhere in the state."""
    state = tmp_path / "state.db"
    settings = settings_for(server, state, receiver)
    async with started(settings) as watcher:
        await cycles(watcher, 2)
        assert [] == titles(receiver)
        await cycles(watcher, 1)
        assert [REJECTED] == titles(receiver)
        await cycles(watcher, 3)
    async with started(settings) as again:
        await cycles(again, 4)
        assert [REJECTED] == titles(receiver)
        jobs.api_key = WRONG  # the key is accepted now
        await cycles(again, 1)
        await cycles(again, 3)
    async with started(settings) as third:
        await cycles(third, 2)

    assert [REJECTED, ACCEPTED] == titles(receiver)
    rejected, accepted = receiver.messages
    assert ("failure", "success") == (rejected["type"], accepted["type"])
    assert "HTTP 401" in rejected["message"]
    assert f"account **{ACCOUNT}**" in rejected["message"]
    assert not any(WRONG in str(m) for m in receiver.messages)
    assert not any(WRONG in row for row in await state_rows(state))


async def test_403_on_every_call_rejects_the_key_but_on_one_resource_does_not(
    server: ServedApp, jobs: Simulator, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """A key of another account reads nothing (403 on every call): rejected. A 403 on one
    job while the other is read is that job's permission, not the key."""
    jobs.api_key = WRONG
    jobs.add_fault(status=403, times=1000, path_contains="job-b")
    async with started(settings_for(server, tmp_path / "one.db", receiver)) as watcher:
        await cycles(watcher, 4)
    assert [] == titles(receiver)

    jobs.clear_faults()
    other = settings_for(server, tmp_path / "all.db", receiver, account="other-account")
    async with started(other) as watcher:
        await cycles(watcher, 4)
    assert ["Fireworks rejects the API key for account other-account"] == titles(receiver)
    assert "HTTP 403" in receiver.messages[0]["message"]


async def test_ha_the_leader_announces_and_a_new_leader_does_not_repeat(
    server: ServedApp, jobs: Simulator, receiver: JsonReceiver, state_url: str
) -> None:
    """Two replicas on PostgreSQL: the leader announces the rejected key; the replica that
    takes over (a new term, memory reloaded from the database) does not repeat it, the
    deposed one's writes are refused, and the new leader says the key is accepted, once."""
    from tests.support.ha import take_over

    settings = config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {
                "poll_interval": 1,
                "state_url": state_url,
                "api_down_after": 2,
                "max_requests_per_minute": 6000,
            },
            "watch": [{"kind": "dpo", "jobs": ["job-a"]}],
            "channel": [{"name": "team", "urls": [receiver.url()]}],
        },
        {"FIREWORKS_API_KEY": WRONG},
    )
    async with app.open_runtime(settings) as a, app.open_runtime(settings) as b:
        await take_over(a)
        a.watcher.new_term()
        await cycles(a.watcher, 3)
        assert [REJECTED] == titles(receiver)

        await take_over(b)  # A stops renewing; B leads from here
        b.watcher.new_term()
        await cycles(b.watcher, 3)
        await cycles(a.watcher, 3)  # deposed: fenced, queues nothing
        assert [REJECTED] == titles(receiver)

        jobs.api_key = WRONG
        await cycles(a.watcher, 1)
        await cycles(b.watcher, 2)
    assert [REJECTED, ACCEPTED] == titles(receiver)


# -- the daemon, `status` and the page -----------------------------------------------------


def daemon_config(tmp_path: Path, receiver: JsonReceiver) -> Path:
    # A rejected key backs its jobs off by the slow interval: as fast, for the test.
    return write_config(
        tmp_path,
        [receiver.url()],
        health=True,
        watcher="terminal_poll_interval = 0.3\napi_down_after = 3",
    )


def status_out(config_path: Path, env: dict[str, str], *extra: str) -> str:
    run = run_watcher("status", "-c", str(config_path), *extra, env=env)
    assert 0 == run.returncode, run.stderr
    return run.stdout


def header(base: str) -> str:
    """The page's header bar, as HTML."""
    page = httpx.get(f"{base}/").text
    return page[page.index('<header class="bar">') : page.index("</header>")]


def test_the_daemon_announces_a_wrong_key_once_and_its_return_once(
    jobs: Simulator, receiver: JsonReceiver, tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    """`run` with a wrong key: one "rejects the API key" post after 3 rejected cycles, none in
    the next cycles; `status` starts with it and the page's header says it. The key accepted:
    one "accepts ... again", and the first line and the header are gone."""
    config_path = daemon_config(tmp_path, receiver)
    env = daemon_env | {"FIREWORKS_API_KEY": WRONG}
    daemon = Daemon(config_path, env)
    try:
        base = daemon.health_url()
        [said] = daemon.wait_event("api.key_rejected")
        receiver.wait_for(1)
        wait_cycles(base, 3)
        assert [REJECTED] == titles(receiver)
        assert f"account:{ACCOUNT}" == said["target"]
        events = [json.loads(line).get("event") for line in list(daemon.lines) if line[:1] == "{"]
        # One job, one call a cycle: announced after exactly `api_down_after` rejected cycles.
        assert 3 == events[: events.index("api.key_rejected")].count("api.auth_failed")
        first, *_ = status_out(config_path, env).splitlines()
        assert first.startswith(f"{REJECTED} (since ")
        assert [REJECTED] == [k["message"] for k in status_json(config_path, env)]
        assert REJECTED in header(base)

        jobs.api_key = WRONG
        receiver.wait_for(2)
        wait_cycles(base, 3)
        assert [REJECTED, ACCEPTED] == titles(receiver)
        assert not status_out(config_path, env).startswith("Fireworks")
        assert [] == status_json(config_path, env)
        assert "rejects the API key" not in header(base)
        assert 0 == daemon.stop()
    finally:
        daemon.close()
    assert not any(WRONG in line for line in daemon.lines)


def status_json(config_path: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(status_out(config_path, env, "--json"))["key_rejected"]
    return found
