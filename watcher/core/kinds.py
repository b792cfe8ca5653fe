"""Every Fireworks resource the watcher follows, as data: one `ResourceKind` per collection.

A descriptor says where the resource lives (collection path, LIST key), what its states mean,
which fields the watcher reads (and so its `readMask`), how to read them, where the web console
shows it, and what `watch` answers for each outcome. Adding a kind is one `JobKind` member and
one entry in `KINDS`, plus a simulator shape and tests; no other module changes. A kind that
is no collection (the account) says so in its entry: its `path`, the field holding its state.

Pure data and pure functions: no I/O, no clock, no logging.

The shapes follow the official SDK's models (`fireworks-ai` 1.2.30); `tests/contract/test_sdk_oracle.py`
checks every `readMask` against them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from watcher.core.fields import Field, money, number, sub, sum_of_values, text

#: The Fireworks control-plane API's root (without `/v1`).
DEFAULT_BASE_URL: Final = "https://api.fireworks.ai"


class JobKind(StrEnum):
    """A kind of Fireworks resource, named as in the config file (`kind = "sft"`)."""

    DPO = "dpo"
    SFT = "sft"
    RFT = "rft"
    RLOR = "rlor"
    BATCH_INFERENCE = "batch-inference"
    EVALUATION = "evaluation"
    EVALUATOR = "evaluator"
    DEPLOYMENT = "deployment"
    DEPLOYED_MODEL = "deployed-model"
    MODEL = "model"
    DATASET = "dataset"
    ACCOUNT = "account"

    @property
    def spec(self) -> ResourceKind:
        """The descriptor of this kind."""
        return KINDS[self]

    @property
    def collection(self) -> str:
        """The REST collection segment, e.g. `dpoJobs`; it is also the LIST response key
        ("" for the account, which is one resource)."""
        return KINDS[self].collection


class Meaning(StrEnum):
    """What a state means for the people watching."""

    ACTIVE = "active"  # on its way: polled at the normal pace
    SUCCESS = "success"  # a good outcome (COMPLETED, READY, ...)
    FAILURE = "failure"  # a bad outcome (FAILED, CANCELLED, ...)
    ATTENTION = "attention"  # halted, needs a person (PAUSED), but not finished
    TOMBSTONE = "tombstone"  # gone (DELETED, ARCHIVED, or a 404)


#: Outcomes and tombstones: the resource is polled on the slow interval (never dropped:
#: training jobs can be resumed, deployments updated).
SETTLED: Final = frozenset({Meaning.SUCCESS, Meaning.FAILURE, Meaning.TOMBSTONE})
#: `watch` stops on these, with this exit code; it keeps waiting on any other meaning.
WATCH_EXIT: Final[Mapping[Meaning, int]] = MappingProxyType(
    {Meaning.SUCCESS: 0, Meaning.FAILURE: 1, Meaning.TOMBSTONE: 1}
)
#: The watcher's own state for a resource whose GET answered 404.
NOT_FOUND: Final = "NOT_FOUND"
UNSPECIFIED: Final = "UNSPECIFIED"

_A, _S, _F, _P, _T = (
    Meaning.ACTIVE,
    Meaning.SUCCESS,
    Meaning.FAILURE,
    Meaning.ATTENTION,
    Meaning.TOMBSTONE,
)

#: `gatewayJobState`, shared by the six job kinds (short names; the API prefixes `JOB_STATE_`).
JOB_STATES: Final[Mapping[str, Meaning]] = MappingProxyType(
    {
        UNSPECIFIED: _A,
        "CREATING": _A,
        "PENDING": _A,
        "VALIDATING": _A,
        "CREATING_INPUT_DATASET": _A,
        "RUNNING": _A,
        "WRITING_RESULTS": _A,
        "RE_QUEUEING": _A,
        "IDLE": _A,
        "CANCELLING": _A,
        "DELETING": _A,
        "DELETING_CLEANING_UP": _A,
        "PAUSED": _P,
        "COMPLETED": _S,
        "EARLY_STOPPED": _S,
        "FAILED": _F,
        "CANCELLED": _F,
        "EXPIRED": _F,
        "DELETED": _T,
        "ARCHIVED": _T,
    }
)


def short_state(raw: str) -> str:
    """`JOB_STATE_RUNNING` -> `RUNNING`, `STATE_UNSPECIFIED` -> `UNSPECIFIED`; others as they are."""
    value = raw.strip().upper()
    if value.startswith("JOB_STATE_"):
        value = value.removeprefix("JOB_STATE_")
    elif value == "STATE_UNSPECIFIED":
        value = UNSPECIFIED
    return value or UNSPECIFIED


_WANDB_URL = Field("wandbConfig", sub("url"))
_PROGRESS = number("jobProgress", "percent")
_EPOCH = number("jobProgress", "epoch")


def _common(
    *, created_by: bool = True, completed: bool = True, updated: bool = True
) -> dict[str, Field]:
    fields = {"display_name": text("displayName"), "create_time": text("createTime")}
    if created_by:
        fields["created_by"] = text("createdBy")
    if completed:
        fields["completed_time"] = text("completedTime")
    if updated:
        fields["update_time"] = text("updateTime")
    return fields


@dataclass(frozen=True, slots=True)
class ResourceKind:
    """One Fireworks collection as the watcher reads it.

    Attributes:
        name: the config name (`kind = "sft"`).
        label: how messages name one resource (`SFT job`).
        collection: the REST collection segment, also the LIST response key.
        states: every documented state (short name) and its meaning; an unknown state is
            ACTIVE, so a new API value is polled and announced, never a crash.
        fields: snapshot field name -> where it comes from; the `readMask` is derived from it.
        console_path: the resource's page in the web console (`{id}` is the resource id), or
            its list page where no per-resource URL form is known; a whole `https://` URL
            where the page is not under the dashboard.
        path: the resource name, `{account}` and `{id}` filled in (the id last); the API
            serves it at `/v1/` + the name. An empty `collection` means no LIST exists.
        state_key: the top-level field whose value is the watched state.
        absent_state: the state when `state_key` is absent or "" (proto3 omits the zero value).
        unknown: what a state the table does not name means.
        state_is_reason: a failure state is its own `reason` (when the API gives none).
    """

    name: str
    label: str
    collection: str
    states: Mapping[str, Meaning]
    fields: Mapping[str, Field]
    console_path: str
    path: str
    state_key: str = "state"
    absent_state: str = UNSPECIFIED
    unknown: Meaning = Meaning.ACTIVE
    state_is_reason: bool = False

    @property
    def read_mask(self) -> str:
        """The top-level fields the watcher reads, as the `readMask` query value."""
        keys = ["name", self.state_key, "status", *(f.key for f in self.fields.values())]
        return ",".join(dict.fromkeys(keys))

    @property
    def listable(self) -> bool:
        """Whether the kind has a collection to LIST (the account is one resource)."""
        return bool(self.collection)

    def resource_name(self, account_id: str, resource_id: str) -> str:
        """The API resource name, e.g. `accounts/acme/dpoJobs/my-job` or `accounts/acme`."""
        return self.path.format(account=account_id, id=resource_id)

    def name_prefix(self, account_id: str) -> str:
        """What every resource name of this kind in `account_id` starts with (the id follows)."""
        return self.resource_name(account_id, "")

    def meaning(self, state: str) -> Meaning:
        """What `state` (a short name) means for this kind; states the table does not name
        mean `unknown` (ACTIVE but for the account)."""
        if state == NOT_FOUND:
            return Meaning.TOMBSTONE
        return self.states.get(state, self.unknown)

    @property
    def has_progress(self) -> bool:
        """Whether the kind reports `jobProgress.percent`."""
        return "progress" in self.fields


def _kind(
    kind: JobKind,
    label: str,
    collection: str,
    states: Mapping[str, Meaning],
    fields: Mapping[str, Field],
    console_path: str,
    *,
    path: str | None = None,
    state_key: str = "state",
    absent_state: str = UNSPECIFIED,
    unknown: Meaning = Meaning.ACTIVE,
    state_is_reason: bool = False,
) -> tuple[JobKind, ResourceKind]:
    spec = ResourceKind(
        kind.value,
        label,
        collection,
        MappingProxyType(dict(states)),
        MappingProxyType(dict(fields)),
        console_path,
        # A collection's resources are named below it; a kind without one says its path.
        path if path is not None else f"accounts/{{account}}/{collection}/{{id}}",
        state_key,
        absent_state,
        unknown,
        state_is_reason,
    )
    return kind, spec


_TRAINING = {
    "base_model": text("trainingConfig", "baseModel"),
    "output_model": text("trainingConfig", "outputModel"),
    "dataset": text("dataset"),
    "wandb_url": _WANDB_URL,
}
# The console's per-job pages are known for SFT and RFT only; the rest link their list page.
_FINE_TUNING = "/fine-tuning"

#: Every kind the watcher can follow, by config name.
KINDS: Final[Mapping[JobKind, ResourceKind]] = MappingProxyType(
    dict(
        (
            _kind(
                JobKind.DPO,
                "DPO job",
                "dpoJobs",
                JOB_STATES,
                # DPO jobs have no updateTime and no jobProgress.
                {**_common(updated=False), **_TRAINING},
                _FINE_TUNING,
            ),
            _kind(
                JobKind.SFT,
                "SFT job",
                "supervisedFineTuningJobs",
                JOB_STATES,
                # Hyperparameters are flat on SFT jobs: no trainingConfig.
                {
                    **_common(),
                    "base_model": text("baseModel"),
                    "output_model": text("outputModel"),
                    "dataset": text("dataset"),
                    "wandb_url": _WANDB_URL,
                    "progress": _PROGRESS,
                    "epoch": _EPOCH,
                    "estimated_cost": Field("estimatedCost", money),
                },
                "/fine-tuning/supervised/{id}",
            ),
            _kind(
                JobKind.RFT,
                "RFT job",
                "reinforcementFineTuningJobs",
                JOB_STATES,
                {
                    **_common(updated=False),
                    **_TRAINING,
                    "progress": _PROGRESS,
                    "epoch": _EPOCH,
                    "accelerator_seconds": Field("acceleratorSeconds", sum_of_values),
                },
                "/fine-tuning/reinforcement/{id}",
            ),
            _kind(
                JobKind.RLOR,
                "RLOR trainer job",
                "rlorTrainerJobs",
                JOB_STATES,
                {
                    **_common(updated=False),
                    **_TRAINING,
                    "progress": _PROGRESS,
                    "epoch": _EPOCH,
                    "accelerator_seconds": Field("acceleratorSeconds", sum_of_values),
                },
                _FINE_TUNING,
            ),
            _kind(
                JobKind.BATCH_INFERENCE,
                "batch inference job",
                "batchInferenceJobs",
                JOB_STATES,
                # No completedTime: an outcome's duration ends at updateTime.
                {
                    **_common(completed=False),
                    "model": text("model"),
                    "base_model": text("model"),
                    "dataset": text("inputDatasetId"),
                    "progress": _PROGRESS,
                },
                "/batch-inference",
            ),
            _kind(
                JobKind.EVALUATION,
                "evaluation job",
                "evaluationJobs",
                JOB_STATES,
                {
                    **_common(completed=False),
                    "dataset": text("inputDataset"),
                },
                "/evaluations",
            ),
            _kind(
                JobKind.EVALUATOR,
                "evaluator",
                "evaluators",
                {UNSPECIFIED: _A, "BUILDING": _A, "ACTIVE": _S, "BUILD_FAILED": _F},
                _common(completed=False),
                "/evaluators",
            ),
            _kind(
                JobKind.DEPLOYMENT,
                "deployment",
                "deployments",
                {
                    UNSPECIFIED: _A,
                    "CREATING": _A,
                    "READY": _S,
                    "UPDATING": _A,
                    "DELETING": _A,
                    "DELETED": _T,
                    "FAILED": _F,
                },
                {
                    **_common(created_by=False, completed=False),
                    "model": text("baseModel"),
                    "base_model": text("baseModel"),
                    "replica_count": number("replicaCount"),
                },
                "/deployments",
            ),
            _kind(
                JobKind.DEPLOYED_MODEL,
                "deployed model",
                "deployedModels",
                {
                    UNSPECIFIED: _A,
                    "DEPLOYING": _A,
                    "DEPLOYED": _S,
                    "UNDEPLOYING": _A,
                    "UPDATING": _A,
                },
                {
                    **_common(created_by=False, completed=False),
                    "model": text("model"),
                },
                "/deployments",
            ),
            _kind(
                JobKind.MODEL,
                "model",
                "models",
                {UNSPECIFIED: _A, "UPLOADING": _A, "READY": _S},
                # No createdBy: the owner is the fine-tuning job's (`core.owners`).
                {
                    **_common(created_by=False, completed=False),
                    "fine_tuning_job": text("fineTuningJob"),
                },
                "/models",
            ),
            _kind(
                JobKind.DATASET,
                "dataset",
                "datasets",
                {UNSPECIFIED: _A, "UPLOADING": _A, "READY": _S},
                _common(completed=False),
                "/datasets",
            ),
            # The account itself (`GET /v1/accounts/{id}`, no LIST). What people care about is
            # whether it may run jobs: `suspendState`. UNSUSPENDED is the healthy one, every
            # other value (one the SDK does not know yet too) a suspension whose name is the
            # reason. proto3 JSON omits the zero value, which is UNSUSPENDED (the SDK's
            # Literal has no UNSPECIFIED for it). Its `state` (READY...) is a field.
            _kind(
                JobKind.ACCOUNT,
                "account",
                "",
                {
                    "UNSUSPENDED": _S,
                    "FAILED_PAYMENTS": _F,
                    "CREDIT_DEPLETED": _F,
                    "MONTHLY_SPEND_LIMIT_EXCEEDED": _F,
                    "BLOCKED_BY_ABUSE_RULE": _F,
                },
                {
                    **_common(created_by=False, completed=False),
                    "account_state": text("state"),
                },
                "https://app.fireworks.ai/account/home",
                path="accounts/{id}",
                state_key="suspendState",
                absent_state="UNSUSPENDED",
                unknown=_F,
                state_is_reason=True,
            ),
        )
    )
)

#: The account's healthy state (`suspendState`); every other one is a suspension.
UNSUSPENDED: Final = "UNSUSPENDED"

#: Every state name any kind documents, plus the watcher's own NOT_FOUND.
ALL_STATES: Final = frozenset(
    {NOT_FOUND, *(state for spec in KINDS.values() for state in spec.states)}
)


def watch_exit(kind: JobKind, state: str) -> int | None:
    """The exit code `watch` ends with when the resource reaches `state`, or None to go on."""
    return WATCH_EXIT.get(KINDS[kind].meaning(state))


def meaning_of(state: str) -> Meaning:
    """A state's meaning when the kind is not known (an outbox row): the first kind that
    documents it decides; every kind that shares a name gives it the same meaning."""
    return _ANY_KIND.get(state, Meaning.ACTIVE)


_ANY_KIND: Final = {NOT_FOUND: Meaning.TOMBSTONE} | {
    state: meaning
    for spec in reversed(list(KINDS.values()))
    for state, meaning in spec.states.items()
}
