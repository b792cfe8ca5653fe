"""Silences: a stored rule that mutes matching messages for a while. Pure.

A silence names a glob on the job id or display name, and optionally globs on the kind and
the owner, a state and a channel (`core.rules` matches them); it is active from `created_at`
until `ends_at` (or until expired by hand). A message it matches is recorded as silenced,
never lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from watcher.core.rules import Rule, Subject, matches, silence_rule


@dataclass(frozen=True, slots=True)
class Silence:
    """One silence as stored (`id` 0 before it is)."""

    id: int
    job: str  # a glob on the job id or display name ("*" for every job)
    kind: str = ""  # a glob on the kind, "" for every kind
    state: str = ""  # a short state name, "" for every state
    channel: str = ""  # a channel name, "" for every channel
    comment: str = ""
    created_at: datetime | None = None
    ends_at: datetime | None = None
    expired_at: datetime | None = None
    owner: str = ""  # a glob on who created the job (any case), "" for everyone

    def described(self) -> dict[str, str]:
        """What it matches and why, as text (its history event, `silence list --json`)."""
        return {
            "job": self.job,
            "kind": self.kind,
            "owner": self.owner,
            "state": self.state,
            "channel": self.channel,
            "comment": self.comment,
        }

    @property
    def rule(self) -> Rule:
        """What it matches, as a rule."""
        return silence_rule(self)

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


def silencing(silences: Iterable[Silence], subject: Subject, now: datetime) -> Silence | None:
    """The first active silence that covers `subject`, or None."""
    return next((s for s in silences if s.active(now) and matches(s.rule, subject)), None)
