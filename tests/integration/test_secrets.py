"""Secrets never leave the process: not in logs, CLI output, the state database or notifications."""

from __future__ import annotations

from pathlib import Path

import pytest

from fireworks_sim import SIGNED_LOGS_URL, SIGNED_METRICS_URL, Simulator
from tests.support.account import ACCOUNT
from tests.support.daemon import Daemon, run_watcher, write_config
from tests.support.every_kind import MOVES, add_every_kind, move_every_kind, resource_id
from tests.support.servers import JsonReceiver, ServedApp

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

API_KEY = "fw-SECRET-apikey-7f3a9c"
URL_PASSWORD = "SECRET-urlpass-41d2"
WANDB_KEY = "SECRET-wandb-9e8d"
ROUTE_KEY = "SECRET-route-5c6b"
HOOK_TOKEN = "SECRET-hook-2b9a"  # a header token, from ${HOOK_TOKEN} in the URL
SIGNATURE = SIGNED_LOGS_URL.split("=")[-1]
METRICS_SIGNATURE = SIGNED_METRICS_URL.split("=")[-1]


def test_a_whole_scenario_leaks_no_secret(
    server: ServedApp, receiver: JsonReceiver, tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    """Run a daemon over every kind through transitions and a channel outage, then search
    everything it wrote."""
    sim = Simulator(
        api_key=API_KEY, account_id=ACCOUNT, wandb_api_key=WANDB_KEY, route_api_key=ROUTE_KEY
    )
    server.app = sim
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="RUNNING")
    add_every_kind(sim)
    every_kind = "".join(
        f'[[watch]]\nkind = "{kind}"\njobs = ["{resource_id(kind)}"]\n' for kind, *_ in MOVES
    )
    config = write_config(
        tmp_path,
        [f"{receiver.url(user='bot', password=URL_PASSWORD)}?+X-Hook-Token=${{HOOK_TOKEN}}"],
        watch=f'jobs = ["job-a", "job-b", "job-missing"]\n{every_kind}',
        channel="max_per_second = 100",
    )
    env = daemon_env | {"FIREWORKS_API_KEY": API_KEY, "HOOK_TOKEN": HOOK_TOKEN}

    def cli(*argv: str, key: str = API_KEY) -> str:
        done = run_watcher(*argv, env=env | {"FIREWORKS_API_KEY": key})
        return done.stdout + done.stderr

    daemon = Daemon(config, env)
    try:
        daemon.wait_event("job.baseline", 3 + len(MOVES))
        receiver.status = 503
        sim.set_state("job-a", "FAILED", status_code="INTERNAL", status_message="OOM")
        daemon.wait_event("notify.failed")
        outputs = [cli("status", "-c", str(config)), cli("status", "--json", "-c", str(config))]
        receiver.status = 200
        receiver.wait_for(1)
        sim.set_state("job-b", "COMPLETED")
        move_every_kind(sim)
        receiver.wait_for(2 + len(MOVES))
    finally:
        daemon.close()
    notify_url = receiver.url(user="bot", password=URL_PASSWORD) + f"?+X-Hook-Token={HOOK_TOKEN}"
    outputs += [
        cli("check", "--probe", "-c", str(config)),
        cli("once", "-c", str(config)),
        cli("test-notify", "-c", str(config)),
        cli("check", "--probe", "-c", str(config), key="fw-SECRET-wrongkey-00"),
        # A user is needed: without one, `url()` leaves the password out of the URL.
        cli("watch", "job-a", "--interval", "0.1", "--notify", notify_url),
    ]
    database = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    notifications = [f"{m['title']} {m['message']}" for m in receiver.messages]

    everything = "\n".join(["".join(daemon.lines), *outputs, *notifications])
    secrets = (
        API_KEY,
        URL_PASSWORD,
        HOOK_TOKEN,
        WANDB_KEY,
        ROUTE_KEY,
        SIGNATURE,
        METRICS_SIGNATURE,
    )
    for secret in (*secrets, "fw-SECRET-wrongkey-00"):
        assert secret not in everything
        assert secret.encode() not in database
    # The scenario really ran: the logs show the outage and the deliveries.
    assert "notify.failed" in everything
    assert "notify.sent" in everything
    assert "json://bot:****@" in everything
    # Every kind was read and announced; the simulator really served each secret.
    for kind, *_ in MOVES:
        assert f"({resource_id(kind)}): " in "\n".join(notifications)
    served = "".join(str(sim.jobs(kind.collection)) for kind, *_ in MOVES)
    for secret in (WANDB_KEY, ROUTE_KEY, SIGNATURE, METRICS_SIGNATURE):
        assert secret in served
