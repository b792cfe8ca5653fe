"""The simulator's account (`GET /v1/accounts/{id}`) and its suspension, over real HTTP.

The SDK oracle (`test_sdk_oracle.py`) proves the account's shape; these tests drive it: the
control API suspends and unsuspends it, and a suspension pauses the account's RUNNING jobs.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fireworks_sim import Simulator
from tests.support.servers import FakeClock, ServedApp

ACCOUNT = "sim-account"
AUTH = {"Authorization": "Bearer sim-key"}


@pytest.fixture(scope="module")
def served() -> Iterator[ServedApp]:
    with ServedApp(Simulator()) as app:
        yield app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(served: ServedApp, clock: FakeClock) -> Simulator:
    simulator = Simulator(clock=clock, account_id=ACCOUNT)
    served.app = simulator
    return simulator


@pytest.fixture(scope="module")
def client(served: ServedApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=5, trust_env=False) as http:
        yield http


@pytest.fixture(scope="module")
def control(served: ServedApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=5, trust_env=False) as http:
        yield http


def suspend_state(client: httpx.Client) -> tuple[str, str]:
    document = client.get(f"/v1/accounts/{ACCOUNT}").json()
    return document["state"], document["suspendState"]


def test_the_account_is_healthy_until_suspended_and_again_after(
    sim: Simulator, clock: FakeClock, client: httpx.Client
) -> None:
    """The account answers READY and UNSUSPENDED; `suspend` sets the suspend state (and
    updateTime), `unsuspend` lifts it."""
    before = client.get(f"/v1/accounts/{ACCOUNT}").json()
    clock.now += 60
    sim.suspend(state="CREDIT_DEPLETED", status_message="add credits to resume")
    suspended = client.get(f"/v1/accounts/{ACCOUNT}").json()
    sim.unsuspend()

    assert ("READY", "UNSUSPENDED") == (before["state"], before["suspendState"])
    assert (f"accounts/{ACCOUNT}", "CREDIT_DEPLETED", "add credits to resume") == (
        suspended["name"],
        suspended["suspendState"],
        suspended["status"]["message"],
    )
    assert suspended["updateTime"] > before["updateTime"]
    assert ("READY", "UNSUSPENDED") == suspend_state(client)


def test_a_suspension_pauses_running_jobs_and_its_end_resumes_them(sim: Simulator) -> None:
    """RUNNING jobs of every job collection become PAUSED (the reason in their status);
    pending jobs and deployments are left alone; `unsuspend` resumes what it paused."""
    sim.add_job("run-dpo", state="RUNNING")
    sim.add_job("run-sft", collection="supervisedFineTuningJobs", state="RUNNING")
    sim.add_job("waiting", state="PENDING")
    sim.add_job("dep", collection="deployments", state="READY")

    sim.suspend(state="MONTHLY_SPEND_LIMIT_EXCEEDED")
    paused = {
        job_id: (sim.job(job_id, collection)["state"], sim.job(job_id, collection)["status"])
        for job_id, collection in [
            ("run-dpo", "dpoJobs"),
            ("run-sft", "supervisedFineTuningJobs"),
            ("waiting", "dpoJobs"),
            ("dep", "deployments"),
        ]
    }
    sim.unsuspend()

    reason = {
        "code": "FAILED_PRECONDITION",
        "message": "account suspended (MONTHLY_SPEND_LIMIT_EXCEEDED)",
    }
    assert {
        "run-dpo": ("JOB_STATE_PAUSED", reason),
        "run-sft": ("JOB_STATE_PAUSED", reason),
        "waiting": ("JOB_STATE_PENDING", {"code": "OK", "message": ""}),
        "dep": ("READY", {"code": "OK", "message": ""}),
    } == paused
    assert ("JOB_STATE_RUNNING", "JOB_STATE_RUNNING") == (
        sim.job("run-dpo")["state"],
        sim.job("run-sft", "supervisedFineTuningJobs")["state"],
    )


def test_unsuspend_without_resume_leaves_paused_jobs_paused(sim: Simulator) -> None:
    """`resume=False`: the account is healthy again, its paused jobs wait for a person."""
    sim.add_job("run", state="RUNNING")
    sim.suspend()

    account = sim.unsuspend(resume=False)

    assert ("UNSUSPENDED", "JOB_STATE_PAUSED") == (account["suspendState"], sim.job("run")["state"])


def test_control_routes_suspend_and_unsuspend(
    sim: Simulator, client: httpx.Client, control: httpx.Client
) -> None:
    """`/_sim/accounts/{id}` reads the account; `.../suspend` and `.../unsuspend` drive it
    without a key; a wrong account is 404, a suspension to UNSUSPENDED 400."""
    read = control.get(f"/_sim/accounts/{ACCOUNT}")
    suspended = control.post(
        f"/_sim/accounts/{ACCOUNT}/suspend", json={"state": "BLOCKED_BY_ABUSE_RULE"}
    )
    seen = suspend_state(client)
    back = control.post(f"/_sim/accounts/{ACCOUNT}/unsuspend", json={})
    unknown = control.post("/_sim/accounts/nobody/suspend", json={})
    refused = control.post(f"/_sim/accounts/{ACCOUNT}/suspend", json={"state": "UNSUSPENDED"})

    assert (200, "UNSUSPENDED") == (read.status_code, read.json()["suspendState"])
    assert (200, "BLOCKED_BY_ABUSE_RULE") == (
        suspended.status_code,
        suspended.json()["suspendState"],
    )
    assert ("READY", "BLOCKED_BY_ABUSE_RULE") == seen
    assert (200, "UNSUSPENDED") == (back.status_code, back.json()["suspendState"])
    assert (404, 400) == (unknown.status_code, refused.status_code)


def test_the_account_answers_only_its_own_key_and_fields(
    sim: Simulator, client: httpx.Client, control: httpx.Client
) -> None:
    """Another account is 403, no key 401, a readMask keeps the named fields and refuses
    one the Account model lacks, and the account is no collection to LIST or POST to."""
    other = client.get("/v1/accounts/someone-else")
    keyless = control.get(f"/v1/accounts/{ACCOUNT}")
    masked = client.get(f"/v1/accounts/{ACCOUNT}", params={"readMask": "name,suspendState"})
    foreign = client.get(f"/v1/accounts/{ACCOUNT}", params={"readMask": "name,dataset"})
    posted = client.post(f"/v1/accounts/{ACCOUNT}")

    assert (403, 401, 400, 405) == (
        other.status_code,
        keyless.status_code,
        foreign.status_code,
        posted.status_code,
    )
    assert {"name": f"accounts/{ACCOUNT}", "suspendState": "UNSUSPENDED"} == masked.json()
