"""A status page to test: a real `fireworks-watcher run` against the simulator, watching
several kinds, one job with hostile text, one with an open condition, and a channel whose
receiver refuses (so a delivery stays pending); its page and API served on loopback.

Used by the page's HTTP tests, the schemathesis run and the browser tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.daemon import Daemon
from tests.support.servers import JsonReceiver, ServedApp
from tests.support.waiting import wait_until

HOSTILE_MESSAGE = "<script>alert(1)</script>"
HOSTILE_NAME = '<img src=x onerror="alert(2)">'
WANDB_KEY = "wandb-secret-0123456789abcdef"
ROUTE_KEY = "route-secret-0123456789abcdef"
CHANNEL_PASSWORD = "hunter2-channel-secret"
TOKEN = "page-token-0123456789abcdef"
#: Every secret the daemon holds: none may appear on a page or in the API.
SECRETS = (KEY, WANDB_KEY, ROUTE_KEY, CHANNEL_PASSWORD)
#: (kind in the config, collection, job id, state at start)
JOBS = (
    ("dpo", "dpoJobs", "dpo-run", "RUNNING"),
    ("dpo", "dpoJobs", "dpo-waits", "PENDING"),
    ("sft", "supervisedFineTuningJobs", "sft-run", "RUNNING"),
    ("sft", "supervisedFineTuningJobs", "sft-done", "COMPLETED"),
    ("deployment", "deployments", "dep-ready", "READY"),
    ("evaluation", "evaluationJobs", "eval-hostile", "RUNNING"),
)


@dataclass
class Site:
    """A running daemon's page: `base` is its URL, `token` the page token (or None)."""

    base: str
    token: str | None
    daemon: Daemon
    sim: Simulator
    receiver: JsonReceiver
    config: Path

    def get(
        self,
        path: str,
        *,
        auth: bool = True,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
    ) -> httpx.Response:
        """GET `path`, with the token as a bearer header when `auth` (and there is one)."""
        sent = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        with httpx.Client(cookies=cookies, timeout=10) as client:
            return client.get(f"{self.base}{path}", headers={**sent, **(headers or {})})


def simulator() -> Simulator:
    sim = Simulator(
        api_key=KEY, account_id=ACCOUNT, wandb_api_key=WANDB_KEY, route_api_key=ROUTE_KEY
    )
    for _, collection, job_id, state in JOBS:
        hostile = job_id == "eval-hostile"
        sim.add_job(
            job_id,
            collection=collection,
            state=state,
            display_name=HOSTILE_NAME if hostile else f"Run {job_id}",
            status_message=HOSTILE_MESSAGE if hostile else "",
            progress=40 if job_id == "sft-run" else None,
        )
    return sim


def write_config(tmp: Path, receiver: JsonReceiver, *, token: str | None) -> Path:
    watches = "".join(
        f'\n[[watch]]\nkind = "{kind}"\njobs = {[j for k, _, j, _ in JOBS if k == kind]}\n'
        + ("pending_after = 1\n" if kind == "dpo" else "")
        for kind in dict.fromkeys(k for k, _, _, _ in JOBS)
    )
    path = tmp / "watcher.toml"
    path.write_text(
        f"""
[watcher]
poll_interval = 0.5
max_requests_per_minute = 6000
state_path = "{tmp / "state.db"}"
health_listen = "127.0.0.1:0"
{f'web_token = "{token}"' if token else ""}
{watches}
[[channel]]
name = "team"
urls = ["{receiver.url(user="bot", password=CHANNEL_PASSWORD)}"]
"""
    )
    return path


@contextmanager
def running_site(
    tmp: Path, server: ServedApp, env: dict[str, str], *, token: str | None = None
) -> Iterator[Site]:
    """Start the daemon; yield once every job is recorded and the condition is open."""
    sim = simulator()
    server.app = sim
    with JsonReceiver() as receiver:
        receiver.status = 500  # the condition's notification stays pending
        config = write_config(tmp, receiver, token=token)
        daemon = Daemon(config, env)
        try:
            [listening] = daemon.wait_event("health.listening")
            site = Site(
                f"http://127.0.0.1:{listening['port']}", token, daemon, sim, receiver, config
            )
            daemon.wait_event("condition.opened")

            def recorded() -> bool:
                jobs = site.get("/api/v1/jobs").json()["jobs"]
                return (
                    len(jobs) == len(JOBS) and site.get("/api/v1/deliveries").json()["pending"] > 0
                )

            wait_until(recorded, "every job recorded and a delivery pending")
            add_silence(config, env)
            wait_until(lambda: site.get("/api/v1/conditions").json()["silences"], "the silence")
            yield site
        finally:
            daemon.close()


def add_silence(config: Path, env: dict[str, str]) -> None:
    """One silence in force, through the CLI beside the running daemon."""
    subprocess.run(
        [sys.executable, "-m", "watcher", "silence", "add", "-c", str(config), "--job", "sft-*",
         "--for", "2h", "--comment", "maintenance window"],
        check=True, env={**os.environ, **env}, capture_output=True, timeout=60,
    )  # fmt: skip
