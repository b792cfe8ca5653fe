"""Strict validation of API payloads against the official SDK's models (a test-only oracle).

The SDK's models are Stainless `BaseModel`s: they allow extra keys, and the client builds
them with the non-validating `construct`, so neither catches a payload the real API would
never send. `validate` therefore walks the model's fields by alias first (unknown keys at any
depth, missing required keys), then runs pydantic's strict JSON validation (types, Literals).

`VALIDATED` and `SDK_CALLS` count, per collection, what the oracle tests checked;
`python -m tests.contract.test_sdk_oracle --count` prints them.
"""

from __future__ import annotations

import json
import types
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pydantic
from fireworks import types as fw
from fireworks.types.shared import DeployedModel

#: Collection -> (the model its GET answers, the model of its LIST items).
MODELS: dict[str, tuple[type[pydantic.BaseModel], type[pydantic.BaseModel]]] = {
    "dpoJobs": (fw.DpoJob, fw.DpoJob),
    "supervisedFineTuningJobs": (fw.SupervisedFineTuningJob, fw.SupervisedFineTuningJob),
    "reinforcementFineTuningJobs": (
        fw.ReinforcementFineTuningJob,
        fw.ReinforcementFineTuningJob,
    ),
    "rlorTrainerJobs": (fw.ReinforcementFineTuningStep, fw.ReinforcementFineTuningStep),
    "batchInferenceJobs": (fw.BatchInferenceJob, fw.BatchInferenceJob),
    "evaluationJobs": (fw.EvaluationJobGetResponse, fw.EvaluationJobListResponse),
    "evaluators": (fw.EvaluatorGetResponse, fw.EvaluatorListResponse),
    "deployments": (fw.Deployment, fw.Deployment),
    "deployedModels": (DeployedModel, DeployedModel),
    "models": (fw.Model, fw.Model),
    "datasets": (fw.Dataset, fw.Dataset),
}

#: Payloads that passed `validate`, by label (the tests use the collection).
VALIDATED: Counter[str] = Counter()
#: HTTP requests the official SDK client made against the simulator, by collection.
SDK_CALLS: Counter[str] = Counter()


def aliases(model: type[pydantic.BaseModel]) -> set[str]:
    """The JSON names of a model's top-level fields."""
    return {info.alias or name for name, info in model.model_fields.items()}


def literal_values(model: type[pydantic.BaseModel], field: str) -> tuple[str, ...]:
    """The values a field's `Literal` (possibly inside Optional) allows, e.g. of `state`."""
    return tuple(str(value) for value in _literals(model.model_fields[field].annotation))


def validate(
    model: type[pydantic.BaseModel],
    payload: object,
    *,
    label: str = "",
    mask: str | None = None,
) -> None:
    """Fail (AssertionError naming the JSON path) unless `model` fully accepts `payload`.

    Refused: a key the model (or a nested model) does not define, a missing required key,
    and any value strict pydantic validation refuses (wrong type, value outside a Literal).
    With `mask` (a readMask), a required top-level key the mask leaves out may be missing,
    as a field-mask server drops it; every other rule holds.
    """
    kept = None if mask is None else {path.split(".")[0] for path in mask.split(",")}

    def excused(key: object) -> bool:
        return kept is not None and key not in kept

    problems = [
        problem
        for problem in _walk_model(model, payload, "$")
        if not (problem.endswith("but missing") and excused(problem.split(".")[1].split(":")[0]))
    ]
    if problems:
        raise AssertionError(f"{model.__name__}: " + "; ".join(problems))
    try:
        model.model_validate_json(json.dumps(payload), strict=True)
    except pydantic.ValidationError as error:
        refused = [
            problem
            for problem in error.errors()
            if not (problem["type"] == "missing" and excused(problem["loc"][0]))
        ]
        if refused:
            details = "; ".join(
                f"$.{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
                for problem in refused
            )
            raise AssertionError(f"{model.__name__} refuses the payload: {details}") from None
    VALIDATED[label or model.__name__] += 1


def _walk_model(model: type[pydantic.BaseModel], value: object, path: str) -> Iterator[str]:
    if not isinstance(value, Mapping):
        yield f"{path}: expected an object ({model.__name__}), got {type(value).__name__}"
        return
    fields = {info.alias or name: info for name, info in model.model_fields.items()}
    for key, item in value.items():
        info = fields.get(key)
        if info is None:
            yield f"{path}.{key}: unknown key for {model.__name__}"
        else:
            yield from _walk_annotation(info.annotation, item, f"{path}.{key}")
    for key, info in fields.items():
        if info.is_required() and key not in value:
            yield f"{path}.{key}: required by {model.__name__} but missing"


def _walk_annotation(annotation: Any, value: object, path: str) -> Iterator[str]:
    """Recurse into nested models through Optional, Union, List, Dict and Annotated."""
    if value is None:
        return
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        yield from _walk_annotation(args[0], value, path)
    elif origin in (Union, types.UnionType):
        for arg in args:
            if _json_kind(arg) == _value_kind(value):
                yield from _walk_annotation(arg, value, path)
                return
    elif origin is list and isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk_annotation(args[0], item, f"{path}[{index}]")
    elif origin is dict and isinstance(value, dict):
        for key, item in value.items():
            yield from _walk_annotation(args[1], item, f"{path}.{key}")
    elif isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        yield from _walk_model(annotation, value, path)


def _json_kind(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _json_kind(get_args(annotation)[0])
    if origin is list:
        return "array"
    if origin is dict or (
        isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)
    ):
        return "object"
    return "scalar"


def _value_kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "scalar"


def _literals(annotation: Any) -> Iterator[object]:
    origin = get_origin(annotation)
    if origin is Literal:
        yield from get_args(annotation)
    elif origin in (Union, types.UnionType, Annotated):
        for arg in get_args(annotation):
            yield from _literals(arg)
