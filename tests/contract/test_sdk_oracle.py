"""The simulator's answers, checked against the official SDK's models and driven by its client.

Run `python -m tests.contract.test_sdk_oracle --count` to run these tests and print, per collection,
how many simulator answers were validated against the SDK and how many HTTP requests the
SDK client made.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import fireworks
import fireworks.types as fw_types
import httpx
import pytest

from fireworks_sim import (
    ACCOUNT_STATES,
    COMPLETED_TIME_COLLECTIONS,
    FIELDS,
    FINAL_STATES,
    GRPC_CODES,
    INITIAL_STATES,
    STATES,
    SUSPEND_STATES,
    Simulator,
    scenario,
)
from fireworks_sim.shapes import ACCOUNT_FIELDS
from tests.support.sdk_oracle import (
    MODELS,
    SDK_CALLS,
    VALIDATED,
    aliases,
    literal_values,
    validate,
)
from tests.support.servers import FakeClock, ServedApp
from watcher.core.kinds import JobKind, short_state
from watcher.sources.parse import parse_job

ACCOUNT = "sim-account"
KEY = "sim-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
COLLECTIONS = list(MODELS)
#: Collection -> the official client's accessor for it.
ACCESSORS: dict[str, str] = {
    "dpoJobs": "dpo_jobs",
    "supervisedFineTuningJobs": "supervised_fine_tuning_jobs",
    "reinforcementFineTuningJobs": "reinforcement_fine_tuning_jobs",
    "rlorTrainerJobs": "reinforcement_fine_tuning_steps",
    "batchInferenceJobs": "batch_inference_jobs",
    "evaluationJobs": "evaluation_jobs",
    "evaluators": "evaluators",
    "deployments": "deployments",
    "deployedModels": "lora",
    "models": "models",
    "datasets": "datasets",
}
#: A few fields of each collection, nested paths included. Required fields are always
#: named: an answer without them cannot be valid for the SDK model.
FEW_FIELDS: dict[str, str] = {
    "dpoJobs": "name,state,dataset,trainingConfig.baseModel",
    "supervisedFineTuningJobs": "name,state,dataset,jobProgress.percent,estimatedCost",
    "reinforcementFineTuningJobs": "name,state,dataset,evaluator,acceleratorSeconds",
    "rlorTrainerJobs": "name,state,jobProgress,keepAlive",
    "batchInferenceJobs": "name,state,model,jobProgress.percent",
    "evaluationJobs": "name,state,evaluator,inputDataset,outputDataset",
    "evaluators": "name,state,status.code",
    "deployments": "name,state,baseModel,replicaCount",
    "deployedModels": "name,state,model,deployment",
    "models": "name,state,peftDetails",
    "datasets": "name,state,exampleCount",
}
#: Extra resources per collection that switch on optional sub-objects.
RICH: dict[str, list[dict[str, Any]]] = {
    "dpoJobs": [{"state": "RUNNING", "wandb": False}, {"state": "RUNNING", "epochs": 3}],
    "supervisedFineTuningJobs": [
        {"state": "RUNNING", "progress": 40, "progress_rate": 2.0, "epoch": 1},
        {"state": "COMPLETED", "progress": 100, "estimated_cost_usd": 12.5},
        {"state": "RUNNING", "estimated_cost_usd": 0.25, "wandb": False},
    ],
    "reinforcementFineTuningJobs": [
        {"state": "RUNNING", "progress": 10, "progress_rate": 1.0, "epoch": 2},
        {"state": "CANCELLED", "accelerator_seconds": 3600, "evaluator": "accounts/a/evaluators/e"},
    ],
    "rlorTrainerJobs": [
        {"state": "RUNNING", "progress": 75, "progress_rate": 0.5},
        {
            "state": "COMPLETED",
            "accelerator_seconds": {"NVIDIA_A100_80GB": 10, "NVIDIA_H100_80GB": 20},
        },
    ],
    "batchInferenceJobs": [
        {"state": "RUNNING", "progress": 55, "progress_rate": 3.0},
        {"state": "COMPLETED", "progress": 100, "model": "accounts/fireworks/models/qwen3-8b"},
    ],
    "evaluationJobs": [{"state": "COMPLETED", "evaluator": "accounts/a/evaluators/e"}],
    "evaluators": [{"state": "BUILD_FAILED", "status_code": "FAILED_PRECONDITION"}],
    "deployments": [
        {"state": "READY", "replica_count": 3, "model": "accounts/fireworks/models/qwen3-8b"},
        {"state": "UPDATING", "replica_count": 0},
    ],
    "deployedModels": [
        {
            "state": "DEPLOYED",
            "model": "accounts/a/models/m",
            "deployment": "accounts/a/deployments/d",
        }
    ],
    "models": [{"state": "READY", "base_model": "accounts/fireworks/models/qwen3-8b"}],
    "datasets": [{"state": "READY", "display_name": "A ready dataset"}],
}
_FAILURE_CODES = {"FAILED": "INTERNAL", "CANCELLED": "CANCELLED", "EXPIRED": "DEADLINE_EXCEEDED"}


@pytest.fixture(scope="module")
def served() -> Iterator[ServedApp]:
    # One uvicorn per module; each test swaps in a fresh simulator.
    with ServedApp(Simulator()) as app:
        yield app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(served: ServedApp, clock: FakeClock) -> Simulator:
    simulator = Simulator(api_key=KEY, account_id=ACCOUNT, clock=clock)
    served.app = simulator
    return simulator


@pytest.fixture(scope="module")
def http(served: ServedApp) -> Iterator[httpx.Client]:
    # trust_env=False: no proxy from the environment may see loopback traffic.
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=5, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(served: ServedApp) -> Iterator[fireworks.Fireworks]:
    with (
        httpx.Client(trust_env=False, timeout=5) as transport,
        fireworks.Fireworks(
            api_key=KEY,
            account_id=ACCOUNT,
            base_url=served.url,
            max_retries=0,
            http_client=transport,
        ) as client,
    ):
        yield client


def fill(sim: Simulator, clock: FakeClock, collection: str) -> dict[str, str]:
    """Add one resource per SDK state plus the RICH ones; return id -> expected state."""
    expected: dict[str, str] = {}
    for index, state in enumerate(literal_values(MODELS[collection][0], "state")):
        bare = state.removeprefix("JOB_STATE_")
        job_id = f"s{index:02d}-{bare.lower().replace('_', '-')}"
        code = _FAILURE_CODES.get(bare, "OK")
        sim.add_job(
            job_id,
            collection=collection,
            state=state,
            status_code=code,
            status_message="" if code == "OK" else f"simulated {bare.lower()}",
        )
        expected[job_id] = state
    for index, options in enumerate(RICH[collection]):
        job_id = f"rich-{index}"
        document = sim.add_job(job_id, collection=collection, **options)
        expected[job_id] = document["state"]
    clock.now += 7.5  # progress moves and timestamps differ from the create times
    return expected


def name_of(collection: str, job_id: str) -> str:
    return f"accounts/{ACCOUNT}/{collection}/{job_id}"


def check_proto3(document: object, path: str = "$") -> None:
    """proto3 JSON never sends null, an empty string, list or object (status.message aside)."""
    if isinstance(document, dict):
        for key, value in document.items():
            if f"{path}.{key}" != "$.status.message":
                assert value not in (None, "", [], {}), f"{path}.{key} is empty: {value!r}"
            check_proto3(value, f"{path}.{key}")
    elif isinstance(document, list):
        for index, item in enumerate(document):
            check_proto3(item, f"{path}[{index}]")


def check_masked(document: dict[str, Any], read_mask: str) -> None:
    """Only the masked fields are present, and a dotted path keeps only its sub-field."""
    paths = read_mask.split(",")
    assert set(document) <= {path.split(".")[0] for path in paths}
    assert {"name", "state"} <= set(document)
    for path in paths:
        head, _, tail = path.partition(".")
        if tail and head in document:
            assert {tail} == set(document[head])


def list_all(http: httpx.Client, collection: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Every LIST item, following nextPageToken; each page envelope is checked too."""
    items: list[dict[str, Any]] = []
    token = ""
    while True:
        page_params = params | ({"pageToken": token} if token else {})
        response = http.get(f"/v1/accounts/{ACCOUNT}/{collection}", params=page_params)
        assert 200 == response.status_code, response.text
        page = response.json()
        assert set(page) <= {collection, "nextPageToken", "totalSize"}
        items += page.get(collection, [])
        token = page.get("nextPageToken", "")
        if not token:
            return items


# -- a. answers validate against the SDK models ----------------------------------------


MASKS = ["none", "star", "few"]


def mask_param(collection: str, mask: str) -> dict[str, str]:
    return {"none": {}, "star": {"readMask": "*"}, "few": {"readMask": FEW_FIELDS[collection]}}[
        mask
    ]


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("collection", COLLECTIONS)
def test_every_get_validates_against_the_sdk_model(
    sim: Simulator, clock: FakeClock, http: httpx.Client, collection: str, mask: str
) -> None:
    """A GET of a resource in every state (and with every knob) is a valid SDK model."""
    expected = fill(sim, clock, collection)

    for job_id, state in expected.items():
        response = http.get(
            f"/v1/accounts/{ACCOUNT}/{collection}/{job_id}", params=mask_param(collection, mask)
        )
        assert 200 == response.status_code, response.text
        document = response.json()
        validate(MODELS[collection][0], document, label=collection)
        check_proto3(document)
        assert (name_of(collection, job_id), state) == (document["name"], document["state"])
        if mask == "few":
            check_masked(document, FEW_FIELDS[collection])
        elif collection in COMPLETED_TIME_COLLECTIONS:
            assert (state in FINAL_STATES) == ("completedTime" in document)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("collection", COLLECTIONS)
def test_every_list_item_validates_against_the_sdk_model(
    sim: Simulator, clock: FakeClock, http: httpx.Client, collection: str, mask: str
) -> None:
    """Every LIST item, across pages, is a valid SDK list-item model."""
    expected = fill(sim, clock, collection)
    params = {"pageSize": "5", "showDeleted": "true"} | mask_param(collection, mask)

    items = list_all(http, collection, params)

    for document in items:
        validate(MODELS[collection][1], document, label=collection)
        check_proto3(document)
        if mask == "few":
            check_masked(document, FEW_FIELDS[collection])
    assert {name_of(collection, job_id): state for job_id, state in expected.items()} == {
        document["name"]: document["state"] for document in items
    }


def test_busy_scenario_stays_sdk_valid_as_it_moves(
    sim: Simulator, clock: FakeClock, http: httpx.Client
) -> None:
    """Over ten simulated minutes of `busy`, every LIST item of every collection validates."""
    scenario(sim, "busy")
    seen: dict[str, set[str]] = {collection: set() for collection in COLLECTIONS}

    for _ in range(60):
        for collection in COLLECTIONS:
            for document in list_all(http, collection, {"pageSize": "200", "showDeleted": "1"}):
                state = document["state"]
                seen[collection].add(state)
                if state == "JOB_STATE_ARCHIVED":  # deleted RLOR trainers; not in the Literal
                    document = {key: value for key, value in document.items() if key != "state"}
                validate(MODELS[collection][1], document, label=collection)
        clock.now += 10

    assert all(len(states) >= 2 for states in seen.values()), seen


def test_read_mask_fields_are_exactly_the_sdk_fields() -> None:
    """The simulator's per-collection field lists (readMask) match the SDK models' fields."""
    for collection, (get_model, list_model) in MODELS.items():
        assert (aliases(get_model), aliases(list_model)) == (
            set(FIELDS[collection]),
            set(FIELDS[collection]),
        ), collection


def test_known_states_are_exactly_the_sdk_literals() -> None:
    """STATES lists each SDK model's state Literal, and the initial state is one of them."""
    for collection, (get_model, list_model) in MODELS.items():
        assert (literal_values(get_model, "state"), literal_values(list_model, "state")) == (
            STATES[collection],
            STATES[collection],
        ), collection
        assert INITIAL_STATES[collection] in STATES[collection]


# -- b. the official client against the simulator --------------------------------------


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_official_client_gets_and_lists_every_collection(
    sim: Simulator, clock: FakeClock, sdk: fireworks.Fireworks, collection: str
) -> None:
    """The SDK's get() and auto-paginating list(page_size=2) return the right ids and states."""
    expected = fill(sim, clock, collection)
    accessor = getattr(sdk, ACCESSORS[collection])
    sim.clear_requests()

    got = {job_id: accessor.get(job_id) for job_id in expected}
    masked = accessor.get("rich-0", read_mask="name,state")
    extra = {"show_deleted": True} if collection == "deployments" else {}
    listed = list(accessor.list(page_size=2, **extra))

    SDK_CALLS[collection] += sim.request_count
    assert {name_of(collection, j): s for j, s in expected.items()} == {
        item.name: item.state for item in got.values()
    }
    assert (name_of(collection, "rich-0"), expected["rich-0"]) == (masked.name, masked.state)
    assert sorted(name_of(collection, job_id) for job_id in expected) == [
        item.name for item in listed
    ]
    assert [expected[item.name.rsplit("/", 1)[1]] for item in listed] == [
        item.state for item in listed
    ]
    pages = -(-len(expected) // 2)
    assert len(expected) + 1 + pages == sim.request_count


def test_official_client_parses_nested_objects(
    sim: Simulator, clock: FakeClock, sdk: fireworks.Fireworks
) -> None:
    """Progress, cost, accelerator seconds and replica counts come through the SDK typed."""
    sim.add_job(
        "sft",
        collection="supervisedFineTuningJobs",
        state="RUNNING",
        progress=10,
        progress_rate=2.0,
        epoch=1,
        estimated_cost_usd=12.5,
    )
    sim.add_job(
        "rft", collection="reinforcementFineTuningJobs", state="CANCELLED", accelerator_seconds=90
    )
    sim.add_job("dep", collection="deployments", state="READY", replica_count=2)
    clock.now += 5

    sft = sdk.supervised_fine_tuning_jobs.get("sft")
    rft = sdk.reinforcement_fine_tuning_jobs.get("rft")
    deployment = sdk.deployments.get("dep")

    SDK_CALLS["supervisedFineTuningJobs"] += 1
    SDK_CALLS["reinforcementFineTuningJobs"] += 1
    SDK_CALLS["deployments"] += 1
    assert sft.job_progress is not None
    assert sft.estimated_cost is not None
    assert (20, 1) == (sft.job_progress.percent, sft.job_progress.epoch)
    assert ("USD", "12", 500_000_000) == (
        sft.estimated_cost.currency_code,
        sft.estimated_cost.units,
        sft.estimated_cost.nanos,
    )
    assert {"NVIDIA_H100_80GB": "90"} == rft.accelerator_seconds
    assert (2, ["sim-route-secret"]) == (deployment.replica_count, deployment.direct_route_api_keys)


def test_official_client_lists_deleted_deployments_only_on_request(
    sim: Simulator, sdk: fireworks.Fireworks
) -> None:
    """A DELETED deployment is listed only with show_deleted=True."""
    sim.add_job("live", collection="deployments", state="READY")
    sim.add_job("gone", collection="deployments", state="DELETED")

    default = [item.name for item in sdk.deployments.list()]
    with_deleted = [item.name for item in sdk.deployments.list(show_deleted=True)]

    SDK_CALLS["deployments"] += 2
    assert [name_of("deployments", "live")] == default
    assert [name_of("deployments", "gone"), name_of("deployments", "live")] == with_deleted


# -- the watcher's own readMask ----------------------------------------------------------


@pytest.mark.parametrize("kind", [k for k in JobKind if k.spec.listable], ids=str)
def test_answers_to_the_watchers_read_mask_validate_and_parse(
    sim: Simulator, clock: FakeClock, http: httpx.Client, kind: JobKind
) -> None:
    """GET and LIST with the client's own readMask are valid SDK models (less what the mask
    leaves out), hold only masked fields, and the client's parser reads their state from them."""
    collection = kind.collection
    expected = fill(sim, clock, collection)
    params = {"readMask": kind.spec.read_mask}
    masked = set(kind.spec.read_mask.split(","))

    items = list_all(http, collection, params | {"pageSize": "7", "showDeleted": "true"})
    gets = [
        http.get(f"/v1/accounts/{ACCOUNT}/{collection}/{job_id}", params=params).json()
        for job_id in expected
    ]

    for document in [*items, *gets]:
        validate(MODELS[collection][1], document, label=collection, mask=kind.spec.read_mask)
        assert set(document) <= masked
        snapshot = parse_job(document, kind=kind, account_id=ACCOUNT)
        assert short_state(document["state"]) == snapshot.state
    assert len(expected) == len(items) == len(gets)


def test_masked_validation_still_refuses_unknown_keys() -> None:
    """The readMask allowance excuses missing keys only, never an unknown or mistyped one."""
    model = MODELS["reinforcementFineTuningJobs"][0]
    mask = "name,state,dataset"

    validate(model, {"name": "x", "dataset": "d"}, mask=mask)  # evaluator masked out
    with pytest.raises(AssertionError, match="evaluator"):
        validate(model, {"name": "x", "dataset": "d"})
    with pytest.raises(AssertionError, match="bogus"):
        validate(model, {"name": "x", "dataset": "d", "bogus": 1}, mask=mask)
    with pytest.raises(AssertionError, match="dataset"):
        validate(model, {"name": "x"}, mask=mask)


# -- the account itself (`GET /v1/accounts/{id}`, no LIST) -----------------------------

#: What the account's GET answers: the SDK's `Account`.
ACCOUNT_MODEL = fw_types.Account
ACCOUNT_MASKS = {"none": {}, "star": {"readMask": "*"}, "watcher": {"readMask": "WATCHER"}}


def account_params(mask: str) -> dict[str, str]:
    params = ACCOUNT_MASKS[mask]
    return {"readMask": JobKind.ACCOUNT.spec.read_mask} if mask == "watcher" else params


@pytest.mark.parametrize("mask", list(ACCOUNT_MASKS))
def test_the_account_validates_against_the_sdk_model_in_every_suspend_state(
    sim: Simulator, clock: FakeClock, http: httpx.Client, mask: str
) -> None:
    """`GET /v1/accounts/{id}`, healthy, in each suspend state the SDK knows and back, is a
    valid `Account` (less what the watcher's readMask leaves out), and the watcher's parser
    reads its suspendState and state from it."""
    states = literal_values(ACCOUNT_MODEL, "suspend_state")
    seen: list[tuple[str, str, str]] = []

    for state in states:
        if state == "UNSUSPENDED":
            sim.unsuspend()
        else:
            sim.suspend(state=state, status_message=f"simulated {state.lower()}")
        clock.now += 1.5
        response = http.get(f"/v1/accounts/{ACCOUNT}", params=account_params(mask))
        assert 200 == response.status_code, response.text
        document = response.json()
        read_mask = JobKind.ACCOUNT.spec.read_mask if mask == "watcher" else None
        validate(ACCOUNT_MODEL, document, label="accounts", mask=read_mask)
        check_proto3(document)
        if read_mask is not None:
            assert set(document) <= set(read_mask.split(","))
        snapshot = parse_job(document, kind=JobKind.ACCOUNT, account_id=ACCOUNT)
        seen.append((snapshot.ref.job_id, snapshot.state, snapshot.account_state))

    assert [(ACCOUNT, state, "READY") for state in states] == seen


def test_the_account_fields_and_states_are_exactly_the_sdk_ones() -> None:
    """The simulator's account fields (its readMask), states and suspend states are the
    SDK `Account`'s; the watcher's table knows every suspend state."""
    assert ACCOUNT_FIELDS == aliases(ACCOUNT_MODEL)
    assert ACCOUNT_STATES == literal_values(ACCOUNT_MODEL, "state")
    assert SUSPEND_STATES == literal_values(ACCOUNT_MODEL, "suspend_state")
    assert set(SUSPEND_STATES) == set(JobKind.ACCOUNT.spec.states)


def test_official_client_gets_the_account_and_its_suspension(
    sim: Simulator, sdk: fireworks.Fireworks
) -> None:
    """The SDK's `accounts.get()` reads the account, suspended and again not; a readMask the
    model lacks is refused with 400, and another account with 403."""
    healthy = sdk.accounts.get()
    sim.suspend(state="MONTHLY_SPEND_LIMIT_EXCEEDED")
    suspended = sdk.accounts.get(read_mask=JobKind.ACCOUNT.spec.read_mask)
    sim.unsuspend()
    back = sdk.accounts.get()
    with pytest.raises(fireworks.BadRequestError):
        sdk.accounts.get(read_mask="name,dataset")
    with pytest.raises(fireworks.PermissionDeniedError):
        sdk.accounts.get(account_id="someone-else")

    SDK_CALLS["accounts"] += 5
    assert [
        (f"accounts/{ACCOUNT}", "READY", "UNSUSPENDED"),
        (f"accounts/{ACCOUNT}", "READY", "MONTHLY_SPEND_LIMIT_EXCEEDED"),
        (f"accounts/{ACCOUNT}", "READY", "UNSUSPENDED"),
    ] == [(a.name, a.state, a.suspend_state) for a in (healthy, suspended, back)]


# -- c. an unknown readMask path -------------------------------------------------------


def foreign_field(collection: str) -> str:
    """A field of another collection's model that this collection's model lacks."""
    others: set[str] = set().union(*(FIELDS[c] for c in COLLECTIONS if c != collection))
    return min(others - FIELDS[collection])


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_unknown_read_mask_path_is_refused(
    sim: Simulator, http: httpx.Client, sdk: fireworks.Fireworks, collection: str
) -> None:
    """A readMask path outside the collection's model answers 400, code 3, naming readMask."""
    sim.add_job("j1", collection=collection)
    base = f"/v1/accounts/{ACCOUNT}/{collection}"

    answers = [
        http.get(f"{base}/j1", params={"readMask": "name,bogusField"}),
        http.get(base, params={"readMask": f"name,{foreign_field(collection)}"}),
        http.get(base, params={"read_mask": "bogus.deeper"}),
    ]
    with pytest.raises(fireworks.BadRequestError) as refused:
        getattr(sdk, ACCESSORS[collection]).get("j1", read_mask="nope")

    SDK_CALLS[collection] += 1
    for response in answers:
        body = response.json()
        assert (400, GRPC_CODES["INVALID_ARGUMENT"], []) == (
            response.status_code,
            body["code"],
            body["details"],
        )
        assert "readMask" in body["message"]
        assert collection in body["message"]
    assert 400 == refused.value.status_code


# -- d. the validator can fail ---------------------------------------------------------

DPO_OK: dict[str, Any] = {"dataset": "accounts/a/datasets/d", "state": "JOB_STATE_RUNNING"}


@pytest.mark.parametrize(
    ("model", "payload", "message"),
    [
        (MODELS["dpoJobs"][0], DPO_OK | {"colour": "red"}, r"\$\.colour: unknown key"),
        (
            MODELS["dpoJobs"][0],
            DPO_OK | {"trainingConfig": {"baseModel": "m", "colour": 1}},
            r"\$\.trainingConfig\.colour: unknown key",
        ),
        (
            MODELS["evaluators"][0],
            {"criteria": [{"name": "c", "codeSnippets": {"language": "py", "x": 1}}]},
            r"\$\.criteria\[0\]\.codeSnippets\.x: unknown key",
        ),
        (
            MODELS["rlorTrainerJobs"][0],
            {"acceleratorSeconds": {"NVIDIA_H100_80GB": 5}},
            r"acceleratorSeconds\.NVIDIA_H100_80GB",
        ),
        (MODELS["dpoJobs"][0], {"state": "JOB_STATE_RUNNING"}, r"\$\.dataset: required"),
        (
            MODELS["evaluationJobs"][1],
            {"evaluator": "e", "inputDataset": "i"},
            r"\$\.outputDataset: required",
        ),
        (
            MODELS["supervisedFineTuningJobs"][0],
            DPO_OK | {"jobProgress": {"percent": "5"}},
            r"jobProgress\.percent",
        ),
        (MODELS["dpoJobs"][0], DPO_OK | {"createTime": 17}, r"createTime"),
        (MODELS["dpoJobs"][0], DPO_OK | {"state": "JOB_STATE_WARPING"}, r"\$\.state"),
        (MODELS["deployments"][0], {"baseModel": "m", "state": "JOB_STATE_RUNNING"}, r"state"),
        (MODELS["dpoJobs"][0], DPO_OK | {"status": {"code": "SO_SO"}}, r"status\.code"),
        (MODELS["models"][0], {"peftDetails": {"baseModel": "m", "r": 8}}, r"targetModules"),
        (MODELS["dpoJobs"][0], ["not", "an", "object"], r"expected an object"),
    ],
    ids=[
        "unknown-key",
        "unknown-nested-key",
        "unknown-key-in-list-item",
        "int64-sent-as-number",
        "missing-required",
        "missing-required-list-model",
        "number-sent-as-string",
        "time-as-number",
        "state-outside-literal",
        "state-of-another-enum",
        "status-code-outside-literal",
        "missing-nested-required",
        "not-an-object",
    ],
)
def test_validator_refuses_what_the_sdk_model_refuses(
    model: type[Any], payload: object, message: str
) -> None:
    """Unknown keys, missing required keys, wrong types and unknown enum values all fail."""
    with pytest.raises(AssertionError, match=message):
        validate(model, payload, label="validator-self-test")


def test_validator_accepts_a_minimal_valid_payload() -> None:
    """The validator is not simply refusing everything."""
    validate(MODELS["dpoJobs"][0], DPO_OK, label="validator-self-test")


# -- the counts ------------------------------------------------------------------------


def print_counts() -> None:
    """Per collection: answers validated against the SDK, and SDK client HTTP requests."""
    print(f"{'collection':32} {'validated':>10} {'sdk calls':>10}")
    every = [*COLLECTIONS, "accounts"]
    for collection in every:
        print(f"{collection:32} {VALIDATED[collection]:>10} {SDK_CALLS[collection]:>10}")
    print(f"{'total':32} {sum(VALIDATED[c] for c in every):>10} {sum(SDK_CALLS.values()):>10}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--count"]:
        sys.exit("usage: python -m tests.contract.test_sdk_oracle --count")
    # This module imported httpx (so anyio) before pytest could register its rewriting.
    quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    code = pytest.main([__file__, "-q", "-p", "no:cacheprovider", *quiet])
    print_counts()
    sys.exit(int(code))
