"""The poller: fetch each resource on its own schedule, decide, write state and outbox rows
together.

One way through: the `Fetcher` reads each due target in a task of its own and hands on what
it read (`Observed`); `_record` decides over it (`Alerts.decide`: one frozen `Decision`)
and writes it in one transaction; the `Dispatcher` sends what was written, in its own
task, so polling never waits for a channel. Conditions, reminders, digests and milestones
due by time alone are a timer of their own (`_tick`, every `TICK` seconds): they fire on time
whether or not anything is polled.

`poll_once()` runs every due target once, waits for all, and closes the cycle (`once`, tests);
`run_once()` adds one dispatch round; `poll_forever()` never waits for a cycle: a slow target
delays only itself. The poller reaches the API, the store, the notifier and the metrics only
through `watcher.ports`, so tests can hand it real adapters or small fakes alike.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

import anyio
import structlog

from watcher.core.clock import SteadyClock
from watcher.core.conditions import ConditionName
from watcher.core.decide import listed_flag
from watcher.core.decision import Decision
from watcher.core.errors import StoreError
from watcher.core.model import JobKind, JobRef, JobSnapshot, Transition
from watcher.core.schedule import PollSchedule
from watcher.ports import Budget, NullObserver, Observer, Outbox, Sender, Source, StateRepo
from watcher.runtime import replica
from watcher.runtime.alert_memory import Alerts, own_troubles
from watcher.runtime.dispatcher import Dispatcher, DispatchReport
from watcher.runtime.fetcher import Fetcher, Observed, list_key
from watcher.runtime.host_clocks import StepNotice, monotonic, utcnow
from watcher.runtime.housekeeping import Housekeeping
from watcher.runtime.leadership import Leadership
from watcher.runtime.plan import CycleReport, WatchPlan
from watcher.runtime.storelog import StoreErrorLog
from watcher.runtime.troubles import Due, Troubles

log = structlog.get_logger("watcher")
T = TypeVar("T")

#: Seconds between two looks at what falls due by time alone (conditions, reminders,
#: digests): a reminder every 10 s arrives within a second of its time.
TICK = 1.0


class Store(StateRepo, Outbox, Protocol):
    """The state database: both ports in one (SQLite keeps them in one file)."""


class Poller:
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
        # The fetched answers' writes and the timer's take turns: each decision is over the
        # state the previous write left.
        self._write_lock = anyio.Lock()
        self._window_opened = self._monotonic()
        self._fetcher = Fetcher(
            source,
            schedule=self._schedule,
            observer=self._observer,
            unreadable=self._unreadable,
            last=lambda: self._last or {},
            budget=budget,
            max_parallel_polls=max_parallel_polls,
            listed=lambda: self._listed_kinds,
            on_idle=lambda: self._wake.set(),
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
            await self._store.record(Decision(now=self._clock(), resolved=gone))
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
        """Poll every due target (with `force`, every job) once, wait for all, record what
        changed and close the cycle; the dispatcher is woken for whatever that queued."""
        await self.start()
        await self._apply_reload()
        if force:
            self._schedule.force()
        async with anyio.create_task_group() as tg:
            if self._fetcher.launch_due(tg, self._monotonic()):
                tg.start_soon(self._write_until_idle)
        await self._write_observed()
        return await self._tick(close=True)

    async def _write_until_idle(self) -> None:
        """Write answers as they arrive until no request is in flight (`poll_once`)."""
        while True:
            await self._fetcher.arrived(or_idle=True)
            await self._write_observed()
            if not self._fetcher.busy:
                return

    async def _write_observed(self) -> None:
        """Decide over and write every answer read so far, in the order read."""
        async with self._write_lock:
            for batch in _batches(self._fetcher.take()):
                await self._record(batch.jobs, self._fetcher.window, listed=batch.listed)

    async def _tick(self, *, close: bool) -> CycleReport:
        """What falls due by time alone: conditions, reminders, digests, housekeeping; with
        `close`, also the end of a cycle: the API's reachability, rejected keys and unreadable
        targets are judged over the calls since the last close, and the metrics told.
        Returns the closed cycle's report (else the one still open)."""
        async with self._write_lock:
            report = self._fetcher.close_window() if close else self._fetcher.window
            api_notice = None
            if close:
                self._window_opened = self._monotonic()
                if self._fetcher.conclusive(report):
                    self._schedule.cycle_done(
                        self._window_opened,
                        calls=report.calls,
                        unavailable=report.unavailable,
                        retry_after=report.retry_after,
                    )
                self._troubles.judge_key(report, self.plan.account_id)
                api_notice = self._alerts.api_notice(
                    self._schedule.failed_cycles,
                    self.plan.api_down_after,
                    answered=report.answered > 0,
                )
            now = self._clock_steps.read(self._clock)
            await self._record(
                (), report, api_notice=api_notice, troubles=self._troubles.due(self.plan), full=True
            )
            await self._housekeeping.run(
                self._store, now, history_days=self.plan.history_days, errors=self._store_errors
            )
        if close:
            self._observer.cycle_done(report, at=self._clock())
            self._fetcher.check_budget(self.plan)
        return report

    async def _record(
        self,
        observed: Sequence[JobSnapshot],
        report: CycleReport,
        *,
        listed: Sequence[JobKind] = (),
        api_notice: tuple[str, str] | None = None,
        troubles: Due | None = None,
        full: bool = False,
    ) -> int:
        """Decide over what was read and write it, with its notifications, in one transaction.

        `troubles` are the subjects to announce as unreadable or with a rejected key, each
        with its error ("" when it is over); with the API's reachability they open and
        resolve the watcher's own conditions. Milestones join every write; conditions,
        reminders and digests the timer's (`full`).

        Returns how many outbox rows were queued.
        """
        assert self._last is not None
        now = self._clock()
        # Reads first (the timer's only): deciding and writing read nothing more.
        try:
            timed = (
                await self._alerts.timed(self._store, self.plan, self._last, now) if full else None
            )
        except StoreError as exc:
            report.store_failed = True
            self._store_errors.failed(exc)
            return 0
        decision = self._alerts.decide(
            self.plan,
            self._last,
            observed,
            now=now,
            explicit=self._fetcher.explicit_keys,
            listed_before=frozenset(self._listed_kinds),
            listed_now=listed,
            own=own_troubles(troubles or {}, api_notice),
            timed=timed,
        )
        # State and outbox in one transaction: a crash after it loses nothing, and a crash
        # before it means the next start sees the change again.
        if not decision.empty:
            try:
                await self._store.record(decision)
            except StoreError as exc:
                # Nothing was written, so the next poll sees the same changes again.
                report.store_failed = True
                self._store_errors.failed(exc)
                return 0
        self._last.update((s.ref.key, s) for s in decision.snapshots)
        self._listed_kinds.update(listed)
        report.listed.extend(listed)
        self._alerts.applied(decision, watch=self.plan)
        if api_notice is not None:
            log.warning("api.unreachable" if api_notice[0] == "down" else "api.reachable")
        if troubles:
            self._troubles.recorded(troubles)
            if troubles.get(ConditionName.UNREADABLE):
                self._observer.unreadable(self._unreadable.announced)
        self._alerts.log(decision, self._observer)
        report.transitions += decision.transitions
        for transition in decision.transitions:
            self._announce(transition)
        if decision.entries:
            self.dispatcher.wake()
        return len(decision.entries)

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

    def new_term(self) -> None:
        """Forget what memory holds: another replica may have written since, so the next
        cycle reloads it all from the store and polls every job (a term of leadership)."""
        self._last = None
        self._alerts = Alerts()
        self._troubles.new_term()
        self._fetcher.take()  # answers read under the last leader are not ours to write
        self._schedule.force()

    async def poll_forever(
        self, *, on_cycle: Callable[[], None] | None = None, max_sleep: float | None = None
    ) -> None:
        """Poll each target when it is due, write what it read as it arrives, and look at what
        falls due by time every `TICK` seconds, until cancelled. `on_cycle` is called after
        each look once a first cycle is over, at most `max_sleep` seconds apart.

        A cycle (the report metrics and API-down judgement are made of) closes once nothing
        it started is still in flight, or after a poll interval at the latest: a target that
        hangs neither holds the others back nor keeps the watcher's own alarms quiet."""
        await self.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._write_forever)
            while True:
                async with anyio.create_task_group() as fetches:
                    await self._schedule_until_reload(fetches, on_cycle, max_sleep)
                    # A reload abandons the polls in flight: their answers were asked for
                    # under the old plan, and records are whole transactions.
                    fetches.cancel_scope.cancel()
                async with self._write_lock:
                    self._fetcher.take()  # answers read for the old plan are dropped
                await self._apply_reload()

    async def _schedule_until_reload(
        self,
        fetches: anyio.abc.TaskGroup,
        on_cycle: Callable[[], None] | None,
        max_sleep: float | None,
    ) -> None:
        next_tick = self._monotonic()
        closed = False  # `on_cycle` only once a first cycle is over (systemd's READY)
        while self._pending_reload is None:
            now = self._monotonic()
            self._fetcher.launch_due(fetches, now)
            close = self._cycle_over(now)
            if close or now >= next_tick:
                next_tick = now + TICK
                await self._tick_safely(close=close)
                closed |= close
                if on_cycle is not None and closed:
                    on_cycle()
            pause = min(self.next_poll(), max(0.0, next_tick - self._monotonic()))
            with anyio.move_on_after(min(pause, max_sleep or pause)):
                await self._wake.wait()
            self._wake = anyio.Event()

    def _cycle_over(self, now: float) -> bool:
        """A cycle that made calls ends when none is in flight, or a poll interval on."""
        window = self._fetcher.window
        if window.calls == 0 and window.polled == 0:
            return False
        return not self._fetcher.busy or now - self._window_opened >= self.plan.poll_interval

    async def _tick_safely(self, *, close: bool) -> None:
        try:
            await self._tick(close=close)
        except Exception:
            # A bug must not end monitoring for good: log it with its traceback and carry
            # on; state is only written in whole transactions, so nothing half-done remains.
            log.exception("cycle.crashed")

    async def _write_forever(self) -> None:
        """Write what the fetches read as soon as it arrives (one write per batch)."""
        while True:
            await self._fetcher.arrived()
            try:
                await self._write_observed()
            except Exception:
                log.exception("cycle.crashed")

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


def _batches(observed: Sequence[Observed]) -> list[Observed]:
    """Answers merged into as few writes as keep their order: a job read twice (its second
    answer came before the first was written) starts a new batch, so each write sees one
    answer per job and the moves between them are all announced."""
    batches: list[Observed] = []
    jobs: list[JobSnapshot] = []
    listed: list[JobKind] = []
    keys: set[str] = set()
    for answer in observed:
        if any(s.ref.key in keys for s in answer.jobs):
            batches.append(Observed(tuple(jobs), tuple(listed)))
            jobs, listed, keys = [], [], set()
        jobs += answer.jobs
        listed += answer.listed
        keys.update(s.ref.key for s in answer.jobs)
    if jobs or listed:
        batches.append(Observed(tuple(jobs), tuple(listed)))
    return batches
