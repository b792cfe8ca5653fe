"""SIGHUP's reload: every key that can change live does; the rest is named, one line each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from structlog.testing import capture_logs

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app, config
from watcher.web.health import Health


def settings_with(server: ServedApp, tmp_path: Path, url: str, **watcher: Any) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {"state_path": str(tmp_path / "state.db"), **watcher},
            "watch": [{"kind": "dpo", "jobs": ["job-a"]}],
            "channel": [{"name": "team", "urls": [url]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )


async def test_live_keys_apply_and_the_rest_is_named(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """Budget, request timeout, intervals, retry and notify timeouts apply at once; a new
    account or health address is named as needing a restart; a second reload compares with
    the first one's result, not with the start-up file."""
    sim.add_job("job-a", state="RUNNING")
    first = settings_with(server, tmp_path, receiver.url(), max_requests_per_minute=60)
    second = settings_with(
        server,
        tmp_path,
        receiver.url(),
        max_requests_per_minute=600,
        request_timeout=2.5,
        poll_interval=7,
        notify_timeout=4,
        retry_max_delay=9,
        health_listen="127.0.0.1:0",
    ).model_copy(update={"fireworks": first.fireworks.model_copy(update={"account_id": "b"})})
    health = Health(poll_interval=first.watcher.poll_interval)
    async with app.open_runtime(first, health=health) as runtime:
        with capture_logs() as first_logs:
            applied = app._reload(runtime, health, first, lambda: second)
        with capture_logs() as second_logs:
            app._reload(runtime, health, applied, lambda: second)
        await runtime.watcher.poll_once()  # a reload takes effect at the next poll

        plan = runtime.watcher.plan
        assert second is applied
        assert 600 == runtime.budget.per_minute
        assert httpx.Timeout(2.5) == runtime.client._http.timeout
        assert (7, 4, 9) == (plan.poll_interval, plan.notify_timeout, plan.retry.max_delay)
    restart = [e["key"] for e in first_logs if e["event"] == "config.reload_needs_restart"]
    assert ["fireworks.account_id", "watcher.health_listen"] == restart
    assert [] == [e for e in second_logs if e["event"] == "config.reload_needs_restart"]


async def test_a_bad_reload_keeps_everything(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """An invalid new file is rejected in one log line; the running settings stay."""
    first = settings_with(server, tmp_path, receiver.url(), max_requests_per_minute=60)
    health = Health(poll_interval=first.watcher.poll_interval)

    def broken() -> config.Settings:
        return config.parse({"fireworks": {}}, {})

    async with app.open_runtime(first, health=health) as runtime:
        with capture_logs() as logs:
            kept = app._reload(runtime, health, first, broken)

        assert first is kept
        assert 60 == runtime.budget.per_minute
    assert ["config.reload_rejected"] == [e["event"] for e in logs]
