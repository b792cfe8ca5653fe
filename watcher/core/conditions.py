"""Conditions: what is wrong with a resource beyond its state (stalled, pending too long,
running too long, flapping, unreadable, the API down, the API key rejected), opened and
resolved from snapshots and time.

Pure: the poller hands in the last snapshots, when each entered its state and last moved,
and now; it gets back which conditions open and which resolve. A condition is announced
once when it opens and once when it resolves, and stored in between, so a restart neither
repeats nor forgets it. A new condition is one `ConditionName`, one onset and detail in
`_RULES`, one line of text in `core.notices`, plus its tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from watcher.core.kinds import SETTLED, Meaning
from watcher.core.messages import ACCOUNT_PREFIX, api_time
from watcher.core.messages import format_duration as _for
from watcher.core.model import JobSnapshot, Transition

#: States of waiting before work starts: `pending_after` measures them, `stall_after` not.
WAITING_STATES: Final = frozenset({"PENDING", "CREATING", "VALIDATING", "RE_QUEUEING"})
#: The subject of the API-down condition (the outbox's job key for it).
API_SUBJECT: Final = "api"
#: HTTP statuses that refuse the key itself (401), or what it may read (403).
UNAUTHORIZED: Final = 401
FORBIDDEN: Final = 403


class ConditionName(StrEnum):
    """A kind of condition; its value is stored and shown (`fireworks_watcher_conditions_open`)."""

    STALLED = "stalled"
    PENDING = "pending_too_long"
    MAX_RUNTIME = "max_runtime"
    UNREADABLE = "unreadable"
    API_DOWN = "api_down"
    KEY_REJECTED = "key_rejected"
    FLAPPING = "flapping"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Seconds after which a condition opens; 0 disables it (set per `[[watch]]`).

    `flap_threshold` is the number of state changes within `flap_window` seconds that a job
    may make without flapping (one more opens the condition); 0 disables it.
    """

    stall_after: float = 1800.0
    pending_after: float = 7200.0
    max_runtime: float = 0.0
    flap_threshold: int = 6
    flap_window: float = 1800.0


@dataclass(frozen=True, slots=True)
class Since:
    """When a resource entered its current state, and when it last moved (its state, status,
    progress or `updateTime` changed): stored beside its snapshot. `entered` is False when
    the resource was already in the state at first sight (then `state` is that first sight):
    reminders are only for states the watcher saw begin."""

    state: datetime
    moved: datetime
    entered: bool = False


@dataclass(frozen=True, slots=True)
class Condition:
    """An open condition of one subject (a job key, `list:KIND` or `api`)."""

    subject: str
    name: ConditionName
    opened_at: datetime
    detail: str

    @property
    def key(self) -> tuple[str, ConditionName]:
        """What identifies it: one condition of a name per subject."""
        return (self.subject, self.name)


def account_subject(account_id: str) -> str:
    """The subject of the key-rejected condition of one account (`account:acme`)."""
    return f"{ACCOUNT_PREFIX}{account_id}"


def subject_account(subject: str) -> str:
    """The account id an `account:` subject names ("" for any other subject)."""
    return subject.removeprefix(ACCOUNT_PREFIX) if subject.startswith(ACCOUNT_PREFIX) else ""


def key_verdict(calls: int, answered: int, refusals: Iterable[int]) -> bool | None:
    """Whether one poll cycle shows the API rejecting the key (True) or accepting it (False);
    None when it shows neither (no call, or no answer but timeouts and 5xx).

    `refusals` are the HTTP statuses of the calls the API refused (4xx; 0 for a request
    never sent). The key is rejected by a 401 on any call, or by a 403 on every call: a 403
    among other answers is a permission on one resource, not the key. It is accepted by any
    other answer, a 404 or a bad body included: the API read the key and let it through.
    """
    statuses = list(refusals)
    forbidden = statuses.count(FORBIDDEN)
    if UNAUTHORIZED in statuses or (forbidden and forbidden == calls):
        return True
    if answered > forbidden + statuses.count(0):
        return False
    return None


def _moved(snapshot: JobSnapshot) -> tuple[str, ...]:
    # What counts as progress: the percent, the server's update time, the state and status.
    return (
        snapshot.state,
        snapshot.status_code,
        snapshot.status_message,
        snapshot.progress,
        snapshot.update_time,
        snapshot.epoch,
    )


def next_since(
    previous: JobSnapshot | None, since: Since | None, stored: JobSnapshot, now: datetime
) -> Since:
    """The `Since` to store with `stored`, which replaces `previous` at `now`."""
    if previous is None or since is None:
        return Since(now, now)
    if previous.state != stored.state:
        return Since(now, now, entered=True)
    moved = since.moved if _moved(previous) == _moved(stored) else now
    return Since(since.state, moved, since.entered)


# One rule per condition. `onset` is when the condition starts to hold if nothing about the
# job changes (None: never, e.g. switched off or another state); `detail` says why it holds.
# Both `job_conditions` and `deadline` derive from the onset, so each threshold is read once.
Onset = Callable[[JobSnapshot, Since, Thresholds], datetime | None]
Detail = Callable[[JobSnapshot, Since, Thresholds, datetime], str]


def _after(start: datetime, seconds: float) -> datetime | None:
    return start + timedelta(seconds=seconds) if seconds else None


def _stall_onset(job: JobSnapshot, since: Since, limit: Thresholds) -> datetime | None:
    # Waiting states are pending_after's; for kinds without a progress field (DPO) the stall
    # clock starts when the job was first seen in its state, so it counts only once the job
    # has been in it that long, which `max(state, moved)` gives for both.
    if job.state in WAITING_STATES:
        return None
    return _after(max(since.state, since.moved), limit.stall_after)


def _stall_detail(job: JobSnapshot, since: Since, limit: Thresholds, now: datetime) -> str:
    quiet = (now - max(since.state, since.moved)).total_seconds()
    at = f" at {job.progress}%" if job.progress else ""
    return f"no progress{at} for {_for(quiet)} in {job.state}"


def _pending_onset(job: JobSnapshot, since: Since, limit: Thresholds) -> datetime | None:
    return _after(since.state, limit.pending_after) if job.state in WAITING_STATES else None


def _pending_detail(job: JobSnapshot, since: Since, limit: Thresholds, now: datetime) -> str:
    return f"{job.state} for {_for((now - since.state).total_seconds())}"


def _started(job: JobSnapshot, since: Since) -> datetime:
    # Runtime as messages show `duration`: from createTime (else first sight).
    return api_time(job.create_time) or since.state


def _runtime_onset(job: JobSnapshot, since: Since, limit: Thresholds) -> datetime | None:
    return _after(_started(job, since), limit.max_runtime)


def _runtime_detail(job: JobSnapshot, since: Since, limit: Thresholds, now: datetime) -> str:
    ran = (now - _started(job, since)).total_seconds()
    return f"running for {_for(ran)}, more than the limit of {_for(limit.max_runtime)}"


_RULES: Final[Mapping[ConditionName, tuple[Onset, Detail]]] = {
    ConditionName.STALLED: (_stall_onset, _stall_detail),
    ConditionName.PENDING: (_pending_onset, _pending_detail),
    ConditionName.MAX_RUNTIME: (_runtime_onset, _runtime_detail),
}


def _onsets(
    job: JobSnapshot, since: Since, limit: Thresholds
) -> list[tuple[ConditionName, datetime]]:
    # Every job condition is about an active job: outcomes and PAUSED raise none.
    if job.meaning is not Meaning.ACTIVE:
        return []
    found = ((name, onset(job, since, limit)) for name, (onset, _) in _RULES.items())
    return [(name, at) for name, at in found if at is not None]


def job_conditions(
    job: JobSnapshot, since: Since, limit: Thresholds, now: datetime
) -> dict[ConditionName, str]:
    """The conditions that hold for one resource now, with their detail."""
    return {
        name: _RULES[name][1](job, since, limit, now)
        for name, at in _onsets(job, since, limit)
        if at <= now
    }


def deadline(job: JobSnapshot, since: Since, limit: Thresholds, now: datetime) -> datetime | None:
    """The next moment after `now` at which a condition could start to hold for this job if
    nothing about it changes (conditions only open as time passes); None: never. Until then,
    and until the job changes, evaluating it again cannot find anything new."""
    later = [at for _, at in _onsets(job, since, limit) if at > now]
    return min(later) if later else None


@dataclass(frozen=True, slots=True)
class ConditionChanges:
    """What one evaluation opens and resolves."""

    opened: tuple[Condition, ...] = ()
    resolved: tuple[Condition, ...] = ()


def evaluate(
    jobs: Iterable[tuple[JobSnapshot, Since, Thresholds]],
    open_now: Mapping[tuple[str, ConditionName], Condition],
    *,
    now: datetime,
    names: frozenset[ConditionName] = frozenset(_RULES),
) -> ConditionChanges:
    """Compare the job conditions that hold now with the open ones (of `names` only: the
    unreadable, API-down and key-rejected conditions are decided by the poller's own
    bookkeeping).

    A job no longer passed in (forgotten, unwatched) resolves its open conditions.
    """
    holding: dict[tuple[str, ConditionName], str] = {}
    for job, since, limit in jobs:
        for name, detail in job_conditions(job, since, limit, now).items():
            holding[(job.ref.key, name)] = detail
    opened = tuple(
        Condition(subject, name, now, detail)
        for (subject, name), detail in holding.items()
        if (subject, name) not in open_now
    )
    resolved = tuple(
        condition
        for key, condition in open_now.items()
        if condition.name in names and key not in holding
    )
    return ConditionChanges(opened, resolved)


# -- flapping ----------------------------------------------------------------------------------
#
# A job that changes `state` more than `flap_threshold` times within `flap_window` is flapping:
# one message lists the states it went through, then its transitions are folded (recorded,
# not sent) until it has stayed in one state for `flap_window`: "stable again in STATE".
# Only changes of `state` count; a new status message within one state is not a flap (a job
# may report its progress there), though it is folded like any transition while flapping.
# Outcomes and tombstones are never folded: a final state is always sent.

#: States listed in a flapping message at most (the first ones and the latest, "…" between).
MAX_FLAP_STATES: Final = 10


@dataclass(frozen=True, slots=True)
class StateChange:
    """A change of a job's `state` (`old` to `new`) observed at `at`."""

    at: datetime
    old: str
    new: str


def state_change(transition: Transition) -> StateChange | None:
    """The state change a transition is; None for a first sight or a change of status only."""
    old = transition.old
    if old is None or old.state == transition.new.state:
        return None
    return StateChange(transition.observed_at, old.state, transition.new.state)


def recent_changes(
    changes: Sequence[StateChange], limit: Thresholds, now: datetime
) -> tuple[StateChange, ...]:
    """The changes that count now, oldest first: those within `flap_window` before `now`, at
    most `flap_threshold + 1` of the latest (one more than the threshold decides; older ones
    cannot change the verdict). Empty when flapping is off."""
    if not limit.flap_threshold:
        return ()
    start = now - timedelta(seconds=limit.flap_window)
    inside = sorted((c for c in changes if start < c.at <= now), key=lambda c: c.at)
    return tuple(inside[-(limit.flap_threshold + 1) :])


def flap_detail(changes: Sequence[StateChange], now: datetime) -> str:
    """ "RUNNING → PENDING → RUNNING … (7 changes in 12m 00s)": the states gone through."""
    states = [changes[0].old, *(c.new for c in changes)] if changes else []
    if len(states) > MAX_FLAP_STATES:
        keep = MAX_FLAP_STATES // 2
        states = [*states[: keep - 1], "…", *states[-keep:]]
    took = _for((now - changes[0].at).total_seconds()) if changes else "0s"
    count = len(changes)
    return f"{' → '.join(states)} ({count} change{'s' * (count != 1)} in {took})"


def flapping(changes: Sequence[StateChange], limit: Thresholds, now: datetime) -> str | None:
    """The detail of a flapping condition that holds now (more than `flap_threshold` state
    changes within `flap_window`), or None."""
    counted = recent_changes(changes, limit, now)
    if not limit.flap_threshold or len(counted) <= limit.flap_threshold:
        return None
    return flap_detail(counted, now)


def stable_at(since: Since, limit: Thresholds) -> datetime:
    """When an open flapping condition resolves if the job stays in its state: once it has
    been in it for `flap_window`."""
    return since.state + timedelta(seconds=limit.flap_window)


def still_flapping(since: Since, limit: Thresholds, now: datetime) -> bool:
    """Whether an open flapping condition holds: the job has not yet stayed in one state for
    `flap_window` (and flapping is still switched on)."""
    return bool(limit.flap_threshold) and now < stable_at(since, limit)


def folds(transition: Transition) -> bool:
    """Whether a flapping job's transition is folded: every one but outcomes and tombstones,
    which are always sent."""
    return transition.new.meaning not in SETTLED
