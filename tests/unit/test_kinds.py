"""The resource kinds table: states and their meaning, `watch` exits, read masks, parsing.

The read masks and the fields each kind reads are checked against the official SDK's models
(`fireworks-ai`), an oracle nobody here wrote.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import pytest
from fireworks import types as sdk
from fireworks.types.shared import DeployedModel
from pydantic import BaseModel

from watcher.core.errors import PayloadError
from watcher.core.kinds import (
    ALL_STATES,
    KINDS,
    JobKind,
    Meaning,
    meaning_of,
    short_state,
    watch_exit,
)
from watcher.core.model import JobRef, JobSnapshot
from watcher.sources.parse import parse_job

#: Each kind's SDK model: what a GET answers.
SDK_MODELS: dict[JobKind, type[BaseModel]] = {
    JobKind.DPO: sdk.DpoJob,
    JobKind.SFT: sdk.SupervisedFineTuningJob,
    JobKind.RFT: sdk.ReinforcementFineTuningJob,
    JobKind.RLOR: sdk.ReinforcementFineTuningStep,
    JobKind.BATCH_INFERENCE: sdk.BatchInferenceJob,
    JobKind.EVALUATION: sdk.EvaluationJobGetResponse,
    JobKind.EVALUATOR: sdk.EvaluatorGetResponse,
    JobKind.DEPLOYMENT: sdk.Deployment,
    JobKind.DEPLOYED_MODEL: DeployedModel,
    JobKind.MODEL: sdk.Model,
    JobKind.DATASET: sdk.Dataset,
    JobKind.ACCOUNT: sdk.Account,
}


def aliases(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON names of a model's fields, with each field's annotation."""
    return {field.alias or name: field.annotation for name, field in model.model_fields.items()}


def inner_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside `Optional[Model]`, or None."""
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def sdk_states(kind: JobKind) -> set[str]:
    """The state names the SDK model allows in the kind's state field, in short form."""
    literal = typing.get_args(aliases(SDK_MODELS[kind])[kind.spec.state_key])[0]
    return {short_state(value) for value in typing.get_args(literal)}


class TestTable:
    """The table itself."""

    def test_every_kind_has_a_descriptor(self) -> None:
        """Each config name has exactly one descriptor, and collections are unique."""
        assert set(JobKind) == set(KINDS) == set(SDK_MODELS)
        assert [k.value for k in JobKind] == [spec.name for spec in KINDS.values()]
        assert len(KINDS) == len({spec.collection for spec in KINDS.values()})

    @pytest.mark.parametrize("kind", list(JobKind), ids=str)
    def test_states_are_the_sdk_enum(self, kind: JobKind) -> None:
        """Each kind knows every state of its SDK model's enum; beyond it only the two
        tombstones that the v5.10 REST docs add to JobState (SDK 1.2.30 predates them)."""
        ours = set(KINDS[kind].states)
        newer = {"DELETED", "ARCHIVED"} if "RUNNING" in ours else set()

        assert sdk_states(kind) == ours - newer

    @pytest.mark.parametrize("kind", list(JobKind), ids=str)
    def test_read_mask_names_only_sdk_fields(self, kind: JobKind) -> None:
        """Every readMask path, and every nested field read, exists in the kind's SDK model."""
        fields = aliases(SDK_MODELS[kind])
        mask = kind.spec.read_mask.split(",")

        assert [] == [path for path in mask if path not in fields]
        assert len(mask) == len(set(mask))
        assert {"name", "state", "status"} <= set(mask)

    @pytest.mark.parametrize("kind", list(JobKind), ids=str)
    def test_nested_fields_exist(self, kind: JobKind) -> None:
        """A field read inside an object (`trainingConfig.baseModel`) exists in that object."""
        top = aliases(SDK_MODELS[kind])
        for name, field in kind.spec.fields.items():
            nested = inner_model(top[field.key])
            if nested is None:
                continue
            probe = parse_job(
                {
                    "name": kind.spec.resource_name("a", "y"),
                    field.key: dict.fromkeys(aliases(nested), "1"),
                },
                kind=kind,
                account_id="a",
            )
            # Every sub-field present as "1": a reader of a missing sub-field gives "".
            assert "" != getattr(probe, name), f"{kind}: {name} reads no field of {field.key}"

    def test_snapshot_has_every_field(self) -> None:
        """Every field some kind reads is a snapshot field."""
        snapshot_fields = set(JobSnapshot.__dataclass_fields__)
        read = {name for spec in KINDS.values() for name in spec.fields}

        assert [] == sorted(read - snapshot_fields)

    def test_all_states(self) -> None:
        """Config accepts every documented state of every kind, and NOT_FOUND."""
        assert {"READY", "ACTIVE", "DEPLOYED", "BUILD_FAILED", "NOT_FOUND", "COMPLETED"} <= (
            ALL_STATES
        )


MEANINGS = [
    (JobKind.DPO, "RUNNING", Meaning.ACTIVE),
    (JobKind.DPO, "COMPLETED", Meaning.SUCCESS),
    (JobKind.DPO, "EARLY_STOPPED", Meaning.SUCCESS),
    (JobKind.SFT, "FAILED", Meaning.FAILURE),
    (JobKind.SFT, "CANCELLED", Meaning.FAILURE),
    (JobKind.RFT, "EXPIRED", Meaning.FAILURE),
    (JobKind.RFT, "PAUSED", Meaning.ATTENTION),
    (JobKind.RLOR, "ARCHIVED", Meaning.TOMBSTONE),
    (JobKind.BATCH_INFERENCE, "DELETED", Meaning.TOMBSTONE),
    (JobKind.EVALUATION, "NOT_FOUND", Meaning.TOMBSTONE),
    (JobKind.EVALUATION, "WARPING", Meaning.ACTIVE),
    (JobKind.EVALUATOR, "BUILDING", Meaning.ACTIVE),
    (JobKind.EVALUATOR, "ACTIVE", Meaning.SUCCESS),
    (JobKind.EVALUATOR, "BUILD_FAILED", Meaning.FAILURE),
    (JobKind.DEPLOYMENT, "CREATING", Meaning.ACTIVE),
    (JobKind.DEPLOYMENT, "READY", Meaning.SUCCESS),
    (JobKind.DEPLOYMENT, "UPDATING", Meaning.ACTIVE),
    (JobKind.DEPLOYMENT, "DELETED", Meaning.TOMBSTONE),
    (JobKind.DEPLOYMENT, "FAILED", Meaning.FAILURE),
    (JobKind.DEPLOYED_MODEL, "DEPLOYED", Meaning.SUCCESS),
    (JobKind.DEPLOYED_MODEL, "UNDEPLOYING", Meaning.ACTIVE),
    (JobKind.MODEL, "UPLOADING", Meaning.ACTIVE),
    (JobKind.MODEL, "READY", Meaning.SUCCESS),
    (JobKind.DATASET, "READY", Meaning.SUCCESS),
    (JobKind.DATASET, "UNSPECIFIED", Meaning.ACTIVE),
    (JobKind.ACCOUNT, "UNSUSPENDED", Meaning.SUCCESS),
    (JobKind.ACCOUNT, "FAILED_PAYMENTS", Meaning.FAILURE),
    (JobKind.ACCOUNT, "CREDIT_DEPLETED", Meaning.FAILURE),
    (JobKind.ACCOUNT, "MONTHLY_SPEND_LIMIT_EXCEEDED", Meaning.FAILURE),
    (JobKind.ACCOUNT, "BLOCKED_BY_ABUSE_RULE", Meaning.FAILURE),
    # A suspend state the SDK does not know yet is a suspension too, never "active".
    (JobKind.ACCOUNT, "SUSPENDED_FOR_A_NEW_REASON", Meaning.FAILURE),
    (JobKind.ACCOUNT, "NOT_FOUND", Meaning.TOMBSTONE),
]


@pytest.mark.parametrize(("kind", "state", "expected"), MEANINGS, ids=lambda v: str(v))
def test_meaning(kind: JobKind, state: str, expected: Meaning) -> None:
    """Each state means what the kind says; unknown states are active, a 404 a tombstone."""
    assert expected == kind.spec.meaning(state)


@pytest.mark.parametrize(
    ("kind", "state", "expected"),
    [
        *((JobKind.SFT, s, 0) for s in ("COMPLETED", "EARLY_STOPPED")),
        (JobKind.DEPLOYMENT, "READY", 0),
        (JobKind.EVALUATOR, "ACTIVE", 0),
        (JobKind.DEPLOYED_MODEL, "DEPLOYED", 0),
        (JobKind.MODEL, "READY", 0),
        *((JobKind.DPO, s, 1) for s in ("FAILED", "CANCELLED", "EXPIRED", "NOT_FOUND", "DELETED")),
        (JobKind.EVALUATOR, "BUILD_FAILED", 1),
        (JobKind.DEPLOYMENT, "FAILED", 1),
        (JobKind.RLOR, "ARCHIVED", 1),
        *((JobKind.RFT, s, None) for s in ("RUNNING", "PAUSED", "PENDING", "SOMETHING_NEW")),
        (JobKind.DEPLOYMENT, "UPDATING", None),
        (JobKind.ACCOUNT, "UNSUSPENDED", 0),
        (JobKind.ACCOUNT, "CREDIT_DEPLETED", 1),
    ],
    ids=lambda v: str(v),
)
def test_watch_exit(kind: JobKind, state: str, expected: int | None) -> None:
    """`watch` ends 0 on a success outcome, 1 on a failure or tombstone, and goes on otherwise."""
    assert expected == watch_exit(kind, state)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("JOB_STATE_RUNNING", "RUNNING"),
        ("job_state_failed", "FAILED"),
        ("STATE_UNSPECIFIED", "UNSPECIFIED"),
        ("JOB_STATE_UNSPECIFIED", "UNSPECIFIED"),
        ("READY", "READY"),
        (" deployed ", "DEPLOYED"),
        ("", "UNSPECIFIED"),
        ("JOB_STATE_", "UNSPECIFIED"),
    ],
)
def test_short_state(raw: str, expected: str) -> None:
    """State names lose the `JOB_STATE_` prefix; the unspecified value is one name."""
    assert expected == short_state(raw)


def test_meaning_without_a_kind() -> None:
    """An outbox row knows only the state name; every kind that shares it agrees."""
    for spec in KINDS.values():
        for state, meaning in spec.states.items():
            assert meaning == meaning_of(state), (spec.name, state)


PARSE_CASES: list[tuple[JobKind, dict[str, object], dict[str, str]]] = [
    (
        JobKind.SFT,
        {
            "name": "accounts/a/supervisedFineTuningJobs/s",
            "state": "JOB_STATE_RUNNING",
            "baseModel": "accounts/fireworks/models/llama",
            "outputModel": "accounts/a/models/out",
            "jobProgress": {"percent": 42, "epoch": 1},
            "estimatedCost": {"currencyCode": "USD", "units": "12", "nanos": 500000000},
            "updateTime": "2026-12-01T10:00:00Z",
            "metricsFileSignedUrl": "https://signed.example/?sig=secret",
        },
        {
            "base_model": "accounts/fireworks/models/llama",
            "output_model": "accounts/a/models/out",
            "progress": "42",
            "epoch": "1",
            "estimated_cost": "USD 12.50",
            "update_time": "2026-12-01T10:00:00Z",
        },
    ),
    (
        JobKind.RFT,
        {
            "name": "accounts/a/reinforcementFineTuningJobs/r",
            "acceleratorSeconds": {"NVIDIA_H100_80GB": "3600", "NVIDIA_A100_80GB": "600"},
            "trainingConfig": {"baseModel": "m"},
        },
        {"accelerator_seconds": "4200", "base_model": "m"},
    ),
    (
        JobKind.DEPLOYMENT,
        {
            "name": "accounts/a/deployments/d",
            "state": "READY",
            "baseModel": "accounts/a/models/out",
            "replicaCount": 3,
            "directRouteApiKeys": ["route-secret"],
        },
        {"state": "READY", "model": "accounts/a/models/out", "replica_count": "3"},
    ),
    (
        JobKind.BATCH_INFERENCE,
        {"name": "accounts/a/batchInferenceJobs/b", "model": "m", "inputDatasetId": "ds"},
        {"model": "m", "dataset": "ds", "completed_time": ""},
    ),
    (
        JobKind.EVALUATOR,
        {
            "name": "accounts/a/evaluators/e",
            "state": "BUILD_FAILED",
            "status": {
                "code": "FAILED_PRECONDITION",
                "message": "pip install failed",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.Help"},
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "BUILD_OOM"},
                ],
            },
        },
        {"state": "BUILD_FAILED", "reason": "BUILD_OOM", "status_message": "pip install failed"},
    ),
    (
        JobKind.SFT,
        {
            "name": "accounts/a/supervisedFineTuningJobs/w",
            "jobProgress": {"percent": True, "epoch": "x"},
            "estimatedCost": {"units": 5},
            "status": {"details": "nope"},
        },
        {"progress": "", "epoch": "", "estimated_cost": "5.00", "reason": ""},
    ),
    (
        JobKind.DEPLOYMENT,
        {"name": "accounts/a/deployments/n", "replicaCount": "2", "state": "STATE_UNSPECIFIED"},
        {"replica_count": "2", "state": "UNSPECIFIED"},
    ),
    (
        JobKind.ACCOUNT,
        {
            "name": "accounts/a",
            "state": "READY",
            "suspendState": "CREDIT_DEPLETED",
            "displayName": "Acme",
            "email": "billing@acme.example",
        },
        {
            "state": "CREDIT_DEPLETED",
            "reason": "CREDIT_DEPLETED",
            "account_state": "READY",
            "display_name": "Acme",
        },
    ),
    # proto3 JSON omits the zero value: no suspendState is UNSUSPENDED (and no reason).
    (
        JobKind.ACCOUNT,
        {"name": "accounts/a", "state": "UPDATING"},
        {"state": "UNSUSPENDED", "reason": "", "account_state": "UPDATING"},
    ),
    (
        JobKind.ACCOUNT,
        {"name": "accounts/a", "suspendState": "A_NEW_REASON", "state": 7},
        {"state": "A_NEW_REASON", "reason": "A_NEW_REASON", "account_state": ""},
    ),
]


@pytest.mark.parametrize(
    ("kind", "payload", "expected"),
    PARSE_CASES,
    ids=[
        "sft",
        "rft-accelerators",
        "deployment",
        "batch",
        "reason",
        "wrong-types",
        "int64",
        "account-suspended",
        "account-suspend-state-omitted",
        "account-unknown-suspend-state",
    ],
)
def test_parse_kind_fields(
    kind: JobKind, payload: dict[str, object], expected: dict[str, str]
) -> None:
    """Each kind reads its own fields; wrong types count as absent; secrets are not kept."""
    snapshot = parse_job(payload, kind=kind, account_id="a")

    assert expected == {key: getattr(snapshot, key) for key in expected}
    assert "secret" not in repr(snapshot)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("dpo/my-job", JobRef(JobKind.DPO, "my-job")),
        ("deployment/a/b", JobRef(JobKind.DEPLOYMENT, "a/b")),
        ("dpo/", None),
        ("dpo", None),
        ("nosuchkind/x", None),
        ("", None),
    ],
)
def test_a_key_names_its_reference(key: str, expected: JobRef | None) -> None:
    found = JobRef.from_key(key)

    assert found == expected
    assert found is None or found.key == key


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (["accounts/a"], "account payload is not a JSON object (got list)"),
        ({"name": "accounts/a", "suspendState": 3}, "account suspendState is not a string"),
        ({"name": "accounts/a", "suspendState": {}}, "account suspendState is not a string"),
        ({"name": "accounts/a/dpoJobs/x"}, "has an id that is not"),
    ],
    ids=["not-an-object", "number", "object", "a-job-name"],
)
def test_an_unreadable_account_is_a_bad_answer(payload: object, problem: str) -> None:
    """An account answer that cannot be read is a PayloadError (the `unreadable` notice's
    cause), never a guess: a suspendState of the wrong type is no suspension."""
    with pytest.raises(PayloadError, match=re.escape(problem)):
        parse_job(payload, kind=JobKind.ACCOUNT, account_id="a")


def test_the_account_is_one_resource_named_by_its_path() -> None:
    """The account's entry says its path (`accounts/{id}`): no collection to LIST, the same
    read by GET as every kind, its watched state the `suspendState`."""
    spec = JobKind.ACCOUNT.spec

    assert (False, "accounts/acme") == (
        spec.listable,
        JobRef(JobKind.ACCOUNT, "acme").resource_name("acme"),
    )
    assert "suspendState" == spec.state_key
    assert {"name", "suspendState", "state", "status"} <= set(spec.read_mask.split(","))
    assert all(KINDS[kind].listable for kind in JobKind if kind is not JobKind.ACCOUNT)
