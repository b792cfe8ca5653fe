"""Progress milestones: a channel with `progress_every = 25` hears when a job that reports
progress passes 25, 50 and 75 %, with an ETA from the rate observed so far. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from watcher.core.conditions import Since
from watcher.core.delivery import Channel
from watcher.core.kinds import Meaning
from watcher.core.messages import api_time
from watcher.core.model import JobSnapshot
from watcher.core.notices import Notice, milestone_notice
from watcher.core.rules import Subject, matches


def percent(text: str) -> float | None:
    """A progress field as a number in [0, 100], or None when it is not one."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and 0 <= value <= 100 else None


def crossed(before: float, after: float, every: int) -> int | None:
    """The highest multiple of `every` in (before, after], below 100 (completion says 100)."""
    if every <= 0 or after <= before:
        return None
    top = int(after // every) * every
    if top >= 100:
        top = ((100 - 1) // every) * every
    return top if before < top <= after and top > 0 else None


def _start(job: JobSnapshot, since: Since) -> datetime:
    # The run began when the watcher saw the state begin; for a job found running, at its
    # createTime (the ETA is then conservative: it includes time spent waiting).
    if since.entered:
        return since.state
    return api_time(job.create_time) or since.state


def eta_seconds(job: JobSnapshot, since: Since, done: float, now: datetime) -> float | None:
    """Seconds to 100 % at the average rate since the run began; None when unknown, and
    None unless the job is on its way: an outcome (FAILED at 40 %) or a halt has no ETA."""
    if job.meaning is not Meaning.ACTIVE:
        return None
    elapsed = (now - _start(job, since)).total_seconds()
    if done <= 0 or elapsed <= 0:
        return None
    return (100 - done) * elapsed / done


def milestones(
    previous: JobSnapshot | None,
    stored: JobSnapshot,
    since: Since,
    channels: Sequence[Channel],
    *,
    now: datetime,
) -> list[Notice]:
    """The milestone notices one observation causes (one per distinct milestone: channels
    with different `progress_every` may pass different ones)."""
    if previous is None or not stored.ref.kind.spec.has_progress:
        return []
    if stored.meaning is not Meaning.ACTIVE:
        return []
    before, after = percent(previous.progress), percent(stored.progress)
    if before is None or after is None:
        return []
    subject = Subject.of_job(stored)
    by_milestone: dict[int, set[str]] = {}
    for channel in channels:
        mark = crossed(before, after, channel.policy.progress_every)
        if mark is not None and matches(channel.rule.any_state(), subject):
            by_milestone.setdefault(mark, set()).add(channel.name)
    eta = eta_seconds(stored, since, after, now)
    return [
        milestone_notice(stored, milestone=mark, eta=eta, channels=frozenset(names))
        for mark, names in sorted(by_milestone.items())
    ]
