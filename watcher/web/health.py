"""The daemon's health and metrics endpoint: `/healthz`, `/readyz` and `/metrics` over HTTP.

`Health` is the loop's `Observer`: it counts what the loop reports into Prometheus metrics
(its own registry, never the global one) and keeps the facts that liveness and readiness are
judged on. `Health.app()` is a plain ASGI 3 app; `serve_health` runs it under uvicorn in a
thread with its own event loop (leaving signals to the daemon), so a flood of scrapes never
queues the poller's tasks: beyond `MAX_CONNECTIONS` it answers 503 at once, `/metrics` is
rendered at most once per `METRICS_MAX_AGE`, and labels come from bounded sets.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import datetime
from typing import Any, Protocol

import prometheus_client
from prometheus_client import CollectorRegistry

from watcher.core import labels
from watcher.core.clock import utcnow
from watcher.core.lease import LEADER, Lease
from watcher.core.messages import iso_time
from watcher.ports import Report
from watcher.web.metrics import MAX_JOB_SERIES, Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Page(Protocol):
    """An ASGI app serving some paths beside the health endpoints (`web.page.StatusPage`)."""

    def owns(self, path: str) -> bool: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


#: The shortest silence that makes the loop look stuck, however short the poll interval.
MIN_LIVENESS_WINDOW = 60.0
#: How long `serve_health` waits for uvicorn to report it is serving.
#: Connections with a request served at once (a scraper or two, the page); beyond it, 503 at
#: once, but for the probes, which are always answered (`web.guard`).
MAX_CONNECTIONS = 32
BACKLOG = 64  # connections the kernel queues before they are accepted
#: The longest `/metrics` serves the same rendering: a flood of scrapes costs one render a second.
METRICS_MAX_AGE = 1.0

AUTH_REASON = "API rejected the credentials (401/403)"
STORE_REASON = "state database not writable"


def fresh_window(poll_interval: float, terminal_poll_interval: float) -> float:
    """Seconds within which a cycle (and a successful poll) is expected: three poll intervals;
    or, when every job has settled and is polled slowly, one slow interval plus a poll
    interval of slack (readiness, here and in `status`)."""
    return max(3 * poll_interval, terminal_poll_interval + poll_interval)


class Health:
    """Implements `loop.Observer`, exports the metrics and judges liveness and readiness.

    Args:
        poll_interval: seconds between polls of an active job.
        terminal_poll_interval: seconds between polls of a settled job. When every job has
            settled the loop legitimately sleeps this long between cycles, so both checks
            allow for it; None means the same as `poll_interval`.
        clock: wall-clock time (injectable for tests).
        registry: where the metrics are registered; a fresh one by default.
        metrics_max_age: seconds one rendering of `/metrics` is served for.
        job_state_metrics: export `fireworks_watcher_job_state` (config
            `watcher.job_state_metrics`).
        max_job_series: the most jobs with a state series (see `metrics.MAX_JOB_SERIES`).
    """

    def __init__(
        self,
        *,
        poll_interval: float,
        terminal_poll_interval: float | None = None,
        clock: Callable[[], datetime] = utcnow,
        registry: CollectorRegistry | None = None,
        metrics_max_age: float = METRICS_MAX_AGE,
        job_state_metrics: bool = True,
        max_job_series: int = MAX_JOB_SERIES,
    ) -> None:
        self._clock = clock
        self._metrics_max_age = metrics_max_age
        # (monotonic time, bytes) of the last rendering; read and written by the server only.
        self._rendered: tuple[float, bytes] | None = None
        self._poll_interval = poll_interval
        self._terminal_interval = terminal_poll_interval or poll_interval
        self._started_at = clock()
        self._last_cycle: datetime | None = None
        self._last_success: datetime | None = None
        self._auth_rejected = False
        self._store_failed = False
        self._oldest_pending: datetime | None = None
        self._unreadable: dict[str, str] = {}
        self._failures: list[str] = []  # see fail()
        # The replica's role and the lease as last read (None: one process, no lease loop).
        self._role: str | None = None
        self._lease: Lease | None = None
        self._lease_checked: datetime | None = None
        self._lease_ok = True
        if registry is None:
            registry = CollectorRegistry()
            prometheus_client.ProcessCollector(registry=registry)
        self.registry = registry
        self._metrics = Metrics(
            registry, job_state_metrics=job_state_metrics, max_job_series=max_job_series
        )
        # Computed at scrape time: the age keeps growing between cycles.
        self._metrics.oldest_pending.set_function(self._oldest_pending_age)

    # -- loop.Observer ---------------------------------------------------------------------

    def api_call(self, outcome: str) -> None:
        """One API call ended: ok, unavailable, rejected, auth or payload."""
        self._metrics.api_calls.labels(labels.one_of(outcome, labels.API_OUTCOMES)).inc()

    def transition(self, kind: str, new_state: str) -> None:
        """A job moved (first sightings excluded)."""
        # The state comes from the API: an unknown one is `other`, never a new series.
        self._metrics.transitions.labels(
            labels.kind_label(kind), labels.state_label(kind, new_state)
        ).inc()

    def notification(self, channel: str, outcome: str) -> None:
        """A send ended: sent, failed or dead (channel names come from the config: bounded)."""
        self._metrics.notifications.labels(
            channel, labels.one_of(outcome, labels.SEND_OUTCOMES)
        ).inc()

    def maybe_delivered(self, channel: str) -> None:
        """A send timed out and may have arrived:
        `fireworks_watcher_notifications_maybe_delivered_total`."""
        self._metrics.maybe_delivered.labels(channel).inc()

    def cycle_done(self, report: Report, *, at: datetime) -> None:
        """A cycle finished: count its polls and update the readiness facts."""
        self._metrics.polls.labels("ok").inc(report.polled)
        self._metrics.polls.labels("error").inc(report.api_errors)
        self._last_cycle = at
        self._metrics.last_cycle.set(at.timestamp())
        # An empty LIST answer polls no job but still proves the API answers.
        if report.polled > 0 or report.calls > report.api_errors:
            self._last_success = at
            self._metrics.last_success.set(at.timestamp())
            if not report.auth_failed:
                self._auth_rejected = False
        if report.auth_failed:
            self._auth_rejected = True
        self._store_failed = report.store_failed

    def outbox(self, pending: int, oldest: datetime | None) -> None:
        """The outbox now holds `pending` deliveries, the oldest created at `oldest`."""
        self._metrics.pending.set(pending)
        self._oldest_pending = oldest if pending > 0 else None

    def unreadable(self, targets: Mapping[str, str]) -> None:
        """These targets cannot be read (shown by /readyz, which stays ready: the rest is)."""
        self._unreadable = dict(targets)

    def job_states(self, states: Mapping[str, tuple[str, str, str]]) -> None:
        """Jobs whose state changed: `fireworks_watcher_job_state` (state "" forgets one)."""
        self._metrics.job_states(states)

    def conditions(self, open_by_name: Mapping[str, int]) -> None:
        """How many conditions of each name are open: `fireworks_watcher_conditions_open`."""
        self._metrics.conditions(open_by_name)

    def silenced(self, channel: str) -> None:
        """A message to `channel` was silenced: `fireworks_watcher_silenced_total`."""
        self._metrics.silenced(channel)

    def leadership(self, role: str, lease: Lease | None, *, reachable: bool) -> None:
        """A lease check ended: `fireworks_watcher_leader`, `..._lease_epoch`, and /readyz."""
        self._role, self._lease, self._lease_ok = role, lease, reachable
        if reachable:
            self._lease_checked = self._clock()
        self._metrics.leader.set(1 if role == LEADER else 0)
        self._metrics.lease_epoch.set(lease.epoch if lease is not None else 0)

    def warnings(self) -> list[str]:
        """What /readyz says beside its verdict: the replica's role and the lease holder,
        then the resources that cannot be read."""
        lines = []
        if self._role is not None:
            holder = f"{self._lease.holder} (epoch {self._lease.epoch})" if self._lease else "none"
            lines += [f"role: {self._role}", f"lease holder: {holder}"]
        return lines + [
            f"cannot read {target}: {error}" for target, error in sorted(self._unreadable.items())
        ]

    def summary(self) -> dict[str, object]:
        """The daemon's own facts for the status page: role, last poll, readiness."""
        ready, reasons = self.readiness()
        return {
            "role": self._role or LEADER,
            "last_poll": iso_time(self._last_cycle),
            "last_success": iso_time(self._last_success),
            "ready": ready,
            "reasons": reasons,
            "poll_interval": self._poll_interval,
        }

    def _standby(self) -> bool:
        # A standby does not poll: its lease checks are what must keep happening.
        return self._role is not None and self._role != LEADER

    # -- fed by the HTTP client and the composition root -----------------------------------

    def observe_request(self, seconds: float, *, status: str) -> None:
        """One HTTP request to the API took `seconds`; `status` is its code, or "error"."""
        self._metrics.requests.labels(labels.status_label(status)).observe(seconds)

    def set_poll_interval(
        self, seconds: float, *, terminal_poll_interval: float | None = None
    ) -> None:
        """Judge freshness by new intervals (after a config reload)."""
        self._poll_interval = seconds
        self._terminal_interval = terminal_poll_interval or seconds

    # -- judgements ------------------------------------------------------------------------

    def _fresh_window(self) -> float:
        """Seconds within which a cycle (and a successful poll) is expected."""
        return fresh_window(self._poll_interval, self._terminal_interval)

    def _oldest_pending_age(self) -> float:
        if self._oldest_pending is None:
            return 0.0
        return max(0.0, (self._clock() - self._oldest_pending).total_seconds())

    def liveness(self) -> tuple[bool, str]:
        """(alive, reason): alive while cycles keep finishing, or during the grace after start."""
        window = max(self._fresh_window(), MIN_LIVENESS_WINDOW)
        if self._standby():
            since = self._lease_checked or self._started_at
            if (self._clock() - since).total_seconds() <= window:
                return True, "ok"
            return False, f"no lease check succeeded in the last {window:g} s"
        since = self._last_cycle or self._started_at
        if (self._clock() - since).total_seconds() <= window:
            return True, "ok"
        return False, f"no poll cycle finished in the last {window:g} s"

    def readiness(self) -> tuple[bool, list[str]]:
        """(ready, reasons): ready after a recent successful poll, with credentials and store fine."""
        reasons: list[str] = []
        window = self._fresh_window()
        if self._standby():
            checked = self._lease_checked
            stale = checked is None or (self._clock() - checked).total_seconds() > window
            if stale or not self._lease_ok:
                reasons.append("cannot reach the state database for the lease")
        elif self._last_success is None:
            reasons.append("no successful poll yet")
        elif (self._clock() - self._last_success).total_seconds() > window:
            reasons.append(f"no successful poll in the last {window:g} s")
        if self._auth_rejected:
            reasons.append(AUTH_REASON)
        if self._store_failed:
            reasons.append(STORE_REASON)
        reasons.extend(self._failures)
        return not reasons, reasons

    def metrics(self) -> bytes:
        """The text exposition, rendered anew at most once per `metrics_max_age` seconds."""
        now = time.monotonic()
        if self._rendered is None or now - self._rendered[0] >= self._metrics_max_age:
            self._rendered = (now, prometheus_client.generate_latest(self.registry))
        return self._rendered[1]

    def fail(self, reason: str) -> None:
        """Not ready from now until a restart, for `reason` (the state file was lost)."""
        if reason not in self._failures:
            self._failures.append(reason)

    # -- HTTP ------------------------------------------------------------------------------

    def app(self, page: Page | None = None) -> AsgiApp:
        """A plain ASGI 3 app serving `/healthz`, `/readyz` and `/metrics`, and the paths
        `page` owns (the status page and its API) when given."""

        async def health_app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            elif scope["type"] == "http" and page is not None and page.owns(scope["path"]):
                await page(scope, receive, send)
            elif scope["type"] == "http":
                await _respond(send, scope["method"], *self._route(scope["path"], scope["method"]))

        return health_app

    def _route(self, path: str, method: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """(status, headers, body) for one request."""
        allowed = {"/healthz": "GET, HEAD", "/readyz": "GET, HEAD", "/metrics": "GET"}
        if path not in allowed:
            return _text(404, "not found\n")
        if method not in allowed[path].split(", "):
            status, headers, body = _text(405, "method not allowed\n")
            return status, [*headers, (b"allow", allowed[path].encode())], body
        if path == "/metrics":
            content_type = prometheus_client.CONTENT_TYPE_LATEST.encode()
            return 200, [(b"content-type", content_type)], self.metrics()
        if path == "/healthz":
            alive, reason = self.liveness()
            return _text(200, "ok\n") if alive else _text(503, f"{reason}\n")
        ready, reasons = self.readiness()
        lines = (["ready"] if ready else reasons) + self.warnings()
        return _text(200 if ready else 503, "".join(f"{line}\n" for line in lines))


def _text(status: int, body: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, [(b"content-type", b"text/plain; charset=utf-8")], body.encode()


async def _respond(
    send: Send, method: str, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown: there is nothing to set up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- serving ---------------------------------------------------------------------------------
