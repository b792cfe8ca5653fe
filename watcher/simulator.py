"""A Fireworks control-plane API look-alike, for tests and the demo.

`Simulator` is a plain ASGI 3 app that answers the GET and LIST endpoints the watcher polls
(`GET /v1/accounts/{account}/{collection}[/{id}]`) for every collection in `COLLECTIONS`,
from an in-memory table, with scripted and repeating timelines, moving progress, fault
injection, ready-made scenarios and a small `/_sim/` control API so a simulator running in
another process can be driven over HTTP.

Every collection answers in the shape of the official SDK's model for that resource
(`fireworks-ai` 1.2.30, `fireworks/types/`): only keys the model defines, every required key,
proto3 JSON values (int64 as strings, empty values omitted). The shapes are written here by
hand; `tests/test_sdk_oracle.py` proves them against the SDK, which is a test-only dependency.

| kind | collection (= LIST key) | SDK model | states |
|---|---|---|---|
| dpo | dpoJobs | DpoJob | JOB_STATE_* |
| sft | supervisedFineTuningJobs | SupervisedFineTuningJob | JOB_STATE_* |
| rft | reinforcementFineTuningJobs | ReinforcementFineTuningJob | JOB_STATE_* |
| rlor | rlorTrainerJobs | ReinforcementFineTuningStep | JOB_STATE_* (ARCHIVED after delete) |
| batch-inference | batchInferenceJobs | BatchInferenceJob | JOB_STATE_* |
| evaluation | evaluationJobs | EvaluationJobGetResponse | JOB_STATE_* |
| evaluator | evaluators | EvaluatorGetResponse | BUILDING, ACTIVE, BUILD_FAILED |
| deployment | deployments | Deployment | CREATING, READY, UPDATING, DELETING, DELETED, FAILED |
| deployed-model | deployedModels | shared.DeployedModel | DEPLOYING, DEPLOYED, UPDATING, UNDEPLOYING |
| model | models | Model | UPLOADING, READY |
| dataset | datasets | Dataset | UPLOADING, READY |

One injected clock drives everything: `clock()` (monotonic seconds) decides when scripted
steps fall due and how far progress has moved, and every timestamp is
`start_time + (clock() - clock() at construction)`. Nothing runs in the background: timelines,
repeating cycles and the scenarios' newly spawned resources are all worked out lazily, on read.

The `/_sim/` control API (no key needed; JSON bodies; answers JSON or a grpc-style error):

| method and path | body | effect |
|---|---|---|
| `POST /_sim/jobs` | `add_job` keyword arguments, `job_id` included | add or replace a resource |
| `GET /_sim/jobs/{collection}` | | `{"jobs": [...]}`, as `jobs()` |
| `GET /_sim/jobs/{collection}/{id}` | | one resource, as `job()` |
| `POST /_sim/jobs/{collection}/{id}/state` | `state`, `status_code`, `status_message` | `set_state` |
| `POST /_sim/jobs/{collection}/{id}/progress` | `percent`, `epoch`, `rate` | `set_progress` |
| `POST /_sim/jobs/{collection}/{id}/script` | `{"steps": [[s, state, code, msg], ...]}` | `script` |
| `POST /_sim/jobs/{collection}/{id}/repeat` | `steps` as above, `period`, `start` | `repeat` |
| `DELETE /_sim/jobs/{collection}/{id}` | optional `{"purge": true}` | `remove_job` |
| `POST /_sim/faults` | `add_fault` keyword arguments | queue a fault |
| `DELETE /_sim/faults` | | `clear_faults` |
| `POST /_sim/scenario` | `{"name": "demo" or "busy" or "chaos", "seed": 0}` | `scenario` |
| `GET /_sim/stats` | | `{"requests": n, "jobs": n, "faults": n}` |

It deliberately imports nothing from `watcher` (nor the SDK): it is written from the API docs
and the SDK's models, not from the client, so the two cannot share a wire-format bug. Only the
standard library is used; uvicorn is imported lazily by `serve()`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import json
import math
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any
from urllib.parse import parse_qs

#: Config kind -> REST collection (which is also the LIST response key).
KINDS: dict[str, str] = {
    "dpo": "dpoJobs",
    "sft": "supervisedFineTuningJobs",
    "rft": "reinforcementFineTuningJobs",
    "rlor": "rlorTrainerJobs",
    "batch-inference": "batchInferenceJobs",
    "evaluation": "evaluationJobs",
    "evaluator": "evaluators",
    "deployment": "deployments",
    "deployed-model": "deployedModels",
    "model": "models",
    "dataset": "datasets",
}
#: The collections the simulator serves; each is also its LIST response key.
COLLECTIONS: tuple[str, ...] = tuple(KINDS.values())
#: The collections whose states are `gatewayJobState` (`JOB_STATE_*`).
JOB_COLLECTIONS: frozenset[str] = frozenset(COLLECTIONS[:6])
#: The collections whose SDK model has `jobProgress` (so `progress` knobs apply).
PROGRESS_COLLECTIONS: frozenset[str] = frozenset(
    {
        "supervisedFineTuningJobs",
        "reinforcementFineTuningJobs",
        "rlorTrainerJobs",
        "batchInferenceJobs",
    }
)
#: The collections whose SDK model has `completedTime`.
COMPLETED_TIME_COLLECTIONS: frozenset[str] = frozenset(
    {"dpoJobs", "supervisedFineTuningJobs", "reinforcementFineTuningJobs", "rlorTrainerJobs"}
)
#: The collections whose SDK model has `updateTime` (DPO, RFT and RLOR jobs have none).
UPDATE_TIME_COLLECTIONS: frozenset[str] = frozenset(COLLECTIONS) - {
    "dpoJobs",
    "reinforcementFineTuningJobs",
    "rlorTrainerJobs",
}
#: The collections whose SDK model has `wandbConfig` (which echoes the W&B API key).
WANDB_COLLECTIONS: frozenset[str] = frozenset(COMPLETED_TIME_COLLECTIONS)

STATE_PREFIX = "JOB_STATE_"
_JOB_STATES: tuple[str, ...] = tuple(
    STATE_PREFIX + s
    for s in (
        "UNSPECIFIED",
        "CREATING",
        "RUNNING",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "DELETING",
        "WRITING_RESULTS",
        "VALIDATING",
        "DELETING_CLEANING_UP",
        "PENDING",
        "EXPIRED",
        "RE_QUEUEING",
        "CREATING_INPUT_DATASET",
        "IDLE",
        "CANCELLING",
        "EARLY_STOPPED",
        "PAUSED",
    )
)
#: The states each collection's SDK model knows. Others (e.g. `JOB_STATE_ARCHIVED`, which the
#: gateway shows for deleted RLOR trainers, or a value the API adds later) are served as given.
STATES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(COLLECTIONS[:6], _JOB_STATES),
    "evaluators": ("STATE_UNSPECIFIED", "ACTIVE", "BUILDING", "BUILD_FAILED"),
    "deployments": (
        "STATE_UNSPECIFIED",
        "CREATING",
        "READY",
        "DELETING",
        "FAILED",
        "UPDATING",
        "DELETED",
    ),
    "deployedModels": ("STATE_UNSPECIFIED", "UNDEPLOYING", "DEPLOYING", "DEPLOYED", "UPDATING"),
    "models": ("STATE_UNSPECIFIED", "UPLOADING", "READY"),
    "datasets": ("STATE_UNSPECIFIED", "UPLOADING", "READY"),
}
#: Each collection's natural first state: `add_job`'s default.
INITIAL_STATES: dict[str, str] = {
    **dict.fromkeys(COLLECTIONS[:6], STATE_PREFIX + "PENDING"),
    "evaluators": "BUILDING",
    "deployments": "CREATING",
    "deployedModels": "DEPLOYING",
    "models": "UPLOADING",
    "datasets": "UPLOADING",
}
#: Entering one of these sets `completedTime`; leaving it (a resume) clears it.
FINAL_STATES: frozenset[str] = frozenset(
    STATE_PREFIX + s for s in ("COMPLETED", "FAILED", "CANCELLED", "EXPIRED", "EARLY_STOPPED")
)
ARCHIVED_STATE = STATE_PREFIX + "ARCHIVED"
_RUNNING = STATE_PREFIX + "RUNNING"

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
DEFAULT_BASE_MODEL = "accounts/fireworks/models/llama-v3p1-8b-instruct"
DEFAULT_ACCELERATOR = "NVIDIA_H100_80GB"
# Secrets the real API may echo; the watcher must never pass them on.
SIGNED_LOGS_URL = "https://storage.example/logs?X-Goog-Signature=sim-signature"
SIGNED_METRICS_URL = "https://storage.example/metrics.jsonl?X-Goog-Signature=sim-metrics-signature"
ROUTE_API_KEY = "sim-route-secret"
#: How long the `chaos` scenario's slow answers take, in (real) seconds.
CHAOS_SLOW_SECONDS = 2.0

#: Top-level fields of each collection's SDK model (JSON names), copied by hand from
#: `fireworks/types/*.py`. A `readMask` may name only these; the oracle tests compare them.
FIELDS: dict[str, frozenset[str]] = {
    collection: frozenset(names.split())
    for collection, names in {
        "dpoJobs": """awsS3Config azureBlobStorageConfig completedTime createTime createdBy
            dataset displayName lossConfig name rendererHuggingFaceRepoId reservationTarget
            state status trainerLogsSignedUrl trainingConfig useReservation wandbConfig""",
        "supervisedFineTuningJobs": """awsS3Config azureBlobStorageConfig baseModel batchSize
            batchSizeSamples completedTime createTime createdBy dataset displayName earlyStop
            epochs estimatedCost evalAutoCarveout evaluationDataset gradientAccumulationSteps
            isTurbo jinjaTemplate jobProgress learningRate learningRateWarmupSteps loraRank
            maxContextLength metricsFileSignedUrl mtpEnabled mtpFreezeBaseModel
            mtpNumDraftTokens name nodes optimizerWeightDecay outputModel region
            rendererHuggingFaceRepoId reservationTarget samplerCheckpointSaveIntervalSteps
            state status trainerLogsSignedUrl updateTime usePurpose useReservation wandbConfig
            warmStartFrom""",
        "reinforcementFineTuningJobs": """acceleratorSeconds awsS3Config azureBlobStorageConfig
            chunkSize completedTime createTime createdBy dataset displayName evalAutoCarveout
            evaluationDataset evaluator inferenceParameters jobProgress lossConfig
            maxConcurrentEvaluations maxConcurrentRollouts maxInferenceReplicaCount mcpServer
            name nodeCount outputMetrics outputStats reservationTarget state status
            trainerLogsSignedUrl trainingConfig wandbConfig""",
        "rlorTrainerJobs": """acceleratorSeconds awsS3Config azureBlobStorageConfig completedTime
            createTime createdBy dataset directRouteHandle displayName evalAutoCarveout
            evaluationDataset forwardOnly hotLoadDeploymentId jobProgress keepAlive lossConfig
            name nodeCount rewardWeights rolloutDeploymentName serviceMode state status
            trainingConfig usePurpose wandbConfig""",
        "batchInferenceJobs": """continuedFromJobName createTime createdBy displayName
            inferenceParameters inputDatasetId jobProgress model name outputDatasetId precision
            state status updateTime""",
        "evaluationJobs": """awsS3Config createTime createdBy displayName evaluator inputDataset
            metrics name outputDataset outputStats state status updateTime""",
        "evaluators": """commitHash createTime createdBy criteria defaultDataset description
            displayName entryPoint name requirements source state status updateTime""",
        "deployments": """acceleratorCount acceleratorType activeModelVersion autoTune
            autoscalingPolicy baseModel cluster createTime deleteTime deploymentShape
            deploymentTemplate description desiredReplicaCount directRouteApiKeys
            directRouteHandle directRouteType disableDeploymentSizeValidation displayName
            draftModel draftTokenCount enableAddons enableHotLoad enableHotReloadLatestAddon
            enableMtp enableSessionAffinity expireTime hotLoadBucketType hotLoadBucketUrl
            maxContextLength maxReplicaCount maxWithRevocableReplicaCount minReplicaCount name
            ngramSpeculationLength numPeftDeviceCached placement precision pricingPlanId
            purgeTime region replicaCount replicaStats state status targetModelVersion
            updateTime""",
        "deployedModels": """createTime default deployment description displayName model name
            public serverless state status updateTime""",
        "models": """baseModelDetails calibrated cluster contextLength conversationConfig
            createTime defaultDraftModel defaultDraftTokenCount defaultSamplingParams
            deployedModelRefs deprecationDate description displayName fineTuningJob githubUrl
            huggingFaceUrl importedFrom kind name peftDetails public rlTunable snapshotType
            state status supportedPrecisions supportedPrecisionsWithCalibration
            supportsImageInput supportsLora supportsServerless supportsTools teftDetails
            trainingContextLength tunable updateTime useHfApplyChatTemplate""",
        "datasets": """averageTurnCount createTime createdBy displayName estimatedTokenCount
            evalProtocol evaluationResult exampleCount externalUrl format name sourceJobName
            splitted state status transformed updateTime userUploaded""",
    }.items()
}

#: google.rpc.Code numbers, as grpc-gateway puts them in error bodies.
GRPC_CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
_HTTP_TO_GRPC: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

#: `orderBy` field -> sort key. Both the proto (snake_case) and JSON spellings are accepted.
_ORDER_KEYS: dict[str, Callable[[_Resource], Any]] = {
    "name": lambda job: job.job_id,
    "create_time": lambda job: job.create_time,
    "createTime": lambda job: job.create_time,
    "created_time": lambda job: job.create_time,
    "update_time": lambda job: job.update_time,
    "display_name": lambda job: job.display_name,
    "state": lambda job: job.state,
}
# grpc-gateway binds query parameters by their JSON and by their proto names.
_PARAM_ALIASES: dict[str, str] = {
    "read_mask": "readMask",
    "page_size": "pageSize",
    "page_token": "pageToken",
    "order_by": "orderBy",
    "show_deleted": "showDeleted",
}
_FILTER = re.compile(r'^\s*(state|display_name|displayName)\s*=\s*"?([^"]*)"?\s*$')

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: A scripted step: (seconds after the `script()` call, state, status code, status message).
Step = tuple[float, str, str, str]
# Record attributes a step may change beside the state (see `_Step.changes`).
_CHANGEABLE = frozenset(
    {"progress", "progress_rate", "epoch", "replica_count", "accelerator_seconds"}
)


@dataclass(frozen=True, slots=True)
class _Reply:
    """One HTTP answer, computed under the lock and sent after it is released."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class _HttpError(Exception):
    """Raised inside a handler; becomes a grpc-gateway style error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class _Fault:
    """A pending injected fault; `remaining` counts down per matching request."""

    remaining: int
    status: int | None
    path_contains: str
    retry_after: str | None
    body: str | None
    content_type: str
    delay: float
    malformed: bool
    truncated: bool


@dataclass(frozen=True, slots=True)
class _Step:
    """A state change due at clock time `at`, with optional other `changes` to the record."""

    at: float
    state: str
    status_code: str = "OK"
    status_message: str = ""
    changes: tuple[tuple[str, Any], ...] = ()


@dataclass(slots=True)
class _Cycle:
    """Steps at `offsets` within `period`, repeated forever from clock time `origin`."""

    origin: float
    period: float
    steps: tuple[_Step, ...]  # `at` is an offset in [0, period)


@dataclass(slots=True)
class _Resource:
    """One resource's mutable record; rendered to API JSON by `Simulator._render`."""

    collection: str
    job_id: str
    state: str
    status_code: str
    status_message: str
    display_name: str
    dataset: str
    base_model: str
    output_model: str
    created_by: str
    create_time: datetime
    update_time: datetime
    completed_time: datetime | None
    delete_time: datetime | None
    epochs: int
    learning_rate: float
    wandb: bool
    model: str
    evaluator: str
    deployment: str
    progress: float | None
    progress_rate: float
    progress_clock: float
    epoch: int | None
    replica_count: int | None
    estimated_cost_usd: float | None
    accelerator_seconds: dict[str, int] | None
    steps: list[_Step] = field(default_factory=list)
    cycle: _Cycle | None = None


@dataclass(slots=True)
class _Spawner:
    """Adds a fresh resource every `every` seconds from `origin`, keeping the newest `keep`.

    `make(index, at)` builds the resource due at clock time `at`. Older ones are removed
    (RLOR trainers are first shown ARCHIVED for another `keep` generations).
    """

    collection: str
    origin: float
    every: float
    keep: int
    make: Callable[[int, float], _Resource]
    next_index: int = 0
    live: list[tuple[int, str]] = field(default_factory=list)


@dataclass(slots=True)
class _Chaos:
    """Seeded random faults mixed into API answers (the `chaos` scenario)."""

    rng: random.Random
    rate: float


def full_state(state: str, collection: str = "dpoJobs") -> str:
    """The wire spelling of `state` in `collection`.

    Job collections take `RUNNING` or `JOB_STATE_RUNNING` -> `JOB_STATE_RUNNING`; the other
    collections use bare names (`ready` -> `READY`). Unknown names pass through (upper-cased).
    """
    value = state.strip().upper()
    if collection not in JOB_COLLECTIONS or value.startswith(STATE_PREFIX):
        return value
    return STATE_PREFIX + value


def _rfc3339(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.removesuffix("+00:00").removesuffix(".000000") + "Z"


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _json_bytes(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _error_reply(status: int, message: str) -> _Reply:
    code = GRPC_CODES[_HTTP_TO_GRPC.get(status, "UNKNOWN")]
    return _Reply(status, _json_bytes({"code": code, "message": message, "details": []}))


def _mask(document: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """Keep only the FieldMask `paths` (dotted paths reach into nested objects)."""
    out: dict[str, Any] = {}
    for path in paths:
        source: Any = document
        target = out
        parts = path.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(source, dict) or part not in source:
                break
            if depth == len(parts) - 1:
                target[part] = source[part]
            else:
                source = source[part]
                target = target.setdefault(part, {})
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _omit_empty(value: Any) -> Any:
    """proto3 JSON: drop None, empty strings and empty objects or lists, at every depth."""
    if isinstance(value, dict):
        pruned = {key: _omit_empty(item) for key, item in value.items()}
        return {key: item for key, item in pruned.items() if item not in (None, "", {}, [])}
    if isinstance(value, list):
        return [_omit_empty(item) for item in value]
    return value


def _nonzero(number: int | None) -> int | None:
    """proto3 JSON omits a zero number; None (then dropped) stands for it."""
    return number or None


class Simulator:
    """The Fireworks API look-alike: call it as an ASGI app, drive it through its methods.

    Every method is thread-safe, so tests may change resources while uvicorn serves the app
    from another thread. The methods say "job" for any resource, deployments included.

    Args:
        api_key: The key requests must present (`Authorization: Bearer` or `X-Api-Key`).
        account_id: The only account the key may read; others answer 403.
        clock: Monotonic seconds; scripted steps fall due against it, progress moves with it
            and every timestamp derives from it (inject a fake in tests).
        wandb_api_key: Echoed in `wandbConfig.apiKey` (kinds that have it), as the real API
            may do, so tests can prove the watcher never passes it on.
        route_api_key: Echoed in every deployment's `directRouteApiKeys`, for the same reason.
        start_time: The wall time that `clock()` at construction stands for (default: now).
    """

    def __init__(
        self,
        *,
        api_key: str = "sim-key",
        account_id: str = "sim-account",
        clock: Callable[[], float] = time.monotonic,
        wandb_api_key: str = "sim-wandb-secret",
        route_api_key: str = ROUTE_API_KEY,
        start_time: datetime | None = None,
    ) -> None:
        self.api_key = api_key
        self.account_id = account_id
        self.wandb_api_key = wandb_api_key
        self.route_api_key = route_api_key
        self._clock = clock
        self._clock0 = clock()
        self._wall0 = start_time if start_time is not None else datetime.now(UTC)
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], _Resource] = {}
        self._faults: list[_Fault] = []
        self._requests: list[tuple[str, str]] = []
        self._spawners: list[_Spawner] = []
        self._chaos: _Chaos | None = None

    # -- Python control API ------------------------------------------------------------

    def now(self) -> datetime:
        """The simulated wall time: `start_time` plus the clock's progress since construction."""
        return self._wall(self._clock())

    def add_job(
        self,
        job_id: str,
        *,
        collection: str = "dpoJobs",
        state: str | None = None,
        display_name: str | None = None,
        status_code: str = "OK",
        status_message: str = "",
        base_model: str = DEFAULT_BASE_MODEL,
        output_model: str | None = None,
        dataset: str | None = None,
        created_by: str = "sim-user@example.com",
        create_time: str | None = None,
        epochs: int = 1,
        learning_rate: float = 0.0001,
        wandb: bool = True,
        progress: int | None = None,
        progress_rate: float = 0.0,
        epoch: int | None = None,
        model: str | None = None,
        evaluator: str | None = None,
        deployment: str | None = None,
        replica_count: int | None = None,
        estimated_cost_usd: float | None = None,
        accelerator_seconds: int | Mapping[str, int] | None = None,
    ) -> dict[str, Any]:
        """Add (or replace) a resource and return its JSON.

        Knobs a collection's SDK model has no field for raise ValueError when given
        (`progress`, `progress_rate`, `epoch`, `replica_count`, `estimated_cost_usd`,
        `accelerator_seconds`, `evaluator`, `deployment`, `model`); the older ones
        (`base_model`, `epochs`, `wandb`...) are simply not rendered there.

        Args:
            job_id: The id inside the account, e.g. `my-dpo-job`.
            collection: One of `COLLECTIONS`.
            state: `PENDING` or `JOB_STATE_PENDING` (bare names such as `READY` outside job
                collections); defaults to `INITIAL_STATES[collection]`; unknown names are
                kept as they are.
            display_name: Defaults to "Sim job {job_id}".
            output_model: Defaults to `accounts/{account}/models/{job_id}`.
            dataset: The training/input dataset; defaults to
                `accounts/{account}/datasets/{job_id}-data`.
            create_time: RFC 3339; defaults to the simulated now.
            wandb: Whether the job has a `wandbConfig` (with the echoed API key).
            progress: `jobProgress.percent` (sft, rft, rlor, batch-inference).
            progress_rate: Percent per clock second that `progress` grows while the job is
                RUNNING, capped at 100 (progress starts at 0 if not given).
            epoch: `jobProgress.epoch`.
            model: The served model: `model` of batch jobs and deployed models, `baseModel`
                of deployments (defaults: `base_model`, or `accounts/{account}/models/{id}`
                for a deployed model).
            evaluator: rft and evaluation jobs; defaults to
                `accounts/{account}/evaluators/{job_id}-evaluator`.
            deployment: A deployed model's deployment; defaults to
                `accounts/{account}/deployments/{job_id}-deployment`.
            replica_count: A deployment's `replicaCount`; by default 1 while READY or
                UPDATING, else 0.
            estimated_cost_usd: An SFT job's `estimatedCost` (google.type.Money, USD).
            accelerator_seconds: rft/rlor `acceleratorSeconds`: seconds of
                `DEFAULT_ACCELERATOR`, or a mapping accelerator type -> seconds.
        """
        now = self._clock()
        job = self._build(
            job_id,
            collection=collection,
            at=now,
            state=state,
            display_name=display_name,
            status_code=status_code,
            status_message=status_message,
            base_model=base_model,
            output_model=output_model,
            dataset=dataset,
            created_by=created_by,
            create_time=_parse_time(create_time) if create_time else None,
            epochs=epochs,
            learning_rate=learning_rate,
            wandb=wandb,
            progress=progress,
            progress_rate=progress_rate,
            epoch=epoch,
            model=model,
            evaluator=evaluator,
            deployment=deployment,
            replica_count=replica_count,
            estimated_cost_usd=estimated_cost_usd,
            accelerator_seconds=accelerator_seconds,
        )
        with self._lock:
            self._jobs[(collection, job_id)] = job
            return self._render(job)

    def set_state(
        self,
        job_id: str,
        state: str,
        *,
        collection: str = "dpoJobs",
        status_code: str = "OK",
        status_message: str = "",
    ) -> dict[str, Any]:
        """Move a resource to `state` now and return its JSON; a pending script keeps running.

        Raises:
            KeyError: The resource does not exist.
        """
        with self._lock:
            job = self._job(collection, job_id)
            now = self._clock()
            self._advance(job, now)
            self._apply(job, _Step(now, state, status_code, status_message))
            return self._render(job)

    def set_progress(
        self,
        job_id: str,
        percent: float,
        *,
        collection: str,
        epoch: int | None = None,
        rate: float | None = None,
    ) -> dict[str, Any]:
        """Set a job's `jobProgress.percent` (clamped to 0-100) now and return its JSON.

        Args:
            collection: One of `PROGRESS_COLLECTIONS`.
            epoch: Also set `jobProgress.epoch`.
            rate: Also set the percent per clock second it grows while RUNNING.

        Raises:
            KeyError: The resource does not exist.
            ValueError: The collection has no `jobProgress`.
        """
        if collection not in PROGRESS_COLLECTIONS:
            raise ValueError(f"{collection} has no jobProgress")
        changes: list[tuple[str, Any]] = [("progress", min(100.0, max(0.0, float(percent))))]
        if epoch is not None:
            changes.append(("epoch", epoch))
        if rate is not None:
            changes.append(("progress_rate", float(rate)))
        with self._lock:
            job = self._job(collection, job_id)
            now = self._clock()
            self._advance(job, now)
            step = _Step(now, job.state, job.status_code, job.status_message, tuple(changes))
            self._apply(job, step)
            return self._render(job)

    def remove_job(self, job_id: str, collection: str = "dpoJobs", *, purge: bool = False) -> None:
        """Delete a resource; later GETs answer 404. Raises KeyError if it does not exist.

        An RLOR trainer is first kept as `JOB_STATE_ARCHIVED`, as the gateway shows deleted
        trainers in their retention window; removing it again (or `purge=True`) drops it.
        """
        with self._lock:
            job = self._job(collection, job_id)
            if collection == "rlorTrainerJobs" and not purge and job.state != ARCHIVED_STATE:
                now = self._clock()
                self._advance(job, now)
                job.steps.clear()
                job.cycle = None
                self._apply(job, _Step(now, ARCHIVED_STATE))
                return
            del self._jobs[(collection, job_id)]

    def script(self, job_id: str, steps: Sequence[Step], collection: str = "dpoJobs") -> None:
        """Replace the job's timeline with `steps`, each `(seconds_from_now, state, code, message)`.

        Steps are applied lazily, whenever the job is read, once `clock()` has passed them,
        so no background task is needed and a fake clock makes them deterministic. Any
        `repeat` cycle of the job stops.
        """
        with self._lock:
            job = self._job(collection, job_id)
            start = self._clock()
            self._advance(job, start)
            job.cycle = None
            job.steps = sorted(
                (_Step(start + float(delay), st, code, msg) for delay, st, code, msg in steps),
                key=lambda step: step.at,
            )

    def repeat(
        self,
        job_id: str,
        steps: Sequence[Step],
        *,
        period: float,
        collection: str = "dpoJobs",
        start: float = 0.0,
    ) -> None:
        """Repeat `steps` (offsets in `[0, period)` seconds) every `period` seconds, forever.

        The first cycle begins `start` seconds from now, after any scripted steps still
        pending; like `script`, nothing runs in the background.
        """
        cycle_steps = tuple(
            sorted(
                (_Step(float(delay), st, code, msg) for delay, st, code, msg in steps),
                key=lambda step: step.at,
            )
        )
        self._set_cycle(job_id, collection, period, cycle_steps, start)

    def add_fault(
        self,
        *,
        status: int | None = None,
        times: int = 1,
        path_contains: str = "",
        retry_after: str | None = None,
        body: str | None = None,
        content_type: str = "application/json",
        delay: float = 0.0,
        malformed: bool = False,
        truncated: bool = False,
    ) -> None:
        """Queue a fault for the next `times` API requests whose path (and query) contains `path_contains`.

        Faults are consumed first-in first-out; `/_sim/` requests never match.

        Args:
            status: Answer with this HTTP status and a grpc-style error body (or `body`).
            retry_after: Sent as the `Retry-After` header.
            body: A raw body instead of the error JSON, e.g. an HTML error page.
            content_type: The Content-Type of the faulty answer.
            delay: Seconds to wait before answering (the answer is otherwise normal unless
                another kind is set too); lets a client's timeout fire.
            malformed: Answer 200 with a body that is not JSON (`{"name": `).
            truncated: Answer with the first half of the real body (Content-Length matching
                the half, so every transport delivers it and only the JSON parse fails).
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        fault = _Fault(
            remaining=times,
            status=status,
            path_contains=path_contains,
            retry_after=retry_after,
            body=body,
            content_type=content_type,
            delay=delay,
            malformed=malformed,
            truncated=truncated,
        )
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Drop every pending fault (and stop the `chaos` scenario's random ones)."""
        with self._lock:
            self._faults.clear()
            self._chaos = None

    @property
    def requests(self) -> list[tuple[str, str]]:
        """A copy of the `(method, path)` of every API request served, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many API requests (not `/_sim/` ones) were served, faults included."""
        with self._lock:
            return len(self._requests)

    def clear_requests(self) -> None:
        """Forget the served requests (e.g. after setting up, before counting)."""
        with self._lock:
            self._requests.clear()

    def jobs(self, collection: str = "dpoJobs") -> list[dict[str, Any]]:
        """A snapshot of the collection's resources as API JSON, ordered by name."""
        with self._lock:
            self._tick()
            return [self._render(job) for job in self._sorted(collection, "")]

    def job(self, job_id: str, collection: str = "dpoJobs") -> dict[str, Any]:
        """One resource's current JSON. Raises KeyError if it does not exist."""
        with self._lock:
            self._tick()
            job = self._job(collection, job_id)
            self._advance(job, self._clock())
            return self._render(job)

    # -- building records (no lock needed: nothing shared is touched) ------------------

    def _wall(self, at: float) -> datetime:
        return self._wall0 + timedelta(seconds=at - self._clock0)

    def _build(
        self,
        job_id: str,
        *,
        collection: str,
        at: float,
        state: str | None = None,
        display_name: str | None = None,
        status_code: str = "OK",
        status_message: str = "",
        base_model: str = DEFAULT_BASE_MODEL,
        output_model: str | None = None,
        dataset: str | None = None,
        created_by: str = "sim-user@example.com",
        create_time: datetime | None = None,
        epochs: int = 1,
        learning_rate: float = 0.0001,
        wandb: bool = True,
        progress: float | None = None,
        progress_rate: float = 0.0,
        epoch: int | None = None,
        model: str | None = None,
        evaluator: str | None = None,
        deployment: str | None = None,
        replica_count: int | None = None,
        estimated_cost_usd: float | None = None,
        accelerator_seconds: int | Mapping[str, int] | None = None,
    ) -> _Resource:
        if collection not in COLLECTIONS:
            raise ValueError(f"unknown collection {collection!r}")
        if not job_id or "/" in job_id:
            raise ValueError(f"invalid job id {job_id!r}")
        knobs = {
            "progress": (progress is not None or progress_rate != 0 or epoch is not None)
            and collection not in PROGRESS_COLLECTIONS,
            "replica_count": replica_count is not None and collection != "deployments",
            "estimated_cost_usd": estimated_cost_usd is not None
            and collection != "supervisedFineTuningJobs",
            "accelerator_seconds": accelerator_seconds is not None
            and collection not in ("reinforcementFineTuningJobs", "rlorTrainerJobs"),
            "evaluator": evaluator is not None
            and collection not in ("reinforcementFineTuningJobs", "evaluationJobs"),
            "deployment": deployment is not None and collection != "deployedModels",
            "model": model is not None
            and collection not in ("batchInferenceJobs", "deployments", "deployedModels"),
        }
        refused = sorted(name for name, bad in knobs.items() if bad)
        if refused:
            raise ValueError(f"{collection} has no field for {', '.join(refused)}")
        account = self.account_id
        wall = self._wall(at)
        initial = full_state(state, collection) if state else INITIAL_STATES[collection]
        if isinstance(accelerator_seconds, int):
            seconds: dict[str, int] | None = {DEFAULT_ACCELERATOR: accelerator_seconds}
        else:
            seconds = None if accelerator_seconds is None else dict(accelerator_seconds)
        if model is None:
            model = (
                f"accounts/{account}/models/{job_id}"
                if collection == "deployedModels"
                else base_model
            )
        has_completed = collection in COMPLETED_TIME_COLLECTIONS and initial in FINAL_STATES
        return _Resource(
            collection=collection,
            job_id=job_id,
            state=initial,
            status_code=status_code,
            status_message=status_message,
            display_name=f"Sim job {job_id}" if display_name is None else display_name,
            dataset=dataset or f"accounts/{account}/datasets/{job_id}-data",
            base_model=base_model,
            output_model=output_model or f"accounts/{account}/models/{job_id}",
            created_by=created_by,
            create_time=create_time or wall,
            update_time=wall,
            completed_time=wall if has_completed else None,
            delete_time=wall
            if collection == "deployments" and initial in ("DELETING", "DELETED")
            else None,
            epochs=epochs,
            learning_rate=learning_rate,
            wandb=wandb,
            model=model,
            evaluator=evaluator or f"accounts/{account}/evaluators/{job_id}-evaluator",
            deployment=deployment or f"accounts/{account}/deployments/{job_id}-deployment",
            progress=float(progress) if progress is not None else (0.0 if progress_rate else None),
            progress_rate=progress_rate,
            progress_clock=at,
            epoch=epoch,
            replica_count=replica_count,
            estimated_cost_usd=estimated_cost_usd,
            accelerator_seconds=seconds,
        )

    def _set_cycle(
        self,
        job_id: str,
        collection: str,
        period: float,
        steps: tuple[_Step, ...],
        start: float = 0.0,
    ) -> None:
        if period <= 0 or not steps:
            raise ValueError("a cycle needs a positive period and at least one step")
        if any(not 0 <= step.at < period for step in steps):
            raise ValueError("every step offset must be within [0, period)")
        for step in steps:
            unknown = {name for name, _ in step.changes} - _CHANGEABLE
            if unknown:
                raise ValueError(f"a step cannot change {sorted(unknown)}")
        with self._lock:
            job = self._job(collection, job_id)
            now = self._clock()
            job.cycle = _Cycle(now + start, float(period), steps)

    # -- state (every helper below expects the lock to be held) ------------------------

    def _job(self, collection: str, job_id: str) -> _Resource:
        try:
            return self._jobs[(collection, job_id)]
        except KeyError:
            raise KeyError(f"no job {collection}/{job_id}") from None

    def _advance(self, job: _Resource, now: float) -> None:
        """Apply every step due by `now` (refilling from the cycle) and accrue progress."""
        while True:
            if not job.steps and job.cycle is not None:
                self._refill(job, now)
            if not job.steps or job.steps[0].at > now:
                break
            step = job.steps.pop(0)
            self._accrue(job, step.at)
            self._apply(job, step)
        self._accrue(job, now)

    @staticmethod
    def _refill(job: _Resource, now: float) -> None:
        cycle = job.cycle
        assert cycle is not None
        # Far behind (a clock jump): skip whole cycles; each cycle sets its own states.
        behind = math.floor((now - cycle.origin) / cycle.period) - 1
        if behind > 0:
            cycle.origin += behind * cycle.period
        job.steps = [replace(step, at=cycle.origin + step.at) for step in cycle.steps]
        cycle.origin += cycle.period

    def _accrue(self, job: _Resource, at: float) -> None:
        """Grow progress at its rate while RUNNING, from the last accrual up to `at`."""
        if at <= job.progress_clock:
            return
        old = job.progress
        rate = job.progress_rate
        if old is not None and rate > 0 and job.state == _RUNNING and old < 100:
            new = min(100.0, old + rate * (at - job.progress_clock))
            if math.floor(new) != math.floor(old):
                # updateTime is when the (integer) percent last changed, not when it was read.
                job.update_time = self._wall(job.progress_clock + (math.floor(new) - old) / rate)
            job.progress = new
        job.progress_clock = at

    def _apply(self, job: _Resource, step: _Step) -> None:
        new_state = full_state(step.state, job.collection)
        changed = (new_state, step.status_code, step.status_message) != (
            job.state,
            job.status_code,
            job.status_message,
        )
        wall = self._wall(step.at)
        if new_state in FINAL_STATES and job.collection in COMPLETED_TIME_COLLECTIONS:
            if job.state != new_state or job.completed_time is None:
                job.completed_time = wall
        else:
            job.completed_time = None
        if new_state in ("DELETING", "DELETED") and job.collection == "deployments":
            job.delete_time = job.delete_time or wall
        else:
            job.delete_time = None
        job.state = new_state
        job.status_code = step.status_code
        job.status_message = step.status_message
        for name, value in step.changes:
            if getattr(job, name) != value:
                setattr(job, name, value)
                changed = True
        if changed:
            job.update_time = wall

    def _tick(self) -> None:
        """Let the spawners add (and retire) the resources due by now."""
        now = self._clock()
        for spawner in self._spawners:
            if now < spawner.origin:
                continue
            due = math.floor((now - spawner.origin) / spawner.every) + 1
            first = max(spawner.next_index, due - spawner.keep)
            for index in range(first, due):
                job = spawner.make(index, spawner.origin + index * spawner.every)
                self._jobs[(spawner.collection, job.job_id)] = job
                spawner.live.append((index, job.job_id))
            spawner.next_index = max(spawner.next_index, due)
            kept: list[tuple[int, str]] = []
            for index, job_id in spawner.live:
                key = (spawner.collection, job_id)
                age = due - 1 - index  # generations since this one was spawned
                if age < spawner.keep or key not in self._jobs:
                    if key in self._jobs:
                        kept.append((index, job_id))
                    continue
                job = self._jobs[key]
                if spawner.collection == "rlorTrainerJobs" and age < 2 * spawner.keep:
                    if job.state != ARCHIVED_STATE:
                        retired = spawner.origin + (index + spawner.keep) * spawner.every
                        retired = max(retired, job.progress_clock)
                        self._advance(job, retired)
                        job.steps.clear()
                        job.cycle = None
                        self._apply(job, _Step(retired, ARCHIVED_STATE))
                    kept.append((index, job_id))
                else:
                    del self._jobs[key]
            spawner.live = kept

    def _sorted(self, collection: str, order_by: str) -> list[_Resource]:
        now = self._clock()
        jobs = [job for (coll, _), job in self._jobs.items() if coll == collection]
        for job in jobs:
            self._advance(job, now)
        keys = [term.split() for term in order_by.split(",") if term.strip()] or [["name"]]
        # Stable sorts applied from the last key to the first give a multi-key order.
        jobs.sort(key=_ORDER_KEYS["name"])
        for term in reversed(keys):
            if (
                term[0] not in _ORDER_KEYS
                or len(term) > 2
                or term[1:] not in ([], ["asc"], ["desc"])
            ):
                raise _HttpError(400, f"invalid orderBy term {' '.join(term)!r}")
            jobs.sort(key=_ORDER_KEYS[term[0]], reverse=term[1:] == ["desc"])
        return jobs

    # -- rendering ---------------------------------------------------------------------

    def _render(self, job: _Resource) -> dict[str, Any]:
        """The resource as proto3 JSON in its collection's SDK shape; empty fields omitted."""
        account = self.account_id
        name = f"accounts/{account}/{job.collection}/{job.job_id}"
        document: dict[str, Any] = {"name": name, "displayName": job.display_name}
        document.update(_RENDERERS[job.collection](self, job))
        document["createTime"] = _rfc3339(job.create_time)
        if job.collection in UPDATE_TIME_COLLECTIONS:
            document["updateTime"] = _rfc3339(job.update_time)
        if job.completed_time is not None:
            document["completedTime"] = _rfc3339(job.completed_time)
        if job.delete_time is not None:
            document["deleteTime"] = _rfc3339(job.delete_time)
        document["state"] = job.state
        if "createdBy" in FIELDS[job.collection]:
            document["createdBy"] = job.created_by
        if job.wandb and job.collection in WANDB_COLLECTIONS:
            document["wandbConfig"] = {
                "enabled": True,
                "apiKey": self.wandb_api_key,
                "project": "sim-project",
                "entity": "sim-entity",
                "runId": job.job_id,
                "url": f"https://wandb.ai/sim-entity/sim-project/runs/{job.job_id}",
            }
        out: dict[str, Any] = _omit_empty(document)
        # status mimics google.rpc.Status; the gateway sends it whole, OK included.
        out["status"] = {"code": job.status_code, "message": job.status_message}
        return out

    def _training_config(self, job: _Resource) -> dict[str, Any]:
        return {
            "baseModel": job.base_model,
            "outputModel": job.output_model,
            "epochs": _nonzero(job.epochs),
            "learningRate": job.learning_rate,
            "loraRank": 8,
            "maxContextLength": 8192,
            "region": "US_IOWA_1",
        }

    def _job_progress(self, job: _Resource) -> dict[str, Any] | None:
        if job.progress is None:
            return None
        percent = math.floor(job.progress)
        progress: dict[str, Any] = {"percent": _nonzero(percent), "epoch": _nonzero(job.epoch)}
        if job.collection == "batchInferenceJobs":
            total = 1000
            processed = total * percent // 100
            failed = processed // 50
            progress |= {
                "totalInputRequests": total,
                "totalProcessedRequests": _nonzero(processed),
                "successfullyProcessedRequests": _nonzero(processed - failed),
                "failedRequests": _nonzero(failed),
                "outputRows": _nonzero(processed - failed),
                "inputTokens": _nonzero(processed * 420),
                "outputTokens": _nonzero(processed * 180),
            }
        return progress

    def _accelerator_seconds(self, job: _Resource) -> dict[str, str] | None:
        # int64 values travel as JSON strings.
        seconds = job.accelerator_seconds
        return None if seconds is None else {kind: str(n) for kind, n in seconds.items()}

    def _render_dpo(self, job: _Resource) -> dict[str, Any]:
        return {
            "dataset": job.dataset,
            "trainingConfig": self._training_config(job),
            "lossConfig": {"method": "DPO", "dpo": {"beta": 0.1}},
            "trainerLogsSignedUrl": SIGNED_LOGS_URL,
        }

    def _render_sft(self, job: _Resource) -> dict[str, Any]:
        cost = job.estimated_cost_usd
        estimated: dict[str, Any] | None = None
        if cost is not None:
            units = math.floor(cost)
            nanos = round((cost - units) * 1e9)
            estimated = {
                "currencyCode": "USD",
                "units": str(units) if units else None,
                "nanos": _nonzero(nanos),
            }
        return {
            "dataset": job.dataset,
            "baseModel": job.base_model,
            "outputModel": job.output_model,
            "epochs": _nonzero(job.epochs),
            "learningRate": job.learning_rate,
            "loraRank": 8,
            "maxContextLength": 8192,
            "region": "US_IOWA_1",
            "jobProgress": self._job_progress(job),
            "estimatedCost": estimated,
            "trainerLogsSignedUrl": SIGNED_LOGS_URL,
            "metricsFileSignedUrl": SIGNED_METRICS_URL,
        }

    def _render_rft(self, job: _Resource) -> dict[str, Any]:
        return {
            "dataset": job.dataset,
            "evaluator": job.evaluator,
            "trainingConfig": self._training_config(job),
            "lossConfig": {"method": "GRPO", "klBeta": 0.01},
            "inferenceParameters": {
                "maxOutputTokens": 2048,
                "temperature": 1.0,
                "responseCandidatesCount": 4,
            },
            "jobProgress": self._job_progress(job),
            "acceleratorSeconds": self._accelerator_seconds(job),
            "nodeCount": 1,
            "trainerLogsSignedUrl": SIGNED_LOGS_URL,
        }

    def _render_rlor(self, job: _Resource) -> dict[str, Any]:
        return {
            "dataset": job.dataset,
            "trainingConfig": self._training_config(job),
            "lossConfig": {"method": "GRPO"},
            "jobProgress": self._job_progress(job),
            "acceleratorSeconds": self._accelerator_seconds(job),
            "keepAlive": True,
            "nodeCount": 1,
        }

    def _render_batch(self, job: _Resource) -> dict[str, Any]:
        return {
            "model": job.model,
            "inputDatasetId": job.dataset,
            "outputDatasetId": f"accounts/{self.account_id}/datasets/{job.job_id}-output",
            "inferenceParameters": {"maxTokens": 1024, "temperature": 0.7},
            "jobProgress": self._job_progress(job),
        }

    def _render_evaluation(self, job: _Resource) -> dict[str, Any]:
        done = job.state == STATE_PREFIX + "COMPLETED"
        return {
            "evaluator": job.evaluator,
            "inputDataset": job.dataset,
            "outputDataset": f"accounts/{self.account_id}/datasets/{job.job_id}-output",
            "metrics": {"accuracy": 0.87, "reward": 0.5} if done else None,
            "outputStats": json.dumps({"rows": 1000, "meanScore": 0.87}) if done else None,
        }

    def _render_evaluator(self, job: _Resource) -> dict[str, Any]:
        return {
            "description": f"Simulated evaluator {job.job_id}",
            "defaultDataset": job.dataset,
            "entryPoint": "main.py::evaluate",
            "source": {"type": "TYPE_UPLOAD"},
            "criteria": [
                {
                    "name": "accuracy",
                    "type": "CODE_SNIPPETS",
                    "description": "Exact match against the reference answer",
                    "codeSnippets": {
                        "language": "python",
                        "entryFile": "main.py",
                        "entryFunc": "evaluate",
                    },
                }
            ],
        }

    def _render_deployment(self, job: _Resource) -> dict[str, Any]:
        replicas = job.replica_count
        if replicas is None:
            replicas = 1 if job.state in ("READY", "UPDATING") else 0
        return {
            "baseModel": job.model,
            "description": f"Simulated deployment {job.job_id}",
            "replicaCount": _nonzero(replicas),
            "desiredReplicaCount": _nonzero(replicas),
            "maxReplicaCount": max(4, replicas),
            "acceleratorType": DEFAULT_ACCELERATOR,
            "acceleratorCount": 1,
            "precision": "FP8",
            "autoscalingPolicy": {
                "scaleUpWindow": "30s",
                "scaleDownWindow": "600s",
                "scaleToZeroWindow": "3600s",
                "loadTargets": {"default": 0.8},
            },
            "replicaStats": {"readyReplicaCount": _nonzero(replicas)},
            "directRouteType": "INTERNET",
            "directRouteApiKeys": [self.route_api_key],
            "enableAddons": True,
        }

    def _render_deployed_model(self, job: _Resource) -> dict[str, Any]:
        return {"model": job.model, "deployment": job.deployment, "default": True}

    def _render_model(self, job: _Resource) -> dict[str, Any]:
        return {
            "description": f"Simulated fine-tuned model {job.job_id}",
            "kind": "HF_PEFT_ADDON",
            "peftDetails": {
                "baseModel": job.base_model,
                "r": 8,
                "targetModules": ["q_proj", "v_proj"],
            },
            "contextLength": 8192,
        }

    def _render_dataset(self, job: _Resource) -> dict[str, Any]:
        ready = job.state == "READY"
        return {
            "format": "CHAT",
            # int64 counts travel as JSON strings.
            "exampleCount": "1000" if ready else None,
            "estimatedTokenCount": "420000" if ready else None,
        }

    def _take_fault(self, target: str) -> _Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.path_contains in target:
                fault.remaining -= 1
                if fault.remaining == 0:
                    del self._faults[index]
                return fault
        return None if self._chaos is None else _chaos_fault(self._chaos)

    # -- HTTP: the API -----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 entry point."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are no part of the API
        path: str = scope["path"]
        query: str = scope.get("query_string", b"").decode("latin-1")
        method: str = scope["method"]
        if path.startswith("/_sim/"):
            body = await _read_body(receive)
            reply = self._control(method, path, body)
        else:
            reply = await self._serve_api(method, path, query, _headers(scope))
        await _send_reply(send, reply)

    async def _serve_api(
        self, method: str, path: str, query: str, headers: dict[str, str]
    ) -> _Reply:
        with self._lock:
            self._requests.append((method, path))
            fault = self._take_fault(f"{path}?{query}" if query else path)
        if fault is not None and fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            if fault.body is None:
                reply = _error_reply(fault.status, f"simulated fault: HTTP {fault.status}")
            else:
                reply = _Reply(fault.status, fault.body.encode(), fault.content_type)
        else:
            with self._lock:
                try:
                    reply = self._api(method, path, query, headers)
                except _HttpError as error:
                    reply = _error_reply(error.status, error.message)
            if fault is not None and fault.malformed:
                reply = _Reply(200, b'{"name": ', fault.content_type)
            elif fault is not None and fault.truncated:
                reply = replace(reply, body=reply.body[: len(reply.body) // 2])
        if fault is not None and fault.retry_after is not None:
            reply = replace(reply, headers=(*reply.headers, ("retry-after", fault.retry_after)))
        return reply

    def _api(self, method: str, path: str, query: str, headers: dict[str, str]) -> _Reply:
        if not self._authorized(headers):
            raise _HttpError(401, "request is missing a valid API key")
        parts = path.split("/")
        if len(parts) not in (5, 6) or parts[:3] != ["", "v1", "accounts"]:
            raise _HttpError(404, f"no route for {path}")
        if method != "GET":
            raise _HttpError(405, f"method {method} is not allowed here")
        account, collection = parts[3], parts[4]
        if account != self.account_id:
            raise _HttpError(403, f"permission denied for account {account!r}")
        if collection not in COLLECTIONS:
            raise _HttpError(404, f"no route for {path}")
        params = _params(query)
        mask = self._mask_paths(params.get("readMask", ""), collection)
        self._tick()
        if len(parts) == 6:
            job = self._jobs.get((collection, parts[5]))
            if job is None:
                raise _HttpError(404, f"job accounts/{account}/{collection}/{parts[5]} not found")
            self._advance(job, self._clock())
            return _Reply(200, _json_bytes(self._render_masked(job, mask)))
        return _Reply(200, _json_bytes(self._list(collection, params, mask)))

    def _authorized(self, headers: dict[str, str]) -> bool:
        expected = self.api_key.encode()
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode("latin-1"), expected
        ):
            return True
        return hmac.compare_digest(headers.get("x-api-key", "").encode("latin-1"), expected)

    @staticmethod
    def _mask_paths(read_mask: str, collection: str) -> list[str] | None:
        paths = [_camel(p.strip()) for p in read_mask.split(",") if p.strip()]
        if not paths or "*" in paths:
            return None
        for path in paths:
            if path.split(".")[0] not in FIELDS[collection]:
                raise _HttpError(400, f"invalid readMask path {path!r} for {collection}")
        return paths

    def _render_masked(self, job: _Resource, mask: list[str] | None) -> dict[str, Any]:
        document = self._render(job)
        return document if mask is None else _mask(document, mask)

    def _list(
        self, collection: str, params: dict[str, str], mask: list[str] | None
    ) -> dict[str, Any]:
        try:
            size = int(params.get("pageSize") or DEFAULT_PAGE_SIZE)
        except ValueError:
            raise _HttpError(400, "pageSize must be an integer") from None
        if size < 0:
            raise _HttpError(400, "pageSize must not be negative")
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        order_by = params.get("orderBy", "")
        filter_text = params.get("filter", "")
        show_deleted = params.get("showDeleted", "").lower()
        if show_deleted not in ("", "true", "false", "1", "0"):
            raise _HttpError(400, "showDeleted must be true or false")
        offset = _decode_token(params.get("pageToken", ""), order_by, filter_text)
        jobs = [
            job
            for job in self._sorted(collection, order_by)
            if _matches(job, filter_text)
            and (job.state != "DELETED" or show_deleted in ("true", "1"))
        ]
        page = jobs[offset : offset + size]
        # proto3 JSON omits an empty list, an empty token and a zero count.
        out: dict[str, Any] = {}
        if page:
            out[collection] = [self._render_masked(job, mask) for job in page]
        if offset + size < len(jobs):
            out["nextPageToken"] = _encode_token(offset + size, order_by, filter_text)
        if jobs:
            out["totalSize"] = len(jobs)
        return out

    # -- HTTP: the /_sim/ control API --------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> _Reply:
        parts = path.removeprefix("/_sim/").strip("/").split("/")
        try:
            payload: Any = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise TypeError("the body must be a JSON object")
            result = self._control_route(method, parts, payload)
        except KeyError as error:
            return _error_reply(404, str(error.args[0] if error.args else error))
        except (TypeError, ValueError) as error:
            return _error_reply(400, str(error))
        return _Reply(200, _json_bytes(result))

    def _control_route(self, method: str, parts: list[str], payload: dict[str, Any]) -> object:
        match method, parts:
            case "POST", ["jobs"]:
                return self.add_job(**payload)
            case "GET", ["jobs", collection]:
                return {"jobs": self.jobs(collection)}
            case "GET", ["jobs", collection, job_id]:
                return self.job(job_id, collection)
            case "POST", ["jobs", collection, job_id, "state"]:
                return self.set_state(job_id, collection=collection, **payload)
            case "POST", ["jobs", collection, job_id, "progress"]:
                return self.set_progress(job_id, collection=collection, **payload)
            case "POST", ["jobs", collection, job_id, "script"]:
                self.script(job_id, _steps(payload.pop("steps", None)), collection=collection)
                return {}
            case "POST", ["jobs", collection, job_id, "repeat"]:
                steps = _steps(payload.pop("steps", None))
                self.repeat(job_id, steps, collection=collection, **payload)
                return {}
            case "DELETE", ["jobs", collection, job_id]:
                self.remove_job(job_id, collection, **payload)
                return {}
            case "POST", ["faults"]:
                self.add_fault(**payload)
                return {}
            case "DELETE", ["faults"]:
                self.clear_faults()
                return {}
            case "POST", ["scenario"]:
                return {"resources": scenario(self, **payload)}
            case "GET", ["stats"]:
                with self._lock:
                    return {
                        "requests": len(self._requests),
                        "jobs": len(self._jobs),
                        "faults": len(self._faults),
                    }
        raise KeyError(f"no control route {method} /_sim/{'/'.join(parts)}")


_RENDERERS: dict[str, Callable[[Simulator, _Resource], dict[str, Any]]] = {
    "dpoJobs": Simulator._render_dpo,
    "supervisedFineTuningJobs": Simulator._render_sft,
    "reinforcementFineTuningJobs": Simulator._render_rft,
    "rlorTrainerJobs": Simulator._render_rlor,
    "batchInferenceJobs": Simulator._render_batch,
    "evaluationJobs": Simulator._render_evaluation,
    "evaluators": Simulator._render_evaluator,
    "deployments": Simulator._render_deployment,
    "deployedModels": Simulator._render_deployed_model,
    "models": Simulator._render_model,
    "datasets": Simulator._render_dataset,
}


def _steps(raw_steps: object) -> list[Step]:
    if not isinstance(raw_steps, list):
        raise TypeError("steps must be a list of [seconds, state, code, message]")
    return [(float(s), str(st), str(c), str(m)) for s, st, c, m in raw_steps]


def _chaos_fault(chaos: _Chaos) -> _Fault | None:
    """Maybe a one-off fault for this request, drawn from the seeded generator."""
    rng = chaos.rng
    if rng.random() >= chaos.rate:
        return None
    kind = rng.choice(("500", "503", "429", "slow", "malformed"))
    return _Fault(
        remaining=1,
        status={"500": 500, "503": 503, "429": 429}.get(kind),
        path_contains="",
        retry_after="1" if kind == "429" else None,
        body=None,
        content_type="application/json",
        delay=CHAOS_SLOW_SECONDS if kind == "slow" else 0.0,
        malformed=kind == "malformed",
        truncated=False,
    )


def _params(query: str) -> dict[str, str]:
    """Query parameters by their JSON name; a repeated parameter is joined with commas."""
    parsed = parse_qs(query, keep_blank_values=True)
    return {_PARAM_ALIASES.get(key, key): ",".join(values) for key, values in parsed.items()}


def _matches(job: _Resource, filter_text: str) -> bool:
    if not filter_text.strip():
        return True
    found = _FILTER.match(filter_text)
    if found is None:
        raise _HttpError(400, "unsupported filter; the simulator knows only state=X")
    field_name, value = found.groups()
    if field_name == "state":
        return job.state == full_state(value, job.collection)
    return job.display_name == value


def _encode_token(offset: int, order_by: str, filter_text: str) -> str:
    # The token binds orderBy and filter: the docs require them unchanged while paging.
    raw = json.dumps([offset, order_by, filter_text]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, order_by: str, filter_text: str) -> int:
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        offset, token_order, token_filter = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise _HttpError(400, "invalid pageToken") from None
    if not isinstance(offset, int) or offset < 0:
        raise _HttpError(400, "invalid pageToken")
    if (token_order, token_filter) != (order_by, filter_text):
        raise _HttpError(400, "orderBy and filter must match the call that gave the pageToken")
    return offset


def _headers(scope: Scope) -> dict[str, str]:
    return {
        key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]
    }


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send_reply(send: Send, reply: _Reply) -> None:
    headers = [
        (b"content-type", reply.content_type.encode("latin-1")),
        (b"content-length", str(len(reply.body)).encode()),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers),
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Nothing to set up; answering lets servers run with lifespan on as well as off.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- timelines and scenarios ----------------------------------------------------------

_OOM = "Training failed: CUDA out of memory at step 412"
_CANCELLED_BY = "Job cancelled by sim-user@example.com"


def demo_timeline(sim: Simulator) -> list[str]:
    """Add four DPO jobs that move within ~15 s, and return their ids.

    `demo-complete` goes PENDING→RUNNING→COMPLETED, `demo-oom` RUNNING→FAILED (INTERNAL,
    out of memory), `demo-cancel` CREATING→PENDING→RUNNING→CANCELLED and `demo-steady`
    stays RUNNING. Steps of one job are at least 4 s apart so a 2 s poll sees each.
    """
    sim.add_job("demo-complete", state="PENDING", display_name="Demo: completes")
    sim.script("demo-complete", [(4, "RUNNING", "OK", ""), (14, "COMPLETED", "OK", "")])
    sim.add_job("demo-oom", state="RUNNING", display_name="Demo: runs out of memory")
    sim.script("demo-oom", [(9, "FAILED", "INTERNAL", _OOM)])
    sim.add_job("demo-cancel", state="CREATING", display_name="Demo: cancelled")
    sim.script(
        "demo-cancel",
        [
            (3, "PENDING", "OK", ""),
            (7, "RUNNING", "OK", ""),
            (12, "CANCELLED", "CANCELLED", _CANCELLED_BY),
        ],
    )
    sim.add_job("demo-steady", state="RUNNING", display_name="Demo: keeps running")
    return ["demo-complete", "demo-oom", "demo-cancel", "demo-steady"]


def _s(offset: float, state: str, code: str = "OK", message: str = "", **changes: Any) -> _Step:
    """A cycle or script step; `changes` sets record attributes such as `progress`."""
    return _Step(float(offset), state, code, message, tuple(changes.items()))


# (collection, id, add_job kwargs, one-off steps, cycle start, cycle period, cycle steps)
_BusyEntry = tuple[str, str, dict[str, Any], tuple[_Step, ...], float, float, tuple[_Step, ...]]
_BUSY: tuple[_BusyEntry, ...] = (
    (
        "dpoJobs",
        "busy-dpo",
        {},
        (),
        0,
        60,
        (
            _s(0, "PENDING"),
            _s(5, "RUNNING"),
            _s(30, "COMPLETED"),
            _s(40, "RUNNING"),  # resumed
            _s(52, "FAILED", "INTERNAL", _OOM),
        ),
    ),
    (
        "supervisedFineTuningJobs",
        "busy-sft",
        {"progress": 0, "progress_rate": 5.0, "estimated_cost_usd": 12.5},
        (),
        0,
        60,
        (
            _s(0, "PENDING", progress=0.0, epoch=0),
            _s(4, "RUNNING"),
            _s(14, "RUNNING", epoch=1),
            _s(26, "COMPLETED"),
        ),
    ),
    (
        "supervisedFineTuningJobs",
        "busy-sft-quota",
        {"state": "RUNNING", "progress": 0, "progress_rate": 4.0},
        (),
        0,
        55,
        (
            _s(0, "RUNNING", progress=0.0),
            _s(15, "FAILED", "RESOURCE_EXHAUSTED", "Out of GPU quota for NVIDIA_H100_80GB"),
            _s(25, "PENDING"),  # resumed: progress goes on from where it stopped
            _s(30, "RUNNING"),
            _s(45, "COMPLETED"),
        ),
    ),
    (
        "reinforcementFineTuningJobs",
        "busy-rft",
        {"state": "CREATING", "progress": 0, "progress_rate": 2.0},
        (),
        0,
        70,
        (
            _s(0, "CREATING", progress=0.0, accelerator_seconds=None),
            _s(3, "PENDING"),
            _s(8, "RUNNING"),
            _s(40, "RUNNING", epoch=1),
            _s(
                60,
                "CANCELLED",
                "CANCELLED",
                _CANCELLED_BY,
                accelerator_seconds={DEFAULT_ACCELERATOR: 52 * 3600},
            ),
        ),
    ),
    (
        "rlorTrainerJobs",
        "busy-rlor",
        {"state": "CREATING", "progress": 0, "progress_rate": 4.0},
        (),
        0,
        50,
        (
            _s(0, "CREATING", progress=0.0),
            _s(4, "RUNNING"),
            _s(30, "COMPLETED", accelerator_seconds={DEFAULT_ACCELERATOR: 26 * 8}),
        ),
    ),
    (
        "batchInferenceJobs",
        "busy-batch",
        {"state": "VALIDATING", "progress": 0, "progress_rate": 5.0},
        (),
        0,
        45,
        (
            _s(0, "VALIDATING", progress=0.0),
            _s(3, "RUNNING"),
            _s(25, "COMPLETED"),
        ),
    ),
    (
        "batchInferenceJobs",
        "busy-batch-fail",
        {"progress": 0, "progress_rate": 2.0},
        (),
        0,
        40,
        (
            _s(0, "PENDING", progress=0.0),
            _s(5, "RUNNING"),
            _s(20, "FAILED", "INVALID_ARGUMENT", "Row 17 of the input dataset is not JSON"),
        ),
    ),
    (
        "evaluationJobs",
        "busy-eval",
        {},
        (),
        0,
        40,
        (_s(0, "PENDING"), _s(4, "RUNNING"), _s(20, "COMPLETED")),
    ),
    (
        "evaluationJobs",
        "busy-eval-fail",
        {"state": "RUNNING"},
        (),
        0,
        35,
        (_s(0, "RUNNING"), _s(15, "FAILED", "INTERNAL", "Evaluator raised ZeroDivisionError")),
    ),
    (
        "evaluators",
        "busy-evaluator",
        {},
        (_s(8, "ACTIVE"),),
        30,
        60,
        (
            _s(0, "BUILDING"),
            _s(10, "BUILD_FAILED", "FAILED_PRECONDITION", "pip install failed: no numpy==0.0"),
            _s(25, "BUILDING"),
            _s(35, "ACTIVE"),
        ),
    ),
    (
        "deployments",
        "busy-deployment",
        {},
        (_s(10, "READY"),),
        30,
        60,
        (
            _s(0, "UPDATING"),
            _s(10, "READY", replica_count=2),
            _s(30, "UPDATING"),
            _s(40, "READY", replica_count=1),
        ),
    ),
    (
        "deployedModels",
        "busy-lora",
        {"deployment": "accounts/{account}/deployments/busy-deployment"},
        (_s(6, "DEPLOYED"),),
        20,
        60,
        (
            _s(0, "UPDATING"),
            _s(8, "DEPLOYED"),
            _s(40, "UNDEPLOYING"),
            _s(45, "DEPLOYING"),
            _s(50, "DEPLOYED"),
        ),
    ),
    ("models", "busy-model", {}, (_s(5, "READY"),), 0, 0, ()),
    ("datasets", "busy-dataset", {}, (_s(5, "READY"),), 0, 0, ()),
)
# (collection, id prefix, every, keep, add_job kwargs, steps relative to the spawn)
_BusySpawn = tuple[str, str, float, int, dict[str, Any], tuple[_Step, ...]]
_BUSY_SPAWNS: tuple[_BusySpawn, ...] = (
    (
        "dpoJobs",
        "busy-dpo-run",
        45,
        3,
        {},
        (_s(4, "RUNNING"), _s(25, "COMPLETED")),
    ),
    (
        "supervisedFineTuningJobs",
        "busy-sft-run",
        60,
        3,
        {"progress": 0, "progress_rate": 4.0, "estimated_cost_usd": 3.75},
        (_s(3, "RUNNING"), _s(20, "RUNNING", epoch=1), _s(30, "EARLY_STOPPED")),
    ),
    (
        "rlorTrainerJobs",
        "busy-rlor-run",
        50,
        2,
        {"state": "CREATING", "progress": 0, "progress_rate": 5.0},
        (_s(3, "RUNNING"), _s(25, "COMPLETED", accelerator_seconds={DEFAULT_ACCELERATOR: 176})),
    ),
    (
        "deployments",
        "busy-deployment-run",
        90,
        3,
        {},
        (_s(15, "READY"), _s(60, "DELETING"), _s(70, "DELETED")),
    ),
    ("models", "busy-model-run", 60, 3, {}, (_s(10, "READY"),)),
    ("datasets", "busy-dataset-run", 60, 3, {}, (_s(8, "READY"),)),
)


def _busy(sim: Simulator) -> list[str]:
    """Resources of every collection that keep moving forever (see `scenario`)."""
    start = sim._clock()
    added: list[str] = []
    for collection, job_id, kwargs, once, cycle_at, period, cycle in _BUSY:
        options: dict[str, Any] = {
            key: value.format(account=sim.account_id) if isinstance(value, str) else value
            for key, value in kwargs.items()
        }
        sim.add_job(job_id, collection=collection, display_name=f"Busy: {job_id}", **options)
        with sim._lock:
            sim._job(collection, job_id).steps = [
                replace(step, at=start + step.at) for step in once
            ]
        if cycle:
            sim._set_cycle(job_id, collection, period, cycle, cycle_at)
        added.append(f"{collection}/{job_id}")
    for collection, prefix, every, keep, kwargs, steps in _BUSY_SPAWNS:

        def make(
            index: int,
            at: float,
            collection: str = collection,
            prefix: str = prefix,
            kwargs: dict[str, Any] = kwargs,
            steps: tuple[_Step, ...] = steps,
        ) -> _Resource:
            job = sim._build(
                f"{prefix}-{index:04d}",
                collection=collection,
                at=at,
                display_name=f"Busy: {prefix} #{index}",
                **kwargs,
            )
            job.steps = [replace(step, at=at + step.at) for step in steps]
            return job

        with sim._lock:
            sim._spawners.append(_Spawner(collection, start, float(every), keep, make))
            sim._tick()
        added.append(f"{collection}/{prefix}-*")
    return added


#: The scenarios `scenario()` (and `--scenario`) know.
SCENARIOS: tuple[str, ...] = ("demo", "busy", "chaos")


def scenario(sim: Simulator, name: str, *, seed: int = 0) -> list[str]:
    """Load a named scenario into `sim` (on top of what it holds); return what it added.

    - `demo`: `demo_timeline`, four DPO jobs that settle within ~15 s.
    - `busy`: resources of every collection that keep moving forever, worked out lazily
      from the clock: jobs run with progress, complete, fail or are cancelled and are then
      resumed; new runs are spawned every minute or so and old ones retired (RLOR trainers
      via ARCHIVED, deployments via DELETING and DELETED); deployments go
      CREATING→READY→UPDATING→READY, evaluators BUILDING→ACTIVE (and BUILD_FAILED), ...
    - `chaos`: `busy`, plus faults on about one API answer in eight, drawn from `seed`:
      500, 503, 429 with `Retry-After: 1`, a slow answer (`CHAOS_SLOW_SECONDS`) and a
      malformed body. `clear_faults()` stops them.

    Returns `collection/id` entries (`collection/prefix-*` for spawned runs).
    """
    if name == "demo":
        return [f"dpoJobs/{job_id}" for job_id in demo_timeline(sim)]
    if name == "busy":
        return _busy(sim)
    if name == "chaos":
        added = _busy(sim)
        with sim._lock:
            sim._chaos = _Chaos(random.Random(seed), rate=0.125)
        return added
    raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")


# (state, weight, status code, status message)
_POPULATION: tuple[tuple[str, int, str, str], ...] = (
    ("RUNNING", 30, "OK", ""),
    ("COMPLETED", 25, "OK", ""),
    ("PENDING", 15, "OK", ""),
    ("FAILED", 10, "INTERNAL", _OOM),
    ("CANCELLED", 8, "CANCELLED", _CANCELLED_BY),
    ("CREATING", 5, "OK", ""),
    ("VALIDATING", 3, "OK", ""),
    ("EARLY_STOPPED", 2, "OK", ""),
    ("EXPIRED", 2, "DEADLINE_EXCEEDED", "Job expired"),
)
_BASE_MODELS = (
    DEFAULT_BASE_MODEL,
    "accounts/fireworks/models/qwen2p5-7b-instruct",
    "accounts/fireworks/models/llama-v3p3-70b-instruct",
)


def populate(sim: Simulator, n: int, *, seed: int = 0) -> list[str]:
    """Add `n` DPO jobs `job-00000`... with states drawn deterministically from `seed`.

    Create times are one minute apart from 2025-01-01, so ordering by them is stable too.
    Returns the job ids.
    """
    rng = random.Random(seed)
    epoch = datetime(2025, 1, 1, tzinfo=UTC)
    weights = [weight for _, weight, _, _ in _POPULATION]
    ids: list[str] = []
    for index in range(n):
        state, _, code, message = rng.choices(_POPULATION, weights)[0]
        job_id = f"job-{index:05d}"
        sim.add_job(
            job_id,
            state=state,
            status_code=code,
            status_message=message,
            display_name=f"Populated job {index}",
            base_model=rng.choice(_BASE_MODELS),
            create_time=_rfc3339(epoch + timedelta(minutes=index)),
            epochs=rng.randint(1, 3),
        )
        ids.append(job_id)
    return ids


# -- serving -------------------------------------------------------------------------


def base_url(sock: socket.socket) -> str:
    """`http://host:port` for a bound socket (IPv6 hosts get brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listen_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0 picks a free one), ready for uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets whose proto is
    # IPPROTO_TCP, and without it every keep-alive answer stalls ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `sim` with uvicorn until interrupted (blocking).

    The socket is bound and listening before `ready(base_url)` is called, so whoever is
    told the URL can connect at once; port 0 picks a free port.
    """
    import uvicorn  # lazy: only serving needs it, and tests of the app itself do not

    config = uvicorn.Config(
        sim, interface="asgi3", lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    with listen_tcp(host, port) as sock:
        if ready is not None:
            ready(base_url(sock))
        server.run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator alone: `python -m watcher.simulator [--port P] [--jobs N] [--scenario S]`.

    `--scenario` loads `demo` (the default), `busy` or `chaos` (faults drawn from `--seed`);
    `--jobs N` adds N generated DPO jobs instead of the demo, or beside busy and chaos.
    """
    parser = argparse.ArgumentParser(
        prog="python -m watcher.simulator", description="Serve a Fireworks API look-alike."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument(
        "--jobs", type=int, default=0, metavar="N", help="populate N DPO jobs (0: none)"
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default=None,
        help="demo (default; replaced by --jobs N), busy (every kind, forever) or chaos",
    )
    parser.add_argument("--seed", type=int, default=0, help="the chaos scenario's fault seed")
    env_key = os.environ.get("FIREWORKS_API_KEY")
    parser.add_argument("--api-key", default=env_key or "sim-key")
    parser.add_argument("--account", default=os.environ.get("FIREWORKS_ACCOUNT_ID", "sim-account"))
    args = parser.parse_args(argv)

    sim = Simulator(api_key=args.api_key, account_id=args.account)
    loaded: list[str] = []
    if args.jobs > 0:
        loaded += populate(sim, args.jobs)
    # Generated jobs replace the demo (the default scenario); busy and chaos add to them.
    name = args.scenario or "demo"
    if args.jobs > 0 and name == "demo":
        name = None
    if name is not None:
        loaded += scenario(sim, name, seed=args.seed)
    what = f"scenario {name}" if name else "generated"
    # A key taken from the environment may be a real one: never print it.
    shown_key = "(as already set)" if args.api_key == env_key else args.api_key

    def announce(url: str) -> None:
        print(
            f"Fireworks simulator listening on {url} with {len(loaded)} resources ({what});"
            f" point the watcher at it: FIREWORKS_BASE_URL={url}"
            f" FIREWORKS_ACCOUNT_ID={args.account} FIREWORKS_API_KEY={shown_key}",
            flush=True,
        )

    previous = None
    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the SIGTERM it caught once it has shut down; make that exit 0.
        previous = signal.signal(signal.SIGTERM, _exit_zero)
    try:
        serve(sim, args.host, args.port, ready=announce)
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _exit_zero(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    raise SystemExit(main())
