"""The account's own health (issue 23, section 6): `kind = "account"`, watched by default.

The watcher runs in-process (its daemon loop, `run_forever`) against the simulator over
loopback, with one channel to a real `JsonReceiver`. The simulator's control API suspends
and unsuspends the account. No config here has a `[[watch]] kind = "account"` unless a test
says so: the account is watched because it is configured. Default settings throughout, but
for `poll_interval` and `terminal_poll_interval`, short so that the test takes a second (and
the request budget that such intervals need).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.servers import JsonReceiver, ServedApp
from tests.support.waiting import wait_until_async
from watcher import app, config
from watcher.cli import main
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef

#: The account's health is polled this often here (the default is 300 s).
TERMINAL = 0.3
ACCOUNT_PATH = f"/v1/accounts/{ACCOUNT}"
SUSPENDED = f"account {ACCOUNT} suspended (CREDIT_DEPLETED)"
BACK = f"account {ACCOUNT} no longer suspended (was CREDIT_DEPLETED)"


def settings_for(
    server: ServedApp,
    state: Path,
    receiver: JsonReceiver,
    *,
    watches: list[dict[str, Any]] | None = None,
    **watcher: Any,
) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {
                "poll_interval": 0.1,
                "terminal_poll_interval": TERMINAL,
                "max_requests_per_minute": 6000,  # the short intervals, unpaced
                "state_path": str(state),
                "health_listen": "",
                "watch_account": True,  # without a [[watch]] kind = "account"
                **watcher,
            },
            "watch": watches or [{"kind": "dpo", "jobs": ["job-a"]}],
            "channel": [{"name": "team", "urls": [receiver.url()]}],
        },
        {"FIREWORKS_API_KEY": KEY},
        source="test",
    )


@asynccontextmanager
async def running(settings: config.Settings) -> AsyncIterator[None]:
    """The daemon's loop, in this process, until the block ends."""
    stop = anyio.Event()
    async with app.open_watcher(settings) as watcher, anyio.create_task_group() as tg:
        tg.start_soon(watcher.run_forever, stop)
        try:
            yield
        finally:
            stop.set()


def account_gets(sim: Simulator) -> int:
    return sum(path == ACCOUNT_PATH for _, path in sim.requests)


def titles(receiver: JsonReceiver) -> list[str]:
    return [str(message["title"]) for message in receiver.messages]


async def test_a_suspension_and_its_end_are_announced_once_each_without_a_watch(
    server: ServedApp, sim: Simulator, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """No `[[watch]] kind = "account"`: the account is watched anyway. Healthy at startup
    says nothing; CREDIT_DEPLETED is one failure message naming the account and the suspend
    state; its end one success message saying it is back; each once, however many polls."""
    sim.add_job("job-a", state="PENDING")  # not RUNNING: the suspension pauses no job here
    settings = settings_for(server, tmp_path / "state.db", receiver)

    async with running(settings):
        await wait_until_async(lambda: account_gets(sim) >= 1, "the account's first poll")
        sim.suspend(state="CREDIT_DEPLETED")
        await wait_until_async(lambda: len(receiver.messages) >= 1, "the suspension")
        polled = account_gets(sim)
        await wait_until_async(lambda: account_gets(sim) >= polled + 2, "two more polls")
        sim.unsuspend()
        await wait_until_async(lambda: len(receiver.messages) >= 2, "the end of it")
        polled = account_gets(sim)
        await wait_until_async(lambda: account_gets(sim) >= polled + 2, "two more polls")

    assert [SUSPENDED, BACK] == titles(receiver)
    suspended, back = receiver.messages
    assert ("failure", "success") == (suspended["type"], back["type"])
    assert "is suspended: **CREDIT_DEPLETED**" in str(suspended["message"])
    assert "Account state: READY" in str(suspended["message"])
    assert "is no longer suspended (was **CREDIT_DEPLETED**)" in str(back["message"])


async def test_the_account_is_polled_at_the_terminal_interval(
    server: ServedApp, sim: Simulator, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """One GET of the account per terminal_poll_interval, while a PENDING job is polled
    every poll_interval: over the span of about 5 terminal intervals, at most 7 account
    GETs (one at start, one per interval, one in flight), and the job's several times more."""
    sim.add_job("job-a", state="PENDING")
    settings = settings_for(server, tmp_path / "state.db", receiver)

    async with running(settings):
        await wait_until_async(lambda: account_gets(sim) >= 1, "the account's first poll")
        started = time.monotonic()
        await wait_until_async(lambda: account_gets(sim) >= 5, "five account polls")
        elapsed = time.monotonic() - started

    job_gets = sum(path.endswith("/dpoJobs/job-a") for _, path in sim.requests)
    assert elapsed >= 3.5 * TERMINAL
    assert account_gets(sim) <= elapsed / TERMINAL + 3
    assert job_gets > 2 * account_gets(sim)
    assert [] == titles(receiver)  # a healthy account, a pending job: nothing to say


async def test_an_account_watch_sets_thresholds_and_the_opt_out_stops_the_default(
    server: ServedApp, sim: Simulator, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """`[[watch]] kind = "account"` (no jobs needed) watches it with that watch's thresholds;
    `watch_account = false` without such a watch never asks for the account."""
    sim.add_job("job-a", state="PENDING")
    explicit = settings_for(
        server,
        tmp_path / "one.db",
        receiver,
        watches=[{"kind": "dpo", "jobs": ["job-a"]}, {"kind": "account", "flap_threshold": 2}],
        watch_account=False,
    )
    plan = app.build_plan(explicit, app.build_notifier(explicit))
    assert JobRef(JobKind.ACCOUNT, ACCOUNT) in plan.refs
    assert 2 == plan.thresholds(JobRef(JobKind.ACCOUNT, ACCOUNT)).flap_threshold

    off = settings_for(server, tmp_path / "two.db", receiver, watch_account=False)
    async with running(off):
        await wait_until_async(
            lambda: sum("job-a" in path for _, path in sim.requests) >= 3, "three job polls"
        )
    assert 0 == account_gets(sim)


def test_check_counts_the_account_in_the_cycle_and_probes_it(
    tmp_path: Path, env: None, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` says the account is watched and counts its request in a full cycle's cost;
    `--probe` reads its suspend state."""
    sim.add_job("job-a", state="RUNNING")
    sim.suspend(state="FAILED_PAYMENTS")
    path = tmp_path / "watcher.toml"
    path.write_text(
        '[watcher]\nhealth_listen = ""\nwatch_account = true\n[[watch]]\nkind = "dpo"\njobs = ["job-a"]\n'
    )

    code = main(["check", "--probe", "-c", str(path)])
    out, _ = capsys.readouterr()

    assert 0 == code
    assert "  jobs: 1 listed\n" in out
    assert "  account health: every 300 s (1 request)\n" in out
    assert f"probe account/{ACCOUNT}: FAILED_PAYMENTS\n" in out
    assert "a full cycle costs 2 request(s)\n" in out
