"""The daemon's Prometheus metrics, in a registry of their own, with bounded labels.

`Health` (the loop's `Observer`) feeds them; every label comes from a bounded set: kinds and
states through `core.labels`, channel names from the config, condition names from
`ConditionName`, job ids validated where they enter and capped at `MAX_JOB_SERIES` series.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from watcher.core import labels
from watcher.core.conditions import ConditionName
from watcher.core.names import is_valid_id

log = logging.getLogger(__name__)

#: Histogram buckets for API request latency, in seconds (requests time out after ~10 s).
REQUEST_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: The most jobs `fireworks_watcher_job_state` has series for; beyond, jobs are not exported.
MAX_JOB_SERIES: Final = 10_000
_CONDITIONS: Final = tuple(str(name) for name in ConditionName)


class Metrics:
    """Every metric the daemon exports, registered in `registry`.

    Args:
        registry: where they are registered (never the global one).
        job_state_metrics: export `fireworks_watcher_job_state` (one series per job: off for
            accounts where that cardinality is too high).
        max_job_series: the most jobs with a state series.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        job_state_metrics: bool = True,
        max_job_series: int = MAX_JOB_SERIES,
    ) -> None:
        self.api_calls = Counter(
            "fireworks_watcher_api_calls",
            "Fireworks API calls by outcome (ok, unavailable, rejected, auth, payload).",
            ["outcome"],
            registry=registry,
        )
        self.polls = Counter(
            "fireworks_watcher_polls",
            "Jobs polled successfully (ok) and API calls that failed (error).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("ok", "error"):
            self.polls.labels(outcome)
        self.requests = Histogram(
            "fireworks_watcher_api_request_seconds",
            "Latency of HTTP requests to the Fireworks API, by status code.",
            ["status"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.transitions = Counter(
            "fireworks_watcher_transitions",
            "Job state transitions by job kind and new state.",
            ["kind", "new_state"],
            registry=registry,
        )
        self.notifications = Counter(
            "fireworks_watcher_notifications",
            "Notification sends by channel and outcome (sent, failed, dead).",
            ["channel", "outcome"],
            registry=registry,
        )
        self.maybe_delivered = Counter(
            "fireworks_watcher_notifications_maybe_delivered",
            "Sends that timed out after the request went out, by channel: each may have "
            "arrived and is sent again (the one possible duplicate).",
            ["channel"],
            registry=registry,
        )
        self.pending = Gauge(
            "fireworks_watcher_outbox_pending",
            "Notifications waiting in the outbox.",
            registry=registry,
        )
        self.oldest_pending = Gauge(
            "fireworks_watcher_outbox_oldest_pending_age_seconds",
            "Age of the oldest notification waiting in the outbox (0 when empty).",
            registry=registry,
        )
        self.last_cycle = Gauge(
            "fireworks_watcher_last_cycle_timestamp_seconds",
            "Unix time the last poll cycle finished.",
            registry=registry,
        )
        self.last_success = Gauge(
            "fireworks_watcher_last_successful_poll_timestamp_seconds",
            "Unix time of the last cycle in which the API answered.",
            registry=registry,
        )
        self.conditions_open = Gauge(
            "fireworks_watcher_conditions_open",
            "Open conditions by name (stalled, pending_too_long, max_runtime, unreadable, "
            "api_down).",
            ["condition"],
            registry=registry,
        )
        for name in _CONDITIONS:
            self.conditions_open.labels(name).set(0)
        self.silenced_total = Counter(
            "fireworks_watcher_silenced",
            "Messages a silence muted (recorded, not sent), by channel.",
            ["channel"],
            registry=registry,
        )
        self.leader = Gauge(
            "fireworks_watcher_leader",
            "1 while this replica holds the poller lease (polls), 0 while standby.",
            registry=registry,
        )
        self.lease_epoch = Gauge(
            "fireworks_watcher_lease_epoch",
            "The poller lease's fencing epoch as this replica last read it (0: never read).",
            registry=registry,
        )
        self.job_state: Gauge | None = None
        if job_state_metrics:
            self.job_state = Gauge(
                "fireworks_watcher_job_state",
                "1 for each watched job's current state (kind, job id, state).",
                ["kind", "job", "state"],
                registry=registry,
            )
        self._max_job_series = max_job_series
        # The series each job has now: key -> its (kind, job, state) labels.
        self._job_series: dict[str, tuple[str, str, str]] = {}
        self._capped = False

    def job_states(self, states: Mapping[str, tuple[str, str, str]]) -> None:
        """Jobs whose state changed (key -> (kind, job id, state)); state "" forgets the job."""
        gauge = self.job_state
        if gauge is None:
            return
        for key, (kind, job_id, state) in states.items():
            old = self._job_series.get(key)
            if not state:
                if old is not None:
                    gauge.remove(*old)
                    del self._job_series[key]
                continue
            new = (labels.kind_label(kind), job_id, labels.state_label(kind, state))
            if new == old or not is_valid_id(job_id):
                continue
            if old is None and len(self._job_series) >= self._max_job_series:
                if not self._capped:
                    self._capped = True
                    log.warning(
                        "metrics.job_states_capped",
                        extra={"limit": self._max_job_series, "setting": "job_state_metrics"},
                    )
                continue
            if old is not None:
                gauge.remove(*old)
            gauge.labels(*new).set(1)
            self._job_series[key] = new

    def conditions(self, open_by_name: Mapping[str, int]) -> None:
        """How many conditions of each name are open (names not given count 0)."""
        for name in _CONDITIONS:
            self.conditions_open.labels(name).set(max(0, open_by_name.get(name, 0)))

    def silenced(self, channel: str) -> None:
        """A message to `channel` was silenced."""
        self.silenced_total.labels(channel).inc()
