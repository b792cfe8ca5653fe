"""Per-target backoff and pace of notification sends: pure bookkeeping over explicit times.

A target (one channel URL) whose send fails is backed off as a whole: nothing goes to it
until its backoff has passed; then one message goes first, as a probe, and the rest follow
only once it arrived. The backoff doubles with each failure in a row (`schedule.doubling`,
from the retry policy's first delay up to its cap), jittered in the upper half of its window
like a row's own retry, and lasts at least the wait the service asked for (`Retry-After`).
The times are the dispatcher's wall clock, the clock of the rows' retry times: the probe's
row falls due the moment its target's backoff ends.

The pace spaces the sends to one target (monotonic seconds, from one send's start to the
next's): at most `max_per_second`, every message still sent, in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from watcher.core.delivery import RetryPolicy
from watcher.core.schedule import doubling

#: The longest wait a service's `Retry-After` is honoured for (seconds); beyond it the target
#: is probed this often.
RETRY_AFTER_CAP = 600.0


@dataclass(frozen=True, slots=True)
class _Backoff:
    failures: int
    until: datetime


class TargetBackoff:
    """Which targets are backed off after failed sends, and until when.

    Kept in memory, per dispatcher: a restart forgets it, and the probe's row then brings
    its own count of attempts (the backoff resumes from there, not from one second).
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._targets: dict[str, _Backoff] = {}

    def waiting(self, now: datetime) -> frozenset[str]:
        """The targets whose backoff has not passed at `now`."""
        return frozenset(t for t, b in self._targets.items() if self._waits(b, now))

    def ends_at(self, now: datetime) -> datetime | None:
        """When the soonest backoff still running at `now` ends; None when none is."""
        ends = [b.until for b in self._targets.values() if self._waits(b, now)]
        return min(ends, default=None)

    def failures(self, target: str) -> int:
        """The target's failed sends in a row (0 when its last send arrived)."""
        backoff = self._targets.get(target)
        return 0 if backoff is None else backoff.failures

    def failed(
        self,
        target: str,
        now: datetime,
        *,
        attempts: int,
        rand: Callable[[], float],
        retry_after: float | None = None,
    ) -> datetime:
        """A send to `target` failed (its row had `attempts` before): back the target off;
        returns when it may be sent to again (its probe's row is due then)."""
        failures = max(self.failures(target), attempts) + 1
        policy = self.policy
        delay = doubling(policy.first_delay, policy.max_delay, failures) * (0.5 + rand() / 2)
        until = now + timedelta(seconds=max(delay, _hint(retry_after)))
        self._targets[target] = _Backoff(failures, until)
        return until

    def succeeded(self, target: str) -> None:
        """A send to `target` arrived: it is no longer backed off."""
        self._targets.pop(target, None)

    def _waits(self, backoff: _Backoff, now: datetime) -> bool:
        ahead = (backoff.until - now).total_seconds()
        # An end further ahead than any backoff lasts: the wall clock went back. Not a wait
        # of that long (the probe's row counts as due by the same rule in the store).
        return 0 < ahead <= max(self.policy.max_delay, RETRY_AFTER_CAP)


def _hint(retry_after: float | None) -> float:
    """A service's `Retry-After`, bounded: never negative, never past `RETRY_AFTER_CAP`."""
    if retry_after is None or not math.isfinite(retry_after):
        return 0.0
    return min(max(retry_after, 0.0), RETRY_AFTER_CAP)


class Pace:
    """When each target may be sent to next, by its `max_per_second` (monotonic seconds)."""

    def __init__(self) -> None:
        self._next: dict[str, float] = {}

    def wait(self, target: str, now: float) -> float:
        """Seconds from `now` until the target may be sent to (0: at once)."""
        return max(0.0, self._next.get(target, now) - now)

    def sent(self, target: str, now: float, per_second: float) -> None:
        """A send to `target` starts at `now`: the next one waits `1 / per_second`."""
        self._next[target] = now + 1.0 / per_second

    def ahead(self, now: float, longer_than: float) -> frozenset[str]:
        """The targets that may not be sent to for more than `longer_than` seconds."""
        for target in [t for t, at in self._next.items() if at <= now]:
            del self._next[target]  # passed: forget it (the dict holds only pending waits)
        return frozenset(t for t, at in self._next.items() if at - now > longer_than)

    def soonest(self, targets: frozenset[str]) -> float | None:
        """When the soonest of `targets` may be sent to (monotonic), None for none."""
        return min((self._next[t] for t in targets if t in self._next), default=None)
