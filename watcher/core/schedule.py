"""When to poll what: intervals, slow polling of settled jobs, and backoff after failures.

Pure bookkeeping over explicit times: the loop tells it what happened and asks what is due.
A poll target is a string key: a job's `JobRef.key`, or `list:<kind>` for a discover LIST.
Times are monotonic seconds, never the wall clock: a host clock set a day ahead and back must
not stop polling for a day (nor fire every backoff at once).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Before any time: a target never polled is due at once.
_EPOCH = -math.inf


def doubling(first: float, cap: float, step: int) -> float:
    """`first` at step 1, doubled at each later step, never more than `cap`.

    The one exponential backoff of the program: API retries, poll backoff, notification retries.
    """
    # A bounded exponent: 2**n overflows a float long before a long outage ends.
    return min(cap, first * 2.0 ** min(max(step - 1, 0), 64))


@dataclass(slots=True)
class PollSchedule:
    """Next poll time per target, and the backoff state of the API as a whole.

    Every `now` is monotonic seconds (`time.monotonic()` or an injected test clock).

    Attributes:
        poll_interval: seconds between polls of an active job.
        slow_interval: seconds between polls of a settled job, and the longest backoff.
    """

    poll_interval: float
    slow_interval: float
    _next: dict[str, float] = field(default_factory=dict)
    _failures: dict[str, int] = field(default_factory=dict)
    _resume_at: float = _EPOCH
    failed_cycles: int = 0

    def due(self, keys: Iterable[str], now: float) -> list[str]:
        """The targets to poll now; none while the whole API is backed off."""
        if now < self._resume_at:
            return []
        return [k for k in keys if self._next.get(k, _EPOCH) <= now]

    def next_at(self, keys: Iterable[str], now: float) -> float:
        """When the next target falls due (a poll interval from now when nothing is watched)."""
        times = [self._next.get(k, _EPOCH) for k in keys]
        soonest = min(times) if times else now + self.poll_interval
        return max(soonest, self._resume_at)

    def force(self) -> None:
        """Make every target due now (one-shot commands and tests)."""
        self._next.clear()
        self._resume_at = _EPOCH

    def forget(self, keys: Iterable[str]) -> None:
        """Drop targets that are no longer watched."""
        for key in keys:
            self._next.pop(key, None)
            self._failures.pop(key, None)

    def succeeded(self, key: str, now: float, *, settled: bool = False) -> None:
        """A poll answered: next time after the normal (or, when settled, the slow) interval."""
        self._failures.pop(key, None)
        interval = self.slow_interval if settled else self.poll_interval
        self._next[key] = now + interval

    def failed(self, key: str, now: float, *, retry_after: float | None = None) -> None:
        """A poll failed: back off, doubling from the poll interval up to the slow interval.

        Rejected credentials back off the same way, not the slow interval at once: a wrong key
        must reach `api_down_after` cycles within minutes to be announced. The server's
        `retry_after` is honoured when it asks for longer.
        """
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = self._backoff(failures)
        self._next[key] = now + max(delay, self._hint(retry_after))

    def follow(self, leader: str, keys: Iterable[str]) -> None:
        """Give `keys` the next poll time of `leader` (jobs whose LIST failed wait with it)."""
        at = self._next.get(leader)
        if at is not None:
            for key in keys:
                self._next[key] = at

    def cycle_done(
        self, now: float, *, calls: int, unavailable: int, retry_after: float | None = None
    ) -> None:
        """Account for one cycle: when every call failed as unavailable, the API is down.

        While it is down no target is polled until the backoff has passed, so an outage costs
        one probe per backoff step instead of one request per job.
        """
        if calls == 0:
            return
        if unavailable < calls:
            self.failed_cycles = 0
            self._resume_at = _EPOCH
            return
        self.failed_cycles += 1
        delay = max(self._backoff(self.failed_cycles), self._hint(retry_after))
        self._resume_at = now + delay

    def _backoff(self, failures: int) -> float:
        return doubling(self.poll_interval, self.slow_interval, failures)

    def _hint(self, retry_after: float | None) -> float:
        """A server's `Retry-After`, bounded: never past the slow interval (an API asking to
        wait a day is polled, and counted as down, every slow interval), never negative."""
        if retry_after is None or not math.isfinite(retry_after):
            return 0.0
        return min(max(retry_after, 0.0), self.slow_interval)
