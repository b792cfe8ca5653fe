"""The watcher's vocabulary: job references, job states, snapshots and transitions.

Pure data: no I/O, no clock, no logging. Every other module speaks in these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from watcher.core.kinds import SETTLED, JobKind, Meaning, short_state

__all__ = [
    "JobKind",
    "JobRef",
    "JobSnapshot",
    "Meaning",
    "Transition",
    "is_settled",
    "short_state",
]


def is_settled(snapshot: JobSnapshot) -> bool:
    """True for outcome and tombstone states: the resource is polled on the slow interval."""
    return snapshot.meaning in SETTLED


@dataclass(frozen=True, slots=True)
class JobRef:
    """Identifies one job: its kind and id inside the account (`my-dpo-job`)."""

    kind: JobKind
    job_id: str
    #: A stable string key, e.g. `dpo/my-dpo-job`, used by the state store. Computed once:
    #: a cycle over 10,000 jobs looks it up several times per job.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.kind}/{self.job_id}")

    def resource_name(self, account_id: str) -> str:
        """The API resource name, e.g. `accounts/acme/dpoJobs/my-dpo-job` (`accounts/acme`
        for the account itself)."""
        return self.kind.spec.resource_name(account_id, self.job_id)

    @classmethod
    def from_key(cls, key: str) -> JobRef | None:
        """The reference a `key` names (`dpo/my-dpo-job`), or None when it names no known
        kind or no id."""
        kind, _, job_id = key.partition("/")
        if not job_id or kind not in JobKind._value2member_map_:
            return None
        return cls(JobKind(kind), job_id)


@dataclass(frozen=True, slots=True)
class JobSnapshot:
    """What the watcher knows of one job at one poll.

    Built from API JSON keeping only the fields the watcher uses (each kind's `fields`), so
    secrets in the payload (`wandbConfig.apiKey`, signed URLs, route keys) never enter the
    process's data. Every field is text as the API sent it ("" when absent or not read for the
    kind): times are RFC 3339, numbers their decimal form (`progress` is the percent).
    `reason` is the ErrorInfo `reason` of `status.details`, when the API gives one.
    `owner` is not read from the API: `core.owners` derives it when the snapshot is decided.
    """

    ref: JobRef
    account_id: str
    state: str
    status_code: str = ""
    status_message: str = ""
    display_name: str = ""
    base_model: str = ""
    output_model: str = ""
    dataset: str = ""
    created_by: str = ""
    create_time: str = ""
    completed_time: str = ""
    wandb_url: str = ""
    update_time: str = ""
    progress: str = ""
    epoch: str = ""
    estimated_cost: str = ""
    accelerator_seconds: str = ""
    replica_count: str = ""
    model: str = ""
    reason: str = ""
    #: A model's `fineTuningJob`: the job that made it (its owner is the model's).
    fine_tuning_job: str = ""
    #: Who the resource belongs to: `createdBy` as first seen, else derived from the resource
    #: it comes from (`core.owners`); "" when unknown. Set when a snapshot is decided.
    owner: str = ""
    account_state: str = ""  # the account's own `state` (READY...); its watched one is suspendState

    @property
    def name(self) -> str:
        """The full resource name."""
        return self.ref.resource_name(self.account_id)

    @property
    def meaning(self) -> Meaning:
        """What the state means for this kind (an outcome, active, gone...)."""
        return self.ref.kind.spec.meaning(self.state)

    def observable(self) -> tuple[str, str, str]:
        """The part of a snapshot whose change is a transition."""
        return (self.state, self.status_code, self.status_message)


@dataclass(frozen=True, slots=True)
class Transition:
    """A job moved: `old` is None when the watcher sees the job for the first time.

    `new_job` marks a first sighting of a job created after the watcher first listed its
    kind (as opposed to a job that merely predates the watcher).
    """

    old: JobSnapshot | None
    new: JobSnapshot
    observed_at: datetime
    new_job: bool = False

    @property
    def ref(self) -> JobRef:
        """The job that moved."""
        return self.new.ref

    @property
    def old_state(self) -> str:
        """The previous state's short name, or "" on first sight."""
        return self.old.state if self.old is not None else ""

    @property
    def new_state(self) -> str:
        """The new state's short name."""
        return self.new.state
