"""The Fireworks simulator and the loopback test servers, exercised over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import apprise
import httpx
import pytest

import fireworks_sim
from fireworks_sim import (
    COLLECTIONS,
    GRPC_CODES,
    INITIAL_STATES,
    Simulator,
    demo_timeline,
    faults,
    full_state,
    populate,
    scenario,
)
from tests.support.servers import FakeClock, JsonReceiver, ServedApp, free_tcp_port, serve_asgi

AUTH = {"Authorization": "Bearer sim-key"}
JOBS = "/v1/accounts/sim-account/dpoJobs"


@pytest.fixture
def anyio_backend() -> str:
    """Run the async test on asyncio, the loop uvicorn uses."""
    return "asyncio"


@pytest.fixture(scope="module")
def served() -> Iterator[ServedApp]:
    # One uvicorn per module: starting and stopping one costs ~0.2 s, so tests swap the app.
    with ServedApp(Simulator()) as app:
        yield app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(served: ServedApp, clock: FakeClock) -> Simulator:
    simulator = Simulator(clock=clock)
    served.app = simulator
    return simulator


@pytest.fixture(scope="module")
def client(served: ServedApp) -> Iterator[httpx.Client]:
    # Shared too: building an httpx.Client (its SSL context) costs ~0.1 s.
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=5) as http:
        yield http


@pytest.fixture(scope="module")
def control(served: ServedApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=5) as http:
        yield http


# -- GET ---------------------------------------------------------------------------------


def test_get_returns_the_documented_job_shape(sim: Simulator, client: httpx.Client) -> None:
    """A GET answers the job JSON with prefixed state, status, configs and the echoed secrets."""
    sim.add_job("j1", state="RUNNING", display_name="First")

    response = client.get(f"{JOBS}/j1")

    assert 200 == response.status_code
    job = response.json()
    assert "accounts/sim-account/dpoJobs/j1" == job["name"]
    assert "First" == job["displayName"]
    assert "JOB_STATE_RUNNING" == job["state"]
    assert {"code": "OK", "message": ""} == job["status"]
    assert "accounts/fireworks/models/llama-v3p1-8b-instruct" == job["trainingConfig"]["baseModel"]
    assert "sim-wandb-secret" == job["wandbConfig"]["apiKey"]
    assert "X-Goog-Signature" in job["trainerLogsSignedUrl"]
    assert job["createTime"].endswith("Z")
    assert "completedTime" not in job
    assert "updateTime" not in job


def test_completed_time_appears_on_a_final_state_and_goes_on_resume(
    sim: Simulator, client: httpx.Client
) -> None:
    """Entering COMPLETED sets completedTime; resuming to RUNNING removes it again."""
    sim.add_job("j1", state="RUNNING")

    sim.set_state("j1", "COMPLETED")
    completed = client.get(f"{JOBS}/j1").json()
    sim.set_state("j1", "JOB_STATE_RUNNING")
    resumed = client.get(f"{JOBS}/j1").json()

    assert "JOB_STATE_COMPLETED" == completed["state"]
    assert "completedTime" in completed
    assert "JOB_STATE_RUNNING" == resumed["state"]
    assert "completedTime" not in resumed


def test_other_collections_are_served_with_update_time(
    sim: Simulator, client: httpx.Client
) -> None:
    """An SFT job lives in its own collection and, unlike DPO, carries updateTime."""
    sim.add_job("s1", collection="supervisedFineTuningJobs", state="VALIDATING")

    job = client.get("/v1/accounts/sim-account/supervisedFineTuningJobs/s1").json()

    assert "accounts/sim-account/supervisedFineTuningJobs/s1" == job["name"]
    assert "JOB_STATE_VALIDATING" == job["state"]
    assert "updateTime" in job
    assert 404 == client.get(f"{JOBS}/s1").status_code


@pytest.mark.parametrize(
    ("read_mask", "expected_keys"),
    [
        ("name,state", {"name", "state"}),
        ("name, status ,displayName", {"name", "status", "displayName"}),
        ("display_name", {"displayName"}),
        ("completedTime,state", {"state"}),
        ("", None),
        ("*", None),
    ],
    ids=["two-fields", "spaces", "snake-case", "absent-field", "empty", "star"],
)
def test_read_mask_selects_top_level_fields(
    sim: Simulator, client: httpx.Client, read_mask: str, expected_keys: set[str] | None
) -> None:
    """readMask keeps only the named fields; empty or "*" keeps them all."""
    full = sim.add_job("j1", state="RUNNING")

    job = client.get(f"{JOBS}/j1", params={"readMask": read_mask}).json()

    assert (set(full) if expected_keys is None else expected_keys) == set(job)


def test_read_mask_reaches_nested_fields(sim: Simulator, client: httpx.Client) -> None:
    """A dotted readMask path keeps just that part of a nested object."""
    sim.add_job("j1")

    job = client.get(f"{JOBS}/j1", params={"readMask": "state,status.code"}).json()

    assert {"state": "JOB_STATE_PENDING", "status": {"code": "OK"}} == job


def test_read_mask_rejects_an_unknown_field(sim: Simulator, client: httpx.Client) -> None:
    """A readMask naming no job field answers 400 INVALID_ARGUMENT."""
    sim.add_job("j1")

    response = client.get(f"{JOBS}/j1", params={"readMask": "name,bogus"})

    assert 400 == response.status_code
    assert GRPC_CODES["INVALID_ARGUMENT"] == response.json()["code"]


# -- LIST --------------------------------------------------------------------------------


def test_list_pages_through_every_job(sim: Simulator, client: httpx.Client) -> None:
    """450 jobs at pageSize 200 come back as 200 + 200 + 50, with tokens and totalSize."""
    populate(sim, 450)
    pages: list[dict[str, Any]] = []
    token = ""
    while True:
        params = {"pageSize": "200", "readMask": "name,state"}
        if token:
            params["pageToken"] = token
        pages.append(client.get(JOBS, params=params).json())
        token = pages[-1].get("nextPageToken", "")
        if not token:
            break

    names = [job["name"] for page in pages for job in page["dpoJobs"]]
    assert [200, 200, 50] == [len(page["dpoJobs"]) for page in pages]
    assert [450, 450, 450] == [page["totalSize"] for page in pages]
    assert [f"accounts/sim-account/dpoJobs/job-{i:05d}" for i in range(450)] == names
    assert "nextPageToken" not in pages[-1]


@pytest.mark.parametrize(
    ("page_size", "expected"),
    [(None, 50), ("0", 50), ("7", 7), ("200", 200), ("500", 200)],
    ids=["default", "zero-is-default", "small", "max", "coerced"],
)
def test_list_page_size(
    sim: Simulator, client: httpx.Client, page_size: str | None, expected: int
) -> None:
    """pageSize defaults to 50 and values above 200 are coerced to 200."""
    populate(sim, 250)
    params = {} if page_size is None else {"pageSize": page_size}

    page = client.get(JOBS, params=params).json()

    assert expected == len(page["dpoJobs"])


def test_list_orders_by_create_time_desc(sim: Simulator, client: httpx.Client) -> None:
    """orderBy="create_time desc" returns the newest job first, default order is by name."""
    sim.add_job("b-old", create_time="2025-01-01T00:00:00Z")
    sim.add_job("a-new", create_time="2025-06-01T00:00:00Z")
    sim.add_job("c-mid", create_time="2025-03-01T00:00:00Z")

    newest_first = client.get(JOBS, params={"orderBy": "create_time desc"}).json()
    by_name = client.get(JOBS).json()

    assert ["a-new", "c-mid", "b-old"] == [
        j["name"].rsplit("/", 1)[1] for j in newest_first["dpoJobs"]
    ]
    assert ["a-new", "b-old", "c-mid"] == [j["name"].rsplit("/", 1)[1] for j in by_name["dpoJobs"]]


def test_list_of_an_empty_collection_is_an_empty_object(client: httpx.Client) -> None:
    """proto3 JSON omits the empty list, the token and a zero totalSize."""
    assert {} == client.get("/v1/accounts/sim-account/evaluationJobs").json()


@pytest.mark.parametrize(
    "params",
    [
        {"pageToken": "not-a-token"},
        {"pageSize": "-1"},
        {"pageSize": "many"},
        {"orderBy": "colour"},
        {"filter": "base_model=x"},
    ],
    ids=["bad-token", "negative-size", "non-int-size", "bad-order", "bad-filter"],
)
def test_list_rejects_bad_parameters(
    sim: Simulator, client: httpx.Client, params: dict[str, str]
) -> None:
    """Invalid list parameters answer 400 INVALID_ARGUMENT."""
    sim.add_job("j1")

    response = client.get(JOBS, params=params)

    assert (400, GRPC_CODES["INVALID_ARGUMENT"]) == (response.status_code, response.json()["code"])


def test_list_token_is_bound_to_order_and_filter(sim: Simulator, client: httpx.Client) -> None:
    """A page token reused with another orderBy is refused, as the docs require."""
    populate(sim, 5)
    token = client.get(JOBS, params={"pageSize": "2"}).json()["nextPageToken"]

    response = client.get(JOBS, params={"pageToken": token, "orderBy": "create_time desc"})

    assert 400 == response.status_code


def test_list_filters_by_state(sim: Simulator, client: httpx.Client) -> None:
    """filter=state="JOB_STATE_RUNNING" keeps only running jobs."""
    sim.add_job("r1", state="RUNNING")
    sim.add_job("p1", state="PENDING")

    page = client.get(JOBS, params={"filter": 'state="JOB_STATE_RUNNING"'}).json()

    assert (["accounts/sim-account/dpoJobs/r1"], 1) == (
        [job["name"] for job in page["dpoJobs"]],
        page["totalSize"],
    )


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "expected_status", "expected_code"),
    [
        (f"{JOBS}/j1", {"Authorization": ""}, 401, "UNAUTHENTICATED"),
        (f"{JOBS}/j1", {"Authorization": "Bearer wrong"}, 401, "UNAUTHENTICATED"),
        ("/v1/accounts/other/dpoJobs/j1", {}, 403, "PERMISSION_DENIED"),
        (f"{JOBS}/missing", {}, 404, "NOT_FOUND"),
        ("/v1/accounts/sim-account/evaluatorJobs/j1", {}, 404, "NOT_FOUND"),
        ("/v2/nothing", {}, 404, "NOT_FOUND"),
    ],
    ids=["no-key", "wrong-key", "other-account", "unknown-job", "unknown-collection", "no-route"],
)
def test_errors_have_grpc_gateway_bodies(
    sim: Simulator,
    client: httpx.Client,
    path: str,
    headers: dict[str, str],
    expected_status: int,
    expected_code: str,
) -> None:
    """Auth, permission and lookup failures answer a {code, message, details} body."""
    sim.add_job("j1")

    response = client.get(path, headers=headers)

    body = response.json()
    assert (expected_status, GRPC_CODES[expected_code], []) == (
        response.status_code,
        body["code"],
        body["details"],
    )
    assert body["message"]
    assert "sim-key" not in response.text


def test_x_api_key_header_is_accepted(sim: Simulator, control: httpx.Client) -> None:
    """`X-Api-Key: <key>` authenticates like the Bearer header."""
    sim.add_job("j1")

    response = control.get(f"{JOBS}/j1", headers={"X-Api-Key": "sim-key"})

    assert 200 == response.status_code


def test_removed_job_answers_404(sim: Simulator, client: httpx.Client) -> None:
    """After remove_job a GET of that job answers 404."""
    sim.add_job("j1")
    sim.remove_job("j1")

    assert 404 == client.get(f"{JOBS}/j1").status_code


# -- faults ------------------------------------------------------------------------------


def test_status_fault_has_grpc_body_and_retry_after(sim: Simulator, client: httpx.Client) -> None:
    """A 429 fault answers RESOURCE_EXHAUSTED with the Retry-After header, then service resumes."""
    sim.add_job("j1")
    sim.add_fault(status=429, retry_after="3")

    faulty = client.get(f"{JOBS}/j1")
    healthy = client.get(f"{JOBS}/j1")

    assert (429, "3", GRPC_CODES["RESOURCE_EXHAUSTED"]) == (
        faulty.status_code,
        faulty.headers["retry-after"],
        faulty.json()["code"],
    )
    assert 200 == healthy.status_code


def test_raw_body_fault_serves_an_html_page(sim: Simulator, client: httpx.Client) -> None:
    """A fault with a raw body answers it verbatim with its content type."""
    sim.add_job("j1")
    sim.add_fault(status=502, body="<html>Bad Gateway</html>", content_type="text/html")

    response = client.get(f"{JOBS}/j1")

    assert (502, "text/html", "<html>Bad Gateway</html>") == (
        response.status_code,
        response.headers["content-type"],
        response.text,
    )


def test_malformed_fault_is_not_json(sim: Simulator, client: httpx.Client) -> None:
    """A malformed fault answers 200 with a body no JSON parser accepts."""
    sim.add_job("j1")
    sim.add_fault(malformed=True)

    response = client.get(f"{JOBS}/j1")

    assert 200 == response.status_code
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_truncated_fault_is_a_prefix_of_the_real_body(sim: Simulator, client: httpx.Client) -> None:
    """A truncated fault answers the first half of the real JSON."""
    sim.add_job("j1")
    sim.add_fault(truncated=True)

    truncated = client.get(f"{JOBS}/j1").text
    real = client.get(f"{JOBS}/j1").text

    assert real.startswith(truncated)
    assert len(real) // 2 == len(truncated)
    with pytest.raises(json.JSONDecodeError):
        json.loads(truncated)


def test_delay_fault_outlasts_a_client_timeout(sim: Simulator, client: httpx.Client) -> None:
    """A delayed answer makes a client with a shorter read timeout time out."""
    sim.add_job("j1")
    sim.add_fault(delay=0.3)

    with pytest.raises(httpx.ReadTimeout):
        client.get(f"{JOBS}/j1", timeout=0.05)


def test_faults_count_down_match_paths_and_run_in_order(
    sim: Simulator, client: httpx.Client
) -> None:
    """Faults are FIFO, each lasts `times` matching requests, and other paths pass untouched."""
    sim.add_job("j1")
    sim.add_job("j2")
    sim.add_fault(status=503, times=2, path_contains="/j2")
    sim.add_fault(status=500)

    statuses = [
        client.get(f"{JOBS}/{job}").status_code for job in ("j1", "j2", "j2", "j2", "j1", "j1")
    ]

    assert [500, 503, 503, 200, 200, 200] == statuses


def test_faults_can_match_the_query_string(sim: Simulator, client: httpx.Client) -> None:
    """path_contains also sees the query, so a fault can hit only a later page."""
    populate(sim, 3)
    sim.add_fault(status=503, path_contains="pageToken=")
    first = client.get(JOBS, params={"pageSize": "2"})

    second = client.get(JOBS, params={"pageSize": "2", "pageToken": first.json()["nextPageToken"]})

    assert (200, 503) == (first.status_code, second.status_code)


def test_requests_are_counted_without_control_calls(
    sim: Simulator, client: httpx.Client, control: httpx.Client
) -> None:
    """Every API call, fault or not, is counted; /_sim/ calls are not."""
    sim.add_job("j1")
    sim.add_fault(status=503, path_contains="/_sim/")
    client.get(f"{JOBS}/j1")
    client.get(JOBS)
    stats = control.get("/_sim/stats").json()

    assert [("GET", f"{JOBS}/j1"), ("GET", JOBS)] == sim.requests
    assert (2, 2) == (sim.request_count, stats["requests"])
    assert 1 == stats["faults"]


# -- timelines ---------------------------------------------------------------------------


def test_script_advances_with_the_clock(
    sim: Simulator, clock: FakeClock, client: httpx.Client
) -> None:
    """Scripted steps apply once the injected clock has passed them, and only then."""
    sim.add_job("j1", state="PENDING")
    sim.script(
        "j1",
        [(5, "RUNNING", "OK", ""), (10, "FAILED", "INTERNAL", "Training failed: boom")],
    )
    seen = []
    for now in (1000.0, 1004.9, 1005.0, 1009.0, 1010.0, 1500.0):
        clock.now = now
        job = client.get(f"{JOBS}/j1").json()
        seen.append((job["state"], job["status"]["code"], "completedTime" in job))

    assert [
        ("JOB_STATE_PENDING", "OK", False),
        ("JOB_STATE_PENDING", "OK", False),
        ("JOB_STATE_RUNNING", "OK", False),
        ("JOB_STATE_RUNNING", "OK", False),
        ("JOB_STATE_FAILED", "INTERNAL", True),
        ("JOB_STATE_FAILED", "INTERNAL", True),
    ] == seen


def test_demo_timeline_settles_within_fifteen_seconds(sim: Simulator, clock: FakeClock) -> None:
    """The demo's four jobs end COMPLETED, FAILED (out of memory), CANCELLED and RUNNING."""
    ids = demo_timeline(sim)
    clock.now += 15

    final = {job["name"].rsplit("/", 1)[1]: job for job in sim.jobs()}

    assert ["demo-complete", "demo-oom", "demo-cancel", "demo-steady"] == ids
    assert {
        "demo-complete": "JOB_STATE_COMPLETED",
        "demo-oom": "JOB_STATE_FAILED",
        "demo-cancel": "JOB_STATE_CANCELLED",
        "demo-steady": "JOB_STATE_RUNNING",
    } == {job_id: job["state"] for job_id, job in final.items()}
    assert "INTERNAL" == final["demo-oom"]["status"]["code"]
    assert "CUDA out of memory" in final["demo-oom"]["status"]["message"]


def test_populate_is_deterministic_and_varied() -> None:
    """The same seed gives the same states, and there are several distinct ones."""
    first, second, other = Simulator(), Simulator(), Simulator()
    populate(first, 100)
    populate(second, 100)
    populate(other, 100, seed=1)

    states = [job["state"] for job in first.jobs()]

    assert states == [job["state"] for job in second.jobs()]
    assert states != [job["state"] for job in other.jobs()]
    assert len(set(states)) >= 5
    assert "accounts/sim-account/dpoJobs/job-00099" == first.jobs()[-1]["name"]


# -- every collection, the clock and progress --------------------------------------------

SFT = "supervisedFineTuningJobs"
START = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_add_job_starts_in_the_collections_first_state(collection: str) -> None:
    """Without a state, a resource starts PENDING, BUILDING, CREATING, DEPLOYING or UPLOADING."""
    job = Simulator().add_job("r1", collection=collection)

    assert INITIAL_STATES[collection] == job["state"]
    assert f"accounts/sim-account/{collection}/r1" == job["name"]


@pytest.mark.parametrize(
    ("state", "collection", "expected"),
    [
        ("running", "dpoJobs", "JOB_STATE_RUNNING"),
        ("JOB_STATE_RUNNING", "evaluationJobs", "JOB_STATE_RUNNING"),
        ("ready", "deployments", "READY"),
        ("BUILD_FAILED", "evaluators", "BUILD_FAILED"),
        ("WARPING", "rlorTrainerJobs", "JOB_STATE_WARPING"),
    ],
)
def test_full_state_prefixes_only_job_collections(
    state: str, collection: str, expected: str
) -> None:
    """JOB_STATE_ is added for job collections only; unknown names pass through."""
    assert expected == full_state(state, collection)


def test_unknown_states_are_served_as_given(sim: Simulator, client: httpx.Client) -> None:
    """A state the SDK does not know yet (e.g. JOB_STATE_WARPING) is still served."""
    sim.add_job("j1", state="WARPING")

    assert "JOB_STATE_WARPING" == client.get(f"{JOBS}/j1").json()["state"]


def test_timestamps_follow_the_injected_clock(clock: FakeClock) -> None:
    """createTime, updateTime and completedTime are start_time plus the clock's progress."""
    sim = Simulator(clock=clock, start_time=START)
    created = sim.add_job("s1", collection=SFT)
    clock.now += 10
    running = sim.set_state("s1", "RUNNING", collection=SFT)
    clock.now += 5
    unchanged = sim.set_state("s1", "RUNNING", collection=SFT)
    clock.now += 5
    completed = sim.set_state("s1", "COMPLETED", collection=SFT)
    clock.now += 5
    resumed = sim.set_state("s1", "RUNNING", collection=SFT)

    assert ("2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z") == (
        created["createTime"],
        created["updateTime"],
    )
    assert "2025-01-01T00:00:10Z" == running["updateTime"] == unchanged["updateTime"]
    assert ("2025-01-01T00:00:20Z", "2025-01-01T00:00:20Z") == (
        completed["updateTime"],
        completed["completedTime"],
    )
    assert "2025-01-01T00:00:25Z" == resumed["updateTime"]
    assert "completedTime" not in resumed


def test_progress_grows_only_while_running_and_stops_at_100(clock: FakeClock) -> None:
    """A progress rate moves percent (and updateTime) with the clock while RUNNING, up to 100."""
    sim = Simulator(clock=clock, start_time=START)
    sim.add_job("s1", collection=SFT, state="RUNNING", progress_rate=10.0)
    clock.now += 2.55
    moving = sim.job("s1", SFT)
    sim.set_state("s1", "PAUSED", collection=SFT)
    clock.now += 100
    paused = sim.job("s1", SFT)
    sim.set_state("s1", "RUNNING", collection=SFT)
    clock.now += 100
    capped = sim.job("s1", SFT)

    assert (25, "2025-01-01T00:00:02.500000Z") == (
        moving["jobProgress"]["percent"],
        moving["updateTime"],
    )
    assert 25 == paused["jobProgress"]["percent"]
    assert 100 == capped["jobProgress"]["percent"]


def test_set_progress_sets_percent_epoch_and_rate(clock: FakeClock) -> None:
    """set_progress sets percent and epoch now, and a rate that moves it later."""
    sim = Simulator(clock=clock)
    sim.add_job("b1", collection="batchInferenceJobs", state="RUNNING")

    set_now = sim.set_progress("b1", 40, collection="batchInferenceJobs", epoch=2, rate=1.0)
    clock.now += 10
    later = sim.job("b1", "batchInferenceJobs")

    assert (40, 2) == (set_now["jobProgress"]["percent"], set_now["jobProgress"]["epoch"])
    assert (50, 500) == (
        later["jobProgress"]["percent"],
        later["jobProgress"]["totalProcessedRequests"],
    )


@pytest.mark.parametrize(
    ("collection", "knob"),
    [
        ("dpoJobs", {"progress": 10}),
        ("evaluationJobs", {"progress_rate": 1.0}),
        ("dpoJobs", {"replica_count": 2}),
        ("reinforcementFineTuningJobs", {"estimated_cost_usd": 1.0}),
        ("supervisedFineTuningJobs", {"accelerator_seconds": 5}),
        ("models", {"model": "m"}),
    ],
)
def test_knobs_the_sdk_model_lacks_are_refused(collection: str, knob: dict[str, Any]) -> None:
    """A knob the collection's model has no field for raises ValueError."""
    with pytest.raises(ValueError, match="has no field for"):
        Simulator().add_job("r1", collection=collection, **knob)


def test_set_progress_on_a_kind_without_progress_is_refused() -> None:
    """DPO jobs have no jobProgress, so set_progress refuses them."""
    sim = Simulator()
    sim.add_job("j1")

    with pytest.raises(ValueError, match="no jobProgress"):
        sim.set_progress("j1", 10, collection="dpoJobs")


def test_kind_shapes_differ(sim: Simulator) -> None:
    """SFT is flat, DPO/RFT/RLOR nest trainingConfig, batch and evaluation jobs have neither."""
    shapes = {
        collection: sim.add_job("r1", collection=collection)
        for collection in (
            "dpoJobs",
            SFT,
            "reinforcementFineTuningJobs",
            "rlorTrainerJobs",
            "batchInferenceJobs",
            "evaluationJobs",
        )
    }

    assert {"dpoJobs", "reinforcementFineTuningJobs", "rlorTrainerJobs"} == {
        collection for collection, job in shapes.items() if "trainingConfig" in job
    }
    assert ("baseModel", "dataset") == tuple(
        k for k in ("baseModel", "dataset") if k in shapes[SFT]
    )
    assert {"model", "inputDatasetId", "outputDatasetId"} <= set(shapes["batchInferenceJobs"])
    assert {"evaluator", "inputDataset", "outputDataset"} <= set(shapes["evaluationJobs"])
    assert {"dpoJobs", "reinforcementFineTuningJobs", "rlorTrainerJobs"} == {
        collection for collection, job in shapes.items() if "updateTime" not in job
    }


def test_secrets_are_echoed_where_the_models_have_them(sim: Simulator) -> None:
    """W&B key, signed URLs and deployment route keys appear, so leaks can be tested."""
    sft = sim.add_job("s1", collection=SFT)
    deployment = sim.add_job("d1", collection="deployments")

    assert "sim-wandb-secret" == sft["wandbConfig"]["apiKey"]
    assert fireworks_sim.SIGNED_LOGS_URL == sft["trainerLogsSignedUrl"]
    assert fireworks_sim.SIGNED_METRICS_URL == sft["metricsFileSignedUrl"]
    assert [fireworks_sim.ROUTE_API_KEY] == deployment["directRouteApiKeys"]


def test_read_mask_is_checked_per_collection(sim: Simulator, client: httpx.Client) -> None:
    """jobProgress is an SFT field but not a DPO one, so only the SFT mask is accepted."""
    sim.add_job("j1")
    sim.add_job("s1", collection=SFT, progress=5)

    dpo = client.get(f"{JOBS}/j1", params={"readMask": "jobProgress"})
    sft = client.get(f"/v1/accounts/sim-account/{SFT}/s1", params={"readMask": "jobProgress"})

    assert 400 == dpo.status_code
    assert "invalid readMask path 'jobProgress' for dpoJobs" == dpo.json()["message"]
    assert {"jobProgress": {"percent": 5}} == sft.json()


def test_deleted_deployments_are_listed_only_with_show_deleted(
    sim: Simulator, client: httpx.Client
) -> None:
    """showDeleted=true adds DELETED deployments to the LIST; a GET still finds them."""
    sim.add_job("live", collection="deployments", state="READY")
    sim.add_job("gone", collection="deployments", state="DELETED")
    url = "/v1/accounts/sim-account/deployments"

    default = client.get(url, params={"readMask": "name"}).json()
    shown = client.get(url, params={"readMask": "name", "showDeleted": "true"}).json()

    assert (1, 2) == (default["totalSize"], shown["totalSize"])
    assert "deleteTime" in client.get(f"{url}/gone").json()


def test_removing_an_rlor_trainer_archives_it_first(sim: Simulator) -> None:
    """A removed RLOR trainer shows JOB_STATE_ARCHIVED; removing it again drops it."""
    sim.add_job("t1", collection="rlorTrainerJobs", state="COMPLETED")

    sim.remove_job("t1", "rlorTrainerJobs")
    archived = sim.job("t1", "rlorTrainerJobs")
    sim.remove_job("t1", "rlorTrainerJobs")

    assert "JOB_STATE_ARCHIVED" == archived["state"]
    assert [] == sim.jobs("rlorTrainerJobs")


def test_repeat_cycles_forever_even_after_a_clock_jump(clock: FakeClock) -> None:
    """repeat() replays its steps every period; a huge clock jump lands in the right step."""
    sim = Simulator(clock=clock)
    sim.add_job("e1", collection="evaluators")
    sim.repeat(
        "e1",
        [(0, "BUILDING", "OK", ""), (4, "ACTIVE", "OK", "")],
        period=10,
        collection="evaluators",
    )
    seen = []
    for offset in (1, 5, 11, 15, 1_000_001, 1_000_005):
        clock.now = 1000.0 + offset
        seen.append(sim.job("e1", "evaluators")["state"])

    assert ["BUILDING", "ACTIVE"] * 3 == seen


def test_busy_scenario_keeps_every_collection_moving(clock: FakeClock) -> None:
    """Long after it started, `busy` still changes states and replaces runs in every collection."""
    sim = Simulator(clock=clock)
    scenario(sim, "busy")

    def snapshot() -> dict[str, set[tuple[str, str]]]:
        return {c: {(j["name"], j["state"]) for j in sim.jobs(c)} for c in COLLECTIONS}

    clock.now += 100_000
    snapshots = []
    for _ in range(24):
        snapshots.append(snapshot())
        clock.now += 5
    moved = {c for c in COLLECTIONS if len({frozenset(s[c]) for s in snapshots}) > 1}

    assert set(COLLECTIONS) == moved
    assert all(snapshots[-1][c] for c in COLLECTIONS)
    progress = sim.job("busy-sft", SFT).get("jobProgress", {}).get("percent", 0)
    assert 0 <= progress <= 100


def test_chaos_scenario_mixes_in_seeded_faults(
    monkeypatch: pytest.MonkeyPatch, served: ServedApp, client: httpx.Client, clock: FakeClock
) -> None:
    """`chaos` answers some requests with 500, 503, 429 + Retry-After or a malformed body."""
    # The chaos faults read it from `fireworks_sim.faults`: patch it there.
    monkeypatch.setattr(faults, "CHAOS_SLOW_SECONDS", 0.01)

    def run(seed: int) -> list[tuple[int, str | None, bool]]:
        sim = Simulator(clock=clock)
        served.app = sim
        scenario(sim, "chaos", seed=seed)
        answers = []
        for _ in range(120):
            response = client.get(f"{JOBS}/busy-dpo")
            try:
                response.json()
                parsed = True
            except json.JSONDecodeError:
                parsed = False
            answers.append((response.status_code, response.headers.get("retry-after"), parsed))
        return answers

    first, again, other = run(0), run(0), run(1)

    assert first == again
    assert first != other
    assert {200, 429, 500, 503} == {status for status, _, _ in first}
    assert {"1"} == {retry for status, retry, _ in first if status == 429}
    assert (200, None, False) in first
    assert 60 < sum(status == 200 for status, _, _ in first)


# -- the /_sim/ control API --------------------------------------------------------------


def test_control_endpoints_drive_the_simulator(sim: Simulator, control: httpx.Client) -> None:
    """Jobs, states, scripts and faults can all be set through /_sim/ without a key."""
    created = control.post("/_sim/jobs", json={"job_id": "c1", "state": "RUNNING"})
    moved = control.post(
        "/_sim/jobs/dpoJobs/c1/state",
        json={"state": "FAILED", "status_code": "INTERNAL", "status_message": "boom"},
    )
    scripted = control.post(
        "/_sim/jobs/dpoJobs/c1/script", json={"steps": [[0, "RUNNING", "OK", ""]]}
    )
    listed = control.get("/_sim/jobs/dpoJobs").json()["jobs"]
    faulted = control.post("/_sim/faults", json={"status": 503, "times": 5})
    after_fault = control.get(f"{JOBS}/c1", headers=AUTH).status_code
    cleared = control.delete("/_sim/faults")
    deleted = control.delete("/_sim/jobs/dpoJobs/c1")
    after_delete = control.get(f"{JOBS}/c1", headers=AUTH).status_code
    stats = control.get("/_sim/stats").json()

    assert [200] * 6 == [
        r.status_code for r in (created, moved, scripted, faulted, cleared, deleted)
    ]
    assert "JOB_STATE_RUNNING" == created.json()["state"]
    assert ("JOB_STATE_FAILED", "boom") == (
        moved.json()["state"],
        moved.json()["status"]["message"],
    )
    assert ["JOB_STATE_RUNNING"] == [job["state"] for job in listed]
    assert (503, 404) == (after_fault, after_delete)
    assert {"requests": 2, "jobs": 0, "faults": 0} == stats


@pytest.mark.parametrize(
    ("method", "path", "body", "expected_status"),
    [
        ("POST", "/_sim/jobs", {"job_id": "x", "colour": "red"}, 400),
        ("POST", "/_sim/jobs", {"job_id": "x", "collection": "nope"}, 400),
        ("POST", "/_sim/jobs/dpoJobs/ghost/state", {"state": "RUNNING"}, 404),
        ("DELETE", "/_sim/jobs/dpoJobs/ghost", None, 404),
        ("POST", "/_sim/jobs/dpoJobs/ghost/script", {"steps": "soon"}, 400),
        ("GET", "/_sim/nothing", None, 404),
    ],
    ids=[
        "unknown-kwarg",
        "unknown-collection",
        "state-of-ghost",
        "delete-ghost",
        "bad-steps",
        "no-route",
    ],
)
def test_control_errors(
    sim: Simulator,
    control: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    expected_status: int,
) -> None:
    """Bad control calls answer 400 or 404 with an error body instead of crashing."""
    response = control.request(method, path, json=body)

    assert expected_status == response.status_code
    assert response.json()["message"]


def test_control_endpoints_for_progress_repeat_and_scenario(
    sim: Simulator, control: httpx.Client, clock: FakeClock
) -> None:
    """Progress, repeating cycles, one resource and scenarios can be driven through /_sim/."""
    created = control.post(
        "/_sim/jobs",
        json={"job_id": "s1", "collection": SFT, "state": "RUNNING", "progress": 5},
    )
    progressed = control.post(f"/_sim/jobs/{SFT}/s1/progress", json={"percent": 30, "epoch": 1})
    repeated = control.post(
        f"/_sim/jobs/{SFT}/s1/repeat",
        json={"steps": [[0, "RUNNING", "OK", ""], [5, "COMPLETED", "OK", ""]], "period": 10},
    )
    clock.now += 6
    one = control.get(f"/_sim/jobs/{SFT}/s1")
    loaded = control.post("/_sim/scenario", json={"name": "busy"})
    unknown = control.post("/_sim/scenario", json={"name": "nope"})

    assert [200] * 5 == [r.status_code for r in (created, progressed, repeated, one, loaded)]
    assert {"percent": 30, "epoch": 1} == progressed.json()["jobProgress"]
    assert "JOB_STATE_COMPLETED" == one.json()["state"]
    assert {f"{c}/busy" for c in ("deployments", "evaluators")} <= {
        entry.rsplit("-", 1)[0] for entry in loaded.json()["resources"]
    }
    assert 400 == unknown.status_code


# -- in process and as a process ---------------------------------------------------------


async def test_simulator_works_through_asgi_transport() -> None:
    """The app also serves httpx.ASGITransport in-process, delay faults included."""
    sim = Simulator()
    sim.add_job("j1", state="RUNNING")
    sim.add_fault(delay=0.01)
    transport = httpx.ASGITransport(app=sim)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim", headers=AUTH) as http:
        response = await http.get(f"{JOBS}/j1")

    assert ("JOB_STATE_RUNNING", 1) == (response.json()["state"], sim.request_count)


def test_module_runs_as_a_process_and_stops_on_sigterm() -> None:
    """`python -m fireworks_sim` prints where it listens, serves, and exits 0 on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_")}
    with subprocess.Popen(
        [sys.executable, "-m", "fireworks_sim", "--port", "0", "--jobs", "3"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            base_url = line.split("FIREWORKS_BASE_URL=")[1].split()[0]
            response = httpx.get(f"{base_url}{JOBS}", headers=AUTH, timeout=5)
            process.terminate()
            code = process.wait(timeout=10)
        finally:
            process.kill()

    assert "FIREWORKS_API_KEY=sim-key" in line
    assert 3 == response.json()["totalSize"]
    assert 0 == code


def test_module_serves_the_busy_scenario() -> None:
    """`python -m fireworks_sim --scenario busy` serves every collection."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_")}
    command = [sys.executable, "-m", "fireworks_sim", "--port", "0", "--scenario", "busy"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            base_url = line.split("FIREWORKS_BASE_URL=")[1].split()[0]
            url = f"{base_url}/v1/accounts/sim-account/deployments"
            response = httpx.get(url, headers=AUTH, timeout=5)
            process.terminate()
            code = process.wait(timeout=10)
        finally:
            process.kill()

    assert "(scenario busy)" in line
    assert 2 <= response.json()["totalSize"]
    assert 0 == code


def test_serve_asgi_yields_a_loopback_url() -> None:
    """serve_asgi serves an app on 127.0.0.1 and stops it on exit."""
    sim = Simulator()
    with serve_asgi(sim) as url:
        response = httpx.get(f"{url}/_sim/stats")

    assert url.startswith("http://127.0.0.1:")
    assert {"requests": 0, "jobs": 0, "faults": 0} == response.json()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_sim/stats")


def test_free_tcp_port_is_bindable() -> None:
    """free_tcp_port returns a port in the unprivileged range."""
    assert 1024 < free_tcp_port() < 65536


# -- the apprise receiver ----------------------------------------------------------------

# apprise's PGP support imports the stdlib imghdr module, deprecated since 3.11.
apprise_imghdr = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")


def test_receiver_records_an_apprise_notification() -> None:
    """An apprise json:// notification lands in JsonReceiver.messages with path and auth."""
    with JsonReceiver() as rx:
        notifier = apprise.Apprise()
        assert notifier.add(rx.url("/team", user="bot", password="pw"))

        result = notifier.notify("the body", title="the title")
        messages = rx.wait_for(1, timeout=5)

    assert bool(result)
    assert 1 == len(messages)
    message = messages[0]
    assert ("the title", "the body", "info", "/team") == (
        message["title"],
        message["message"],
        message["type"],
        message["path"],
    )
    assert message["auth"].startswith("Basic ")


def test_receiver_rejects_while_status_is_an_error() -> None:
    """With status 503 apprise reports failure and the post is filed under rejected."""
    with JsonReceiver() as rx:
        rx.status = 503
        notifier = apprise.Apprise()
        notifier.add(rx.url())

        failed = notifier.notify("lost", title="t")
        rx.status = 200
        delivered = notifier.notify("kept", title="t")

        assert not bool(failed)
        assert bool(delivered)
        assert ["kept"] == [m["message"] for m in rx.messages]
        assert ["lost"] == [m["message"] for m in rx.rejected]


def test_receiver_wait_for_times_out_with_what_it_got() -> None:
    """wait_for raises AssertionError naming the count when too few posts arrive."""
    with JsonReceiver() as rx:
        started = time.monotonic()
        with pytest.raises(AssertionError, match="expected 1 notification"):
            rx.wait_for(1, timeout=0.1)

    assert time.monotonic() - started < 5
