"""Silences: a stored rule that mutes matching messages for a while. Pure matching.

A silence names a glob on the job id or display name, and optionally a kind, a state and a
channel; it is active from `created_at` until `ends_at` (or until expired by hand). A message
it matches is recorded as silenced, never lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase


@dataclass(frozen=True, slots=True)
class Silence:
    """One silence as stored (`id` 0 before it is)."""

    id: int
    job: str  # a glob on the job id or display name ("*" for every job)
    kind: str = ""  # "" for every kind
    state: str = ""  # a short state name, "" for every state
    channel: str = ""  # a channel name, "" for every channel
    comment: str = ""
    created_at: datetime | None = None
    ends_at: datetime | None = None
    expired_at: datetime | None = None

    def active(self, now: datetime) -> bool:
        """In force now: started, not ended, not expired by hand."""
        if self.expired_at is not None and self.expired_at <= now:
            return False
        if self.created_at is not None and now < self.created_at:
            return False
        return self.ends_at is None or now < self.ends_at

    def end(self) -> datetime | None:
        """When it stops (by hand or at its end), whichever is first."""
        ends = [t for t in (self.ends_at, self.expired_at) if t is not None]
        return min(ends) if ends else None


@dataclass(frozen=True, slots=True)
class Subject:
    """What a message is about, as silences see it."""

    job_id: str
    display_name: str = ""
    kind: str = ""
    state: str = ""
    channel: str = ""

    @classmethod
    def of(cls, fields: Mapping[str, str], *, channel: str) -> Subject:
        """From an event's fields (a transition's, or a notice's subject fields)."""
        return cls(
            job_id=fields.get("job_id", ""),
            display_name=fields.get("display_name", ""),
            kind=fields.get("kind", ""),
            state=fields.get("job_state") or fields.get("new_state", ""),
            channel=channel,
        )


def matches(silence: Silence, subject: Subject) -> bool:
    """Whether `silence` (its time aside) covers `subject`."""
    if silence.kind and silence.kind != subject.kind:
        return False
    if silence.state and silence.state != subject.state:
        return False
    if silence.channel and silence.channel != subject.channel:
        return False
    names = [n for n in (subject.job_id, subject.display_name) if n]
    return any(fnmatchcase(name, silence.job) for name in names)


def silencing(silences: Iterable[Silence], subject: Subject, now: datetime) -> Silence | None:
    """The first active silence that covers `subject`, or None."""
    return next((s for s in silences if s.active(now) and matches(s, subject)), None)
