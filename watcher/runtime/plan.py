"""What the poller is told to do, and what one poll cycle did: plain values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from watcher.core.conditions import Thresholds
from watcher.core.delivery import Channel, RetryPolicy
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef, Transition

_DEFAULT = Thresholds()


@dataclass(frozen=True, slots=True)
class WatchPlan:
    """What to watch and whom to tell, as the composition root resolved it from the config.

    Attributes:
        api_down_after: consecutive cycles in which every API call failed before channels
            are told the API is unreachable.
        unreadable_after: consecutive polls of one target that the API refused (a 4xx other
            than 404) or answered unparsably before channels are told; 0 never tells.
        max_new_per_cycle: jobs never seen before that one discovered kind's listing records
            per cycle (ten times that for its first listing); the rest wait for later cycles.
        job_thresholds: condition thresholds of explicit jobs (by key); kind_thresholds: of
            the jobs a `discover` watch finds (by kind name).
        history_days: events are kept this long.
    """

    refs: tuple[JobRef, ...]
    channels: tuple[Channel, ...]
    discover: tuple[JobKind, ...] = ()
    poll_interval: float = 30.0
    terminal_poll_interval: float = 300.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    api_down_after: int = 3
    unreadable_after: int = 3
    api_label: str = "the Fireworks API"
    account_id: str = ""  # the account polled: a rejected key is announced for it
    notify_timeout: float = 30.0
    max_new_per_cycle: int = 1000
    job_thresholds: Mapping[str, Thresholds] = field(default_factory=dict)
    kind_thresholds: Mapping[str, Thresholds] = field(default_factory=dict)
    history_days: int = 90

    def thresholds(self, ref: JobRef) -> Thresholds:
        """The condition thresholds of one resource: its explicit watch's, else its kind's."""
        return self.job_thresholds.get(ref.key) or self.kind_thresholds.get(ref.kind, _DEFAULT)


@dataclass(slots=True)
class CycleReport:
    """What one cycle did."""

    polled: int = 0
    calls: int = 0
    answered: int = 0  # calls the API answered, well or not (not timeouts, 5xx, 429)
    transitions: list[Transition] = field(default_factory=list)
    api_errors: int = 0
    unavailable: int = 0
    unreachable: str = ""  # the error of the cycle's last unavailable call
    unreachable_targets: set[str] = field(default_factory=set)  # targets of those calls
    auth_failed: bool = False
    # (target, HTTP status, error) of every call the API refused (4xx), in order
    rejected: list[tuple[str, int, str]] = field(default_factory=list)
    store_failed: bool = False
    retry_after: float | None = None
    listed: list[JobKind] = field(default_factory=list)  # discovered kinds listed in full
    sent: int = 0
    failed: int = 0
    dead: int = 0
