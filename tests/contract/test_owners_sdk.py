"""Owners against the official SDK's models: which kinds carry `createdBy`, which derive their
owner from a field naming another resource, and the simulator's shapes for that derivation.

Run with `-s` to print the per-kind owner coverage.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest
from fireworks import types as fw

from fireworks_sim import Simulator
from tests.support.sdk_oracle import MODELS, aliases, validate
from watcher.core import decide, owners
from watcher.core.kinds import KINDS, JobKind
from watcher.sources.parse import parse_job

ACCOUNT = "sim-account"
AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
#: The SDK's name for the field of each kind that names its parent resource.
PARENT_FIELDS = {
    JobKind.MODEL: "fineTuningJob",
    JobKind.DEPLOYMENT: "baseModel",
    JobKind.DEPLOYED_MODEL: "model",
}


def coverage(kind: JobKind) -> str:
    """Where the watcher gets a kind's owner: `createdBy`, `derived from X` or `none`."""
    spec = KINDS[kind]
    if kind in owners.OWNERLESS:
        return "nobody (its own)"
    if "created_by" in spec.fields:
        return "createdBy"
    field = owners.PARENTS.get(kind)
    return f"derived from {spec.fields[field].key}" if field is not None else "none"


def sdk_has_created_by(kind: JobKind) -> bool:
    models = MODELS[KINDS[kind].collection]
    found = {"createdBy" in aliases(model) for model in models}
    assert 1 == len(found), f"{kind}: the GET and LIST models disagree on createdBy"
    return found.pop()


def string_field(model: type[pydantic.BaseModel], alias: str) -> bool:
    (info,) = [i for n, i in model.model_fields.items() if (i.alias or n) == alias]
    return "str" in str(info.annotation)


def test_the_account_has_no_owner_in_the_sdk_either() -> None:
    """The account is nobody's: the SDK's `Account` has no `createdBy`."""
    assert "createdBy" not in aliases(fw.Account)
    assert "nobody (its own)" == coverage(JobKind.ACCOUNT)


@pytest.mark.parametrize("kind", [k for k in JobKind if k not in owners.OWNERLESS], ids=str)
def test_every_kind_reads_created_by_exactly_where_the_sdk_has_it(kind: JobKind) -> None:
    """A kind reads `createdBy` iff the SDK's model has it; every other kind derives its owner
    from a string field the SDK's model has, naming the parent resource."""
    has = sdk_has_created_by(kind)

    assert has == (coverage(kind) == "createdBy")
    if not has:
        assert f"derived from {PARENT_FIELDS[kind]}" == coverage(kind)
        for model in MODELS[KINDS[kind].collection]:
            assert PARENT_FIELDS[kind] in aliases(model)
            assert string_field(model, PARENT_FIELDS[kind])


def test_no_kind_is_left_without_an_owner_and_the_coverage_is_printed() -> None:
    """Every kind has an owner source; the table is printed for the release note."""
    table = {str(kind): coverage(kind) for kind in JobKind}
    width = max(map(len, table))
    print("\nowner coverage per kind:")
    for kind, source in table.items():
        print(f"  {kind:<{width}}  {source}")

    assert "none" not in table.values()
    assert set(PARENT_FIELDS) == set(owners.PARENTS)


def shapes(sim: Simulator) -> dict[str, dict[str, Any]]:
    """A job by alice, the model it made, a deployment of that model and a deployed model."""
    job = f"accounts/{ACCOUNT}/supervisedFineTuningJobs/ft-1"
    model = f"accounts/{ACCOUNT}/models/ft-1-model"
    return {
        "supervisedFineTuningJobs": sim.add_job(
            "ft-1", collection="supervisedFineTuningJobs", created_by="alice@example.com"
        ),
        "models": sim.add_job(
            "ft-1-model", collection="models", state="READY", fine_tuning_job=job
        ),
        "deployments": sim.add_job("dep-1", collection="deployments", model=model),
        "deployedModels": sim.add_job("lora-1", collection="deployedModels", model=model),
    }


def test_the_simulator_links_resources_as_the_sdk_shapes_them() -> None:
    """A model names its `fineTuningJob`, a deployment its `baseModel`, a deployed model its
    `model`; the SDK accepts each, and the watcher derives alice as every one's owner."""
    sim = Simulator(account_id=ACCOUNT)
    answers = shapes(sim)
    for collection, payload in answers.items():
        validate(MODELS[collection][0], payload, label=collection)
    snapshots = [
        parse_job(payload, kind=_kind(collection), account_id=ACCOUNT)
        for collection, payload in reversed(answers.items())
    ]

    decided = decide.diff({}, snapshots, channels=(), now=AT)

    assert answers["models"]["fineTuningJob"].endswith("/supervisedFineTuningJobs/ft-1")
    assert {s.ref.key: s.owner for s in decided.snapshots} == {
        "sft/ft-1": "alice@example.com",
        "model/ft-1-model": "alice@example.com",
        "deployment/dep-1": "alice@example.com",
        "deployed-model/lora-1": "alice@example.com",
    }


def test_only_a_model_takes_a_fine_tuning_job() -> None:
    """The knob is refused where the SDK's model has no such field; a model without it
    renders none (an uploaded model)."""
    sim = Simulator(account_id=ACCOUNT)

    with pytest.raises(ValueError, match="fine_tuning_job"):
        sim.add_job("x", collection="deployments", fine_tuning_job="accounts/a/dpoJobs/j")
    assert "fineTuningJob" not in sim.add_job("up", collection="models")
    assert "fineTuningJob" in aliases(fw.Model)


def _kind(collection: str) -> JobKind:
    return next(kind for kind, spec in KINDS.items() if spec.collection == collection)
