"""Decide what changed and who hears about it. Pure functions: no clock, no I/O, no logging."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from watcher.core.kinds import NOT_FOUND
from watcher.core.model import JobSnapshot, Transition
from watcher.core.owners import first_owner
from watcher.core.text import cap, one_line


def diff(
    last_seen: JobSnapshot | None,
    observed: JobSnapshot,
    *,
    at: datetime,
    new_job: bool = False,
) -> Transition | None:
    """Compare a job's stored snapshot with a fresh one.

    Returns a transition when the state changed, or the status code or message changed within the
    same state; a first sighting (`last_seen` is None) is a transition with `old=None`, which
    channels ignore unless they ask for it. Returns None when nothing a user cares about moved.
    """
    if last_seen is not None and last_seen.observable() == observed.observable():
        return None
    return Transition(
        old=last_seen,
        new=_keep_known_details(last_seen, observed),
        observed_at=at,
        new_job=new_job and last_seen is None,
    )


def merge(last_seen: JobSnapshot | None, observed: JobSnapshot) -> JobSnapshot:
    """The snapshot to store: the observed one, keeping details a 404 cannot tell us and the
    owner first seen.

    The store is written only when this differs from `last_seen`.
    """
    return _keep_known_details(last_seen, observed)


def _keep_known_details(last_seen: JobSnapshot | None, observed: JobSnapshot) -> JobSnapshot:
    # The owner first seen stays: a tombstoned trainer job names its deleter as `createdBy`.
    owner = first_owner(last_seen)
    if owner and owner != observed.owner:
        observed = replace(observed, owner=owner)
    # A 404 answer carries no display name or models; keep what we knew so the message still says
    # which job vanished.
    if last_seen is None or observed.state != NOT_FOUND:
        return observed
    return replace(
        last_seen,
        state=observed.state,
        status_code=observed.status_code,
        status_message=observed.status_message,
        reason=observed.reason,
    )


def status_change(status_code: str, status_message: str, limit: int = 80) -> str:
    """What a move within one state says: `status changed: NCCL timeout again` (the code when
    there is no message), or `status cleared`."""
    said = one_line(status_message) or (status_code if status_code != "OK" else "")
    return f"status changed: {cap(said, limit)}" if said else "status cleared"


def move_label(
    old_state: str, new_state: str, status_code: str = "", status_message: str = ""
) -> str:
    """A move as one short line: `RUNNING → FAILED` (`- → RUNNING` for a first sighting),
    or for a change of status within one state `status changed: NCCL timeout again` (never
    `FAILED → FAILED`)."""
    if old_state and old_state == new_state:
        return status_change(status_code, status_message)
    return f"{old_state or '-'} → {new_state}"
