"""The poller: fetch each resource, diff it, record state and outbox rows together.

`Watcher.poll_once()` is one poll cycle; the `Dispatcher` it owns sends what the cycles
record, in its own task, so polling never waits for a channel. `run_once()` is one poll and
one dispatch, waited for (the `once` command); `run_forever()` runs both tasks until asked to
stop (see `runtime.replica`). The poller reaches the API, the store, the notifier and the metrics only through
`watcher.ports`, so tests can hand it real adapters or small fakes alike.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

import anyio
import structlog

from watcher.core import decide
from watcher.core.clock import SteadyClock
from watcher.core.conditions import ConditionName
from watcher.core.decide import listed_flag
from watcher.core.errors import StoreError
from watcher.core.model import JobKind, JobRef, JobSnapshot, Transition
from watcher.core.schedule import PollSchedule
from watcher.ports import Budget, NullObserver, Observer, Outbox, Sender, Source, StateRepo
from watcher.runtime import replica
from watcher.runtime.alerts import Alerts, own_troubles
from watcher.runtime.clocks import StepNotice, monotonic, utcnow
from watcher.runtime.dispatcher import Dispatcher, DispatchReport
from watcher.runtime.fetcher import Fetcher, list_key
from watcher.runtime.housekeeping import Housekeeping
from watcher.runtime.leadership import Leadership
from watcher.runtime.plan import CycleReport, WatchPlan
from watcher.runtime.storelog import StoreErrorLog
from watcher.runtime.troubles import Due, Troubles

log = structlog.get_logger("watcher")
T = TypeVar("T")


class Store(StateRepo, Outbox, Protocol):
    """The state database: both ports in one (SQLite keeps them in one file)."""


class Watcher:
    """Polls jobs, records their transitions, and keeps the guarantees of design.md.

    Args:
        plan: jobs, channels and intervals.
        source: the API.
        store: the state database.
        sender: the notifier (used by the dispatcher, `self.dispatcher`).
        observer: health and metrics.
        clock: wall-clock time, read through a `SteadyClock`: a step of the host clock moves
            no stored time. monotonic: the seconds polls are scheduled on (both injectable).
        rand: jitter source in [0, 1).
        on_transition: called for every transition, first sightings included (the `watch`
            command prints them).
    """

    def __init__(
        self,
        plan: WatchPlan,
        *,
        source: Source,
        store: Store,
        sender: Sender,
        observer: Observer | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = monotonic,
        rand: Callable[[], float] = random.random,
        on_transition: Callable[[Transition], None] | None = None,
        max_parallel_polls: int = 4,
        budget: Budget | None = None,
    ) -> None:
        self.plan = plan
        self._source = source
        self._store = store
        self._sender = sender
        self._observer: Observer = observer if observer is not None else NullObserver()
        self._clock = clock if isinstance(clock, SteadyClock) else SteadyClock(clock, monotonic)
        self._monotonic = monotonic
        self._clock_steps = StepNotice()
        self._rand = rand
        self._on_transition = on_transition
        self._store_errors = StoreErrorLog()  # one line per failure, poller and dispatcher alike
        self.dispatcher = Dispatcher(
            store,
            sender,
            channels=plan.channels,
            policy=plan.retry,
            send_timeout=plan.notify_timeout,
            observer=self._observer,
            clock=self._clock,
            rand=rand,
            store_errors=self._store_errors,
        )
        self._last: dict[str, JobSnapshot] | None = None
        self._schedule = PollSchedule(plan.poll_interval, plan.terminal_poll_interval)
        self._alerts = Alerts()
        self._troubles = Troubles()  # unreadable resources, and rejected keys by account
        self._unreadable = self._troubles.unreadable
        self._pending_reload: tuple[WatchPlan, Sender] | None = None
        self._wake = anyio.Event()
        self._budget = budget
        self._listed_kinds: set[JobKind] = set()
        self._housekeeping = Housekeeping()
        self._fetcher = Fetcher(
            source,
            schedule=self._schedule,
            observer=self._observer,
            unreadable=self._unreadable,
            last=lambda: self._last or {},
            record=self._record,
            budget=budget,
            max_parallel_polls=max_parallel_polls,
            listed=lambda: self._listed_kinds,
        )
        self._fetcher.index(plan)

    def last(self, ref: JobRef) -> JobSnapshot | None:
        """The last recorded snapshot of a job (after `start` or a cycle)."""
        return (self._last or {}).get(ref.key)

    async def start(self) -> None:
        """Load the last seen states; called once before the first cycle."""
        if self._last is None:
            self._last = await self._store.last_all()
            self._alerts.load(
                await self._store.since_all(),
                await self._store.open_conditions(),
                await self._store.reminder_times(),
            )
            await self._alerts.recall(self._store, self.plan, self._last, self._clock())
            self._troubles.load(self._alerts.announced)
            self._observer.unreadable(self._unreadable.announced)
            self._alerts.started(self._last, self._observer)
            self._listed_kinds = {
                kind for kind in JobKind if await self._store.flag(listed_flag(kind))
            }

    # -- reload ----------------------------------------------------------------------------

    def reload(self, plan: WatchPlan, sender: Sender) -> None:
        """Switch to a new plan and notifier at the start of the next cycle (SIGHUP)."""
        self._pending_reload = (plan, sender)
        self._wake.set()

    async def _apply_reload(self) -> None:
        if self._pending_reload is None:
            return
        plan, sender = self._pending_reload
        self._pending_reload = None
        assert self._last is not None
        old_keys = {r.key for r in self.plan.refs}
        new_keys = {r.key for r in plan.refs}
        kept_kinds = set(plan.discover)
        # Jobs neither listed nor discovered any more: forget them, so that watching one
        # again later starts from a silent baseline rather than a stale state.
        dropped = [
            key
            for key, snap in self._last.items()
            if key not in new_keys and (key in old_keys or snap.ref.kind not in kept_kinds)
        ]
        try:
            await self._store.forget(dropped)
        except StoreError as exc:
            self._store_errors.failed(exc)
        else:
            for key in dropped:
                del self._last[key]
            self._alerts.forget(dropped, self._observer)
        self._schedule.forget([*dropped, *(list_key(k) for k in self.plan.discover)])
        self._schedule.poll_interval = plan.poll_interval
        self._schedule.slow_interval = plan.terminal_poll_interval
        self.plan, self._sender = plan, sender
        self.dispatcher.reload(
            sender, plan.retry, send_timeout=plan.notify_timeout, channels=plan.channels
        )
        self._fetcher.index(plan)
        await self._forget_unwatched_unreadable()
        log.info(
            "watcher.reloaded",
            jobs=len(plan.refs),
            added=len(new_keys - old_keys),
            removed=len(dropped),
            channels=[c.name for c in plan.channels],
        )

    async def _forget_unwatched_unreadable(self) -> None:
        """A target no longer watched is no longer news: its unreadable flag goes, silently."""
        stale = self._unreadable.stale(self._fetcher.watches)
        if not stale:
            return
        gone = [
            c
            for c in self._alerts.open.values()
            if c.name is ConditionName.UNREADABLE and c.subject in stale
        ]
        try:
            await self._store.record([], [], now=self._clock(), resolved=gone)
        except StoreError as exc:
            self._store_errors.failed(exc)
            return
        for condition in gone:
            self._alerts.open.pop(condition.key, None)
        self._unreadable.forget(stale)
        self._observer.unreadable(self._unreadable.announced)

    # -- one cycle -------------------------------------------------------------------------

    async def run_once(self, *, force: bool = False) -> CycleReport:
        """One poll cycle, then one dispatch round, each waited for (the `once` command)."""
        report = await self.poll_once(force=force)
        sent = await self.dispatch_once()
        report.sent, report.failed, report.dead = sent.sent, sent.failed, sent.dead
        report.store_failed |= sent.store_failed
        return report

    async def dispatch_once(self) -> DispatchReport:
        """Send every delivery due now and wait for them (see `Dispatcher.dispatch_once`)."""
        await self.start()
        return await self.dispatcher.dispatch_once()

    async def poll_once(self, *, force: bool = False) -> CycleReport:
        """Poll what is due (with `force`, every job) and record what changed; the dispatcher
        is woken for whatever that queued."""
        await self.start()
        await self._apply_reload()
        report = CycleReport()
        if force:
            self._schedule.force()
        observed = await self._fetcher.fetch(report, self._monotonic())
        at = self._monotonic()
        self._schedule.cycle_done(
            at, calls=report.calls, unavailable=report.unavailable, retry_after=report.retry_after
        )
        now = self._clock_steps.read(self._clock)
        self._troubles.judge_key(report, self.plan.account_id)
        await self._record(
            observed,
            report,
            api_notice=self._alerts.api_notice(
                self._schedule.failed_cycles, self.plan.api_down_after, answered=report.answered > 0
            ),
            troubles=self._troubles.due(self.plan),
            full=True,
        )
        await self._housekeeping.run(
            self._store, now, history_days=self.plan.history_days, errors=self._store_errors
        )
        self._observer.cycle_done(report, at=self._clock())
        self._fetcher.check_budget(self.plan)
        return report

    async def _record(
        self,
        observed: Sequence[JobSnapshot],
        report: CycleReport,
        *,
        api_notice: tuple[str, str] | None = None,
        troubles: Due | None = None,
        full: bool = False,
    ) -> int:
        """Store what changed and queue its notifications, in one transaction.

        `troubles` are the subjects to announce as unreadable or with a rejected key, each
        with its error ("" when it is over); with the API's reachability they open and
        resolve the watcher's own conditions. Milestones join every write; conditions,
        reminders and digests the cycle's last (`full`).

        Returns how many outbox rows were queued.
        """
        assert self._last is not None
        now = self._clock()
        decision = decide.decide(
            self._last,
            observed,
            channels=self.plan.channels,
            now=now,
            explicit=self._fetcher.explicit_keys,
            listed_before=frozenset(self._listed_kinds),
            listed_now=report.listed,
            since=self._alerts.since,
        )
        alert = self._alerts.plan(
            self.plan,
            self._last,
            decision,
            observed=observed,
            now=now,
            own=own_troubles(troubles or {}, api_notice),
            silences=await self._alerts.silences(self._store, self.plan, now) if full else (),
            full=full,
        )
        # State and outbox in one transaction: a crash after it loses nothing, and a crash
        # before it means the next start sees the change again.
        try:
            entries = await self._alerts.write(
                self._store, self.plan, decision, alert, last=self._last, now=now
            )
        except StoreError as exc:
            # Nothing was written, so the next cycle sees the same changes again.
            report.store_failed = True
            self._store_errors.failed(exc)
            return 0
        self._last.update((s.ref.key, s) for s in decision.snapshots)
        self._listed_kinds.update(report.listed)
        self._alerts.applied(alert, decision, now=now, watch=self.plan)
        if api_notice is not None:
            log.warning("api.unreachable" if api_notice[0] == "down" else "api.reachable")
        if troubles:
            self._troubles.recorded(troubles)
            if troubles.get(ConditionName.UNREADABLE):
                self._observer.unreadable(self._unreadable.announced)
        self._alerts.log(alert, decision, self._observer)
        report.transitions += decision.transitions
        for transition in decision.transitions:
            self._announce(transition)
        if entries:
            self.dispatcher.wake()
        return entries

    def _announce(self, transition: Transition) -> None:
        new = transition.new
        if transition.old is None:
            event = "job.new" if transition.new_job else "job.baseline"
            log.info(event, job=transition.ref.key, state=new.state)
        else:
            self._observer.transition(str(transition.ref.kind), transition.new_state)
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

    # -- forever ---------------------------------------------------------------------------

    @property
    def budget(self) -> Budget | None:
        return self._budget

    def check_budget(self) -> None:
        """Warn when a full cycle costs more than the request budget allows."""
        self._fetcher.check_budget(self.plan)

    def cycle_cost(self) -> int:
        """Requests a full cycle costs, as far as the list lengths are known."""
        return self._fetcher.cycle_cost(self.plan)

    def next_poll(self) -> float:
        """Seconds until the next poll is due (at least a short pause)."""
        return self._fetcher.next_poll(self._monotonic())

    async def next_wake(self) -> float:
        """Seconds until the next poll or delivery retry is due (for callers that run both
        one at a time, like `watch`)."""
        pause = self.next_poll()
        try:
            due = await self._store.next_due_at()
        except StoreError:
            due = None
        if due is not None:
            pause = min(pause, (due - self._clock()).total_seconds())
        return max(0.05, pause)

    async def _poll_safely(self) -> None:
        try:
            await self.poll_once()
        except Exception:
            # A bug must not end monitoring for good: log it with its traceback and carry
            # on; state is only written in whole transactions, so nothing half-done remains.
            log.exception("cycle.crashed")

    def new_term(self) -> None:
        """Forget what memory holds: another replica may have written since, so the next
        cycle reloads it all from the store and polls every job (a term of leadership)."""
        self._last = None
        self._alerts = Alerts()
        self._troubles.new_term()
        self._schedule.force()

    async def poll_forever(
        self, *, on_cycle: Callable[[], None] | None = None, max_sleep: float | None = None
    ) -> None:
        """Poll cycle after cycle until cancelled; `on_cycle` after each, at most `max_sleep`
        seconds apart."""
        while True:
            await self._poll_safely()
            if on_cycle is not None:
                on_cycle()
            pause = self.next_poll()
            with anyio.move_on_after(min(pause, max_sleep or pause)):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def run_forever(
        self,
        stop: anyio.Event,
        *,
        grace: float = 5.0,
        on_cycle: Callable[[], None] | None = None,
        max_sleep: float | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        """Poll (while this replica leads, with `leadership`) and dispatch until `stop`;
        see `runtime.replica.run`."""
        await replica.run(
            self, stop, grace=grace, on_cycle=on_cycle, max_sleep=max_sleep, leadership=leadership
        )
