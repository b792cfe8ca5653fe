"""Leadership: which replica polls, as a lease row in the state database.

Only the lease's holder polls, so an account's request budget is spent once however many
replicas run. The lease has an expiry, renewed well inside it, and a fencing epoch that grows
by one at every change of holder: every write of a poll carries the epoch it was made under,
and the store refuses it once the epoch has moved on (`core.errors.Fenced`). A deposed leader
that wakes up (SIGSTOP, a network partition) therefore records and queues nothing.

Pure values and arithmetic; the store keeps the row, `runtime.leadership` runs the renewals.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

#: The lease the poller holds.
POLLER: Final = "poller"
LEADER: Final = "leader"
STANDBY: Final = "standby"
#: The shortest and longest lease. Short enough that a standby takes over within two poll
#: intervals; a floor, so that one slow database round trip does not depose a healthy leader.
MIN_TTL: Final = 1.0
MAX_TTL: Final = 30.0
#: Renewals (and a standby's attempts) per lease time: a renewal may fail twice in a row, or
#: take a third of the lease, and the leader keeps it.
RENEWALS_PER_TTL: Final = 4


@dataclass(frozen=True, slots=True)
class Lease:
    """The lease row as it stands: who holds it, under which epoch, until when (in the
    store's clock; the holder times its own term on its monotonic clock, never this)."""

    name: str
    holder: str
    epoch: int
    expires_at: datetime
    renewed_at: datetime

    def held_by(self, holder: str) -> bool:
        return self.holder == holder


@dataclass(frozen=True, slots=True)
class Replica:
    """A daemon that shares the database, as its last heartbeat left it."""

    holder: str
    role: str  # LEADER or STANDBY
    started_at: datetime
    seen_at: datetime


def lease_ttl(poll_interval: float) -> float:
    """The lease time for a poll interval: one interval, within [MIN_TTL, MAX_TTL].

    A standby tries every `ttl / RENEWALS_PER_TTL`, so a dead leader is replaced within
    `1.25 * ttl`, inside two poll intervals.
    """
    return min(MAX_TTL, max(MIN_TTL, poll_interval))


def renew_every(ttl: float) -> float:
    """Seconds between renewals (and a standby's attempts) for a lease of `ttl` seconds."""
    return ttl / RENEWALS_PER_TTL
