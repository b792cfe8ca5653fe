"""The daemon's cycle: fetch each job, diff it, record state and outbox together, deliver.

`Watcher.run_once()` is one cycle; `run_forever()` repeats it until asked to stop. The loop
reaches the API, the store and the notifier only through the Protocols below, so tests can
hand it real adapters or small fakes alike.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

import anyio
import anyio.to_thread
import structlog

from watcher import messages, transitions
from watcher.delivery import (
    Channel,
    Delivery,
    OutboxEntry,
    RetryPolicy,
    SendOutcome,
    SendResult,
    next_attempt,
)
from watcher.errors import ApiError, ApiRejected
from watcher.model import JobKind, JobRef, JobSnapshot, JobState, Transition, is_settled

log = structlog.get_logger("watcher")
T = TypeVar("T")


class JobSource(Protocol):
    """Where job snapshots come from (the Fireworks API client)."""

    async def get_job(self, ref: JobRef) -> JobSnapshot:
        """One job; a vanished job comes back in state NOT_FOUND."""
        ...

    async def list_jobs(self, kind: JobKind) -> list[JobSnapshot]:
        """Every job of a kind in the account."""
        ...


class Store(Protocol):
    """Durable last-seen state and outbox; blocking calls, run in a worker thread."""

    def last_all(self) -> dict[str, JobSnapshot]: ...
    def record(
        self, snapshots: Sequence[JobSnapshot], entries: Sequence[OutboxEntry], *, now: datetime
    ) -> None: ...
    def due(self, now: datetime, *, limit: int = 100) -> list[Delivery]: ...
    def next_due_at(self) -> datetime | None: ...
    def mark_delivered(self, delivery_id: int, *, now: datetime) -> None: ...
    def mark_retry(self, delivery_id: int, *, next_attempt_at: datetime, error: str) -> None: ...
    def mark_dead(self, delivery_id: int, *, now: datetime, error: str) -> None: ...


class Sender(Protocol):
    """Sends one rendered message to one target (the apprise notifier)."""

    async def send(self, key: str, *, title: str, body: str, notify_type: str) -> SendResult: ...


@dataclass(frozen=True, slots=True)
class WatchPlan:
    """What to watch and whom to tell, as the composition root resolved it from the config."""

    refs: tuple[JobRef, ...]
    channels: tuple[Channel, ...]
    discover: tuple[JobKind, ...] = ()
    poll_interval: float = 30.0
    terminal_poll_interval: float = 300.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(slots=True)
class CycleReport:
    """What one cycle did."""

    polled: int = 0
    transitions: list[Transition] = field(default_factory=list)
    api_errors: int = 0
    auth_failed: bool = False
    sent: int = 0
    failed: int = 0
    dead: int = 0


def utcnow() -> datetime:
    """The wall clock, timezone-aware."""
    return datetime.now(UTC)


class Watcher:
    """Polls jobs, announces their transitions, and keeps the guarantees of design.md.

    Args:
        plan: jobs, channels and intervals.
        source: the API.
        store: the state database.
        sender: the notifier.
        clock: wall-clock time (injectable for tests).
        rand: jitter source in [0, 1).
        on_transition: called for every transition, first sightings included (the `watch`
            command prints them).
    """

    def __init__(
        self,
        plan: WatchPlan,
        *,
        source: JobSource,
        store: Store,
        sender: Sender,
        clock: Callable[[], datetime] = utcnow,
        rand: Callable[[], float] = random.random,
        on_transition: Callable[[Transition], None] | None = None,
        max_parallel_polls: int = 4,
    ) -> None:
        self.plan = plan
        self._source = source
        self._store = store
        self._sender = sender
        self._clock = clock
        self._rand = rand
        self._on_transition = on_transition
        self._poll_limiter = anyio.CapacityLimiter(max_parallel_polls)
        # One connection, one writer: every store call runs in this one-slot lane.
        self._db_limiter = anyio.CapacityLimiter(1)
        self._last: dict[str, JobSnapshot] | None = None
        self._next_poll: dict[str, datetime] = {}
        self._next_discover = datetime.min.replace(tzinfo=UTC)

    def last(self, ref: JobRef) -> JobSnapshot | None:
        """The last recorded snapshot of a job (after `start` or a cycle)."""
        return (self._last or {}).get(ref.key)

    async def _db(self, call: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await anyio.to_thread.run_sync(
            functools.partial(call, *args, **kwargs), limiter=self._db_limiter
        )

    async def start(self) -> None:
        """Load the last seen states; called once before the first cycle."""
        if self._last is None:
            self._last = await self._db(self._store.last_all)

    # -- one cycle -------------------------------------------------------------------------

    async def run_once(self, *, force: bool = False) -> CycleReport:
        """Poll what is due (with `force`, every job), record what changed, deliver what is owed."""
        await self.start()
        report = CycleReport()
        if force:
            self._next_poll.clear()
            self._next_discover = datetime.min.replace(tzinfo=UTC)
        observed = await self._fetch(report)
        await self._record(observed, report)
        await self.deliver_due(report)
        return report

    def _due_refs(self, now: datetime) -> list[JobRef]:
        return [r for r in self.plan.refs if self._next_poll.get(r.key, now) <= now]

    async def _fetch(self, report: CycleReport) -> list[JobSnapshot]:
        now = self._clock()
        observed: list[JobSnapshot] = []
        refs = self._due_refs(now)
        if self.plan.discover and self._next_discover <= now:
            self._next_discover = now + timedelta(seconds=self.plan.poll_interval)
            refs += await self._discover(observed, report)

        async def poll(ref: JobRef) -> None:
            async with self._poll_limiter:
                snapshot = await self._guarded(ref.key, self._source.get_job(ref), report)
            if snapshot is not None:
                observed.append(snapshot)

        async with anyio.create_task_group() as tg:
            for ref in refs:
                tg.start_soon(poll, ref)
        report.polled = len(observed)
        for snapshot in observed:
            interval = (
                self.plan.terminal_poll_interval
                if is_settled(snapshot.state)
                else self.plan.poll_interval
            )
            self._next_poll[snapshot.ref.key] = now + timedelta(seconds=interval)
        return observed

    async def _discover(self, observed: list[JobSnapshot], report: CycleReport) -> list[JobRef]:
        """List every job of the discovered kinds; returns known jobs missing from the list."""
        assert self._last is not None
        explicit = {r.key for r in self.plan.refs}
        vanished: list[JobRef] = []
        for kind in self.plan.discover:
            listed = await self._guarded(str(kind), self._source.list_jobs(kind), report)
            if listed is None:
                continue
            observed.extend(s for s in listed if s.ref.key not in explicit)
            present = {s.ref.key for s in listed}
            # A job gone from the list is confirmed with one GET before it is called NOT_FOUND.
            vanished += [
                snap.ref
                for key, snap in self._last.items()
                if snap.ref.kind == kind
                and key not in present
                and key not in explicit
                and snap.state not in (JobState.NOT_FOUND, JobState.DELETED)
            ]
        return vanished

    async def _guarded(self, what: str, call: Awaitable[T], report: CycleReport) -> T | None:
        try:
            return await call
        except ApiRejected as exc:
            report.api_errors += 1
            if exc.is_auth:
                report.auth_failed = True
                log.error("api.auth_failed", target=what, error=str(exc), status=exc.status_code)
            else:
                log.warning("api.error", target=what, error=str(exc))
        except ApiError as exc:
            report.api_errors += 1
            log.warning("api.error", target=what, error=str(exc))
        return None

    async def _record(self, observed: Sequence[JobSnapshot], report: CycleReport) -> None:
        assert self._last is not None
        now = self._clock()
        changed: dict[str, JobSnapshot] = {}
        entries: list[OutboxEntry] = []
        for snapshot in observed:
            last = self._last.get(snapshot.ref.key)
            stored = transitions.merge(last, snapshot)
            if stored == last:
                continue
            changed[stored.ref.key] = stored
            transition = transitions.diff(last, snapshot, at=now)
            if transition is not None:
                report.transitions.append(transition)
                entries += self._outbox_entries(transition)
        if not changed:
            return
        # State and outbox in one transaction: a crash after this line loses nothing, and a
        # crash before it means the next start sees the change again.
        await self._db(self._store.record, list(changed.values()), entries, now=now)
        self._last.update(changed)
        for transition in report.transitions:
            self._announce(transition)

    def _outbox_entries(self, transition: Transition) -> list[OutboxEntry]:
        entries: list[OutboxEntry] = []
        for channel in self.plan.channels:
            if not transitions.wants(channel.rules, transition):
                continue
            message = messages.render(transition, title=channel.title, body=channel.body)
            entries += [
                OutboxEntry(
                    job_key=transition.ref.key,
                    channel=channel.name,
                    url_key=target.url_key,
                    url_display=target.url_display,
                    title=message.title,
                    body=message.body,
                    old_state=transition.old_state,
                    new_state=transition.new_state,
                    created_at=transition.observed_at,
                )
                for target in channel.targets
            ]
        return entries

    def _announce(self, transition: Transition) -> None:
        new = transition.new
        if transition.old is None:
            log.info("job.baseline", job=transition.ref.key, state=new.state)
        else:
            log.info(
                "job.transition",
                job=transition.ref.key,
                old_state=transition.old_state,
                new_state=transition.new_state,
                status_code=new.status_code,
                status_message=new.status_message,
            )
        if self._on_transition is not None:
            self._on_transition(transition)

    # -- delivery --------------------------------------------------------------------------

    async def deliver_due(self, report: CycleReport | None = None) -> CycleReport:
        """Send every outbox row that is due, and record each outcome."""
        report = report if report is not None else CycleReport()
        due = await self._db(self._store.due, self._clock())
        async with anyio.create_task_group() as tg:
            for delivery in due:
                tg.start_soon(self._deliver, delivery, report)
        return report

    async def _deliver(self, delivery: Delivery, report: CycleReport) -> None:
        entry = delivery.entry
        result = await self._sender.send(
            entry.url_key,
            title=entry.title,
            body=entry.body,
            notify_type=messages.notify_type(entry.new_state),
        )
        now = self._clock()
        fields = {"job": entry.job_key, "channel": entry.channel, "url": entry.url_display}
        # Shielded: a send that went out must be marked, or a restart would repeat it.
        with anyio.CancelScope(shield=True):
            if result.outcome is SendOutcome.DELIVERED:
                report.sent += 1
                await self._db(self._store.mark_delivered, delivery.id, now=now)
                log.info("notify.sent", new_state=entry.new_state, **fields)
                return
            attempts = delivery.attempts + 1
            retry_at = next_attempt(
                self.plan.retry,
                attempts=attempts,
                created_at=entry.created_at,
                now=now,
                rand=self._rand,
            )
            if retry_at is None:
                report.dead += 1
                await self._db(self._store.mark_dead, delivery.id, now=now, error=result.detail)
                log.error("notify.dead", attempts=attempts, error=result.detail, **fields)
                return
            report.failed += 1
            await self._db(
                self._store.mark_retry, delivery.id, next_attempt_at=retry_at, error=result.detail
            )
            log.warning(
                "notify.failed",
                attempts=attempts,
                error=result.detail,
                retry_at=retry_at.isoformat(timespec="seconds"),
                **fields,
            )

    # -- forever ---------------------------------------------------------------------------

    async def next_wake(self) -> float:
        """Seconds until the next poll or retry is due (at least a short pause)."""
        now = self._clock()
        candidates = [now + timedelta(seconds=self.plan.poll_interval)]
        candidates += self._next_poll.values()
        if self.plan.discover:
            candidates.append(self._next_discover)
        due = await self._db(self._store.next_due_at)
        if due is not None:
            candidates.append(due)
        return max(0.05, (min(candidates) - now).total_seconds())

    async def run_forever(self, stop: anyio.Event, *, grace: float = 5.0) -> None:
        """Run cycles until `stop` is set, then let in-flight work finish for up to `grace` s."""
        await self.start()
        log.info(
            "watcher.started",
            jobs=len(self.plan.refs),
            discover=[str(k) for k in self.plan.discover],
            channels=[c.name for c in self.plan.channels],
            poll_interval=self.plan.poll_interval,
        )
        with anyio.CancelScope() as cycles:

            async def limit_grace() -> None:
                await stop.wait()
                cycles.deadline = anyio.current_time() + grace

            async with anyio.create_task_group() as tg:
                tg.start_soon(limit_grace)
                while not stop.is_set():
                    await self.run_once()
                    with anyio.move_on_after(await self.next_wake()):
                        await stop.wait()
                tg.cancel_scope.cancel()
        log.info("watcher.stopped")
