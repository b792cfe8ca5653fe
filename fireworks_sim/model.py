"""The resource records and their vocabulary: collections, states, steps, cycles and spawners.

Plain data and pure helpers, shared by every other module of the simulator. Time is one
injected monotonic clock; wall times are RFC 3339 strings in UTC (`_rfc3339`, `_parse_time`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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

DEFAULT_BASE_MODEL = "accounts/fireworks/models/llama-v3p1-8b-instruct"
DEFAULT_ACCELERATOR = "NVIDIA_H100_80GB"

#: A scripted step: (seconds after the `script()` call, state, status code, status message).
Step = tuple[float, str, str, str]
# Record attributes a step may change beside the state (see `_Step.changes`).
_CHANGEABLE = frozenset(
    {"progress", "progress_rate", "epoch", "replica_count", "accelerator_seconds"}
)


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
    #: A model's `fineTuningJob` (the job's resource name), "" for none.
    fine_tuning_job: str = ""
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


#: The account's own resource (`GET /v1/accounts/{id}`, SDK `Account`): no collection, no LIST.
ACCOUNT_STATES: tuple[str, ...] = ("STATE_UNSPECIFIED", "CREATING", "READY", "UPDATING", "DELETING")
#: `suspendState`: UNSUSPENDED, or why the account may not run jobs.
SUSPEND_STATES: tuple[str, ...] = (
    "UNSUSPENDED",
    "FAILED_PAYMENTS",
    "CREDIT_DEPLETED",
    "MONTHLY_SPEND_LIMIT_EXCEEDED",
    "BLOCKED_BY_ABUSE_RULE",
)
#: What a suspension does to a job that was RUNNING (the SDK: "typically due to account suspension").
PAUSED_STATE = STATE_PREFIX + "PAUSED"


@dataclass(slots=True)
class _Account:
    """The account's record; rendered by `shapes.render_account`.

    `paused` holds the jobs its suspension paused, (collection, id), resumed when it ends.
    """

    account_id: str
    display_name: str
    email: str
    create_time: datetime
    update_time: datetime
    state: str = "READY"
    suspend_state: str = "UNSUSPENDED"
    status_message: str = ""
    paused: list[tuple[str, str]] = field(default_factory=list)


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
