"""The poller's alerting memory, and the one decision over each batch of answers or tick.

`Alerts` holds what the store holds, between writes: when each job entered its state and
last moved, the open conditions, the next reminder times, and each job's state changes of
its last flap window (from the history at start). `decide()` is pure over that memory and
what was read: the diff of the answers (`core.decide.diff`), milestones, flapping, and, for
the timer, conditions, reminders and the digests due. It returns one `Decision`, which the
poller writes in one transaction, then hands back (`applied`). So a condition, a reminder or
a milestone is queued exactly when its state is stored: a crash before the write means the
next tick decides it again, a crash after it means it is in the outbox.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain
from typing import Final

import structlog

from watcher.core import conditions as cond
from watcher.core import decide as diffs
from watcher.core import notices, progress, reminders
from watcher.core.conditions import API_SUBJECT, Condition, ConditionName, Since, StateChange
from watcher.core.decide import Diff, fold, notice_rows
from watcher.core.decision import Decision
from watcher.core.delivery import Channel
from watcher.core.errors import StoreError
from watcher.core.kinds import JobKind
from watcher.core.model import JobSnapshot
from watcher.core.rules import Subject
from watcher.core.silences import Silence, silencing
from watcher.ports import Observer, StateRepo
from watcher.runtime.due_digests import DigestBatch, DigestMemo, due_digests
from watcher.runtime.plan import WatchPlan

log = structlog.get_logger("watcher")

#: A job's `polled_at` is rewritten at most this often while nothing else about it changes.
POLLED_EVERY: Final = timedelta(seconds=60)
_JOB_CONDITIONS: Final = frozenset(
    {
        ConditionName.STALLED,
        ConditionName.PENDING,
        ConditionName.MAX_RUNTIME,
        ConditionName.FLAPPING,
    }
)
_FLAPPING: Final = ConditionName.FLAPPING

ConditionKey = tuple[str, ConditionName]


@dataclass(frozen=True, slots=True)
class OwnTrouble:
    """The watcher's own conditions to open (`detail` set) or resolve (`detail` None)."""

    subject: str
    name: ConditionName
    detail: str | None


@dataclass(frozen=True, slots=True)
class Timed:
    """What the timer's decision reads from the store first: silences, and digests due."""

    silences: tuple[Silence, ...] = ()
    digests: DigestBatch = field(default_factory=DigestBatch)


@dataclass(frozen=True, slots=True)
class _AlertPlan:
    """What alerting adds to a decision: notices to queue and alert state to store."""

    notices: tuple[notices.Notice, ...] = ()
    since: Mapping[str, Since] = field(default_factory=dict)
    polled: tuple[str, ...] = ()
    opened: tuple[Condition, ...] = ()
    resolved: tuple[Condition, ...] = ()
    reminders: Mapping[tuple[str, str], datetime | None] = field(default_factory=dict)
    full: bool = True  # conditions and reminders were looked at
    #: Jobs flapping after this write: their transitions are folded (`decide.fold`).
    folded: frozenset[str] = frozenset()
    #: Each changed job's state changes of its flap window, as they stand after this write.
    changes: Mapping[str, tuple[StateChange, ...]] = field(default_factory=dict)


class Alerts:
    """The alert state kept between cycles (loaded once from the store)."""

    def __init__(self) -> None:
        self.since: dict[str, Since] = {}
        self.open: dict[ConditionKey, Condition] = {}
        self.reminders: dict[tuple[str, str], datetime] = {}
        self.changes: dict[str, tuple[StateChange, ...]] = {}
        self._polled: dict[str, datetime] = {}
        self._digests = DigestMemo()
        # Incremental evaluation: the plan last evaluated under, jobs changed since, and when
        # each job could next open a condition (see `plan`).
        self._plan: WatchPlan | None = None
        self._dirty: set[str] = set()
        self._deadlines: dict[str, datetime] = {}
        self._next_deadlines: dict[str, datetime | None] = {}

    def load(
        self,
        since: Mapping[str, Since],
        open_conditions: Sequence[Condition],
        reminder_times: Mapping[tuple[str, str], datetime],
    ) -> None:
        """Take the stored state (at start)."""
        self.since = dict(since)
        self.open = {c.key: c for c in open_conditions}
        self.reminders = dict(reminder_times)

    async def recall(
        self, store: StateRepo, plan: WatchPlan, last: Mapping[str, JobSnapshot], now: datetime
    ) -> None:
        """Take each job's state changes of its last flap window from the history (at start,
        and on a new term), so a restart or a fail-over neither resets the count of a job
        about to flap nor forgets one that flaps."""
        limits = chain(plan.job_thresholds.values(), plan.kind_thresholds.values())
        window = max(
            (t.flap_window for t in (cond.Thresholds(), *limits) if t.flap_threshold), default=0.0
        )
        if not window:
            return
        start = now - timedelta(seconds=window)
        found: dict[str, list[StateChange]] = {}
        for event in await store.digest_events(start, now + timedelta(seconds=1)):
            if event.old_state and event.old_state != event.new_state:
                change = StateChange(event.observed_at, event.old_state, event.new_state)
                found.setdefault(event.job_key, []).append(change)
        for key, changes in found.items():
            if (job := last.get(key)) is not None:
                kept = cond.recent_changes(changes, plan.thresholds(job.ref), now)
                if kept:
                    self.changes[key] = kept

    def started(self, last: Mapping[str, JobSnapshot], observer: Observer) -> None:
        """Tell the observer what the store says at start: open conditions, job states."""
        observer.conditions(self.counts())
        observer.job_states({k: (str(s.ref.kind), s.ref.job_id, s.state) for k, s in last.items()})

    def announced(self, name: ConditionName) -> dict[str, str]:
        """Open conditions of one name: subject -> detail."""
        return {c.subject: c.detail for c in self.open.values() if c.name is name}

    def api_notice(self, failed: int, after: int, *, answered: bool) -> tuple[str, str] | None:
        """("down" | "up", text) when channels must hear about the API's reachability:
        `failed` consecutive cycles without an answer reached `after`, or it answers again."""
        down = (API_SUBJECT, ConditionName.API_DOWN) in self.open
        if not down and failed >= after:
            return ("down", f"no answer in {failed} consecutive poll cycles")
        if down and answered:
            return ("up", "answering again")
        return None

    def counts(self) -> dict[str, int]:
        """Open conditions by name, every name included."""
        found = Counter(str(c.name) for c in self.open.values())
        return {str(name): found.get(str(name), 0) for name in ConditionName}

    def decide(
        self,
        plan: WatchPlan,
        last: Mapping[str, JobSnapshot],
        observed: Sequence[JobSnapshot],
        *,
        now: datetime,
        explicit: frozenset[str] = frozenset(),
        listed_before: frozenset[JobKind] = frozenset(),
        listed_now: Sequence[JobKind] = (),
        own: Sequence[OwnTrouble] = (),
        timed: Timed | None = None,
    ) -> Decision:
        """The one decision over what one target read (`observed`), or the timer's (`timed`:
        what it read from the store first), for the poller to write in one transaction.

        Pure over the memory: nothing changes until the poller hands it back (`applied`).
        """
        found = diffs.diff(
            last,
            observed,
            channels=plan.channels,
            now=now,
            explicit=explicit,
            listed_before=listed_before,
            listed_now=listed_now,
            since=self.since,
        )
        alert = self._alerts_of(
            plan,
            last,
            found,
            observed=observed,
            now=now,
            own=own,
            silences=timed.silences if timed else (),
            full=timed is not None,
        )
        found = fold(found, alert.folded)
        queued = (*alert.notices, *(timed.digests.notices if timed else ()))
        events, entries = notice_rows(plan.channels, queued, now=now)
        return Decision(
            found.snapshots,
            (*found.entries, *entries),
            now=now,
            flags={**found.flags, **(timed.digests.flags if timed else {})},
            events=(*found.events, *events),
            since=alert.since,
            polled=alert.polled,
            opened=alert.opened,
            resolved=alert.resolved,
            reminders=alert.reminders,
            transitions=found.transitions,
            notices=queued,
            changes=alert.changes,
            timed=alert.full,
        )

    def _alerts_of(
        self,
        plan: WatchPlan,
        last: Mapping[str, JobSnapshot],
        decision: Diff,
        *,
        observed: Sequence[JobSnapshot],
        now: datetime,
        own: Sequence[OwnTrouble] = (),
        silences: Sequence[Silence] = (),
        full: bool = True,
    ) -> _AlertPlan:
        """Everything alerting adds to this decision (pure over the memory).

        Milestones, times and poll stamps come with every write; conditions and reminders
        with the cycle's last one (`full`), which looks again only at the jobs that changed
        since, or whose next deadline (`conditions.deadline`) has passed: a cycle over
        10,000 quiet jobs does not evaluate 10,000 jobs.
        """
        changed = {s.ref.key: s for s in decision.snapshots}

        def job_of(key: str) -> JobSnapshot | None:
            return changed.get(key) or last.get(key)

        since = dict(decision.since)
        queued: list[notices.Notice] = []
        for key, stored in changed.items():
            queued += progress.milestones(last.get(key), stored, since[key], plan.channels, now=now)
        changes, opened, resolved, quiet = self._flaps(
            plan, decision, job_of, since, now, full=full
        )
        reminder_times: dict[tuple[str, str], datetime | None] = {}
        folded = frozenset(
            {c.subject for c in self.open.values() if c.name is _FLAPPING}
            - {c.subject for c in resolved}
            | {c.subject for c in opened}
        )
        if full:
            if self._plan is not plan:  # started, or reloaded: thresholds may have changed
                self._dirty = set(last) | set(changed)
            # Jobs stored before times were kept count from now, as at first sight.
            missing = [k for k in self._dirty if k not in self.since and k not in since]
            since |= {k: Since(now, now) for k in missing}
            found = self._evaluate(plan, job_of, since, now)
            opened += found.opened
            resolved += found.resolved
            for trouble in own:
                own_key = (trouble.subject, trouble.name)
                if trouble.detail is not None and own_key not in self.open:
                    opened.append(Condition(trouble.subject, trouble.name, now, trouble.detail))
                elif trouble.detail is None and own_key in self.open:
                    resolved.append(self.open[own_key])
        queued += [
            notices.condition_notice(c, job_of(c.subject), api_label=plan.api_label) for c in opened
        ]
        # A job no longer watched resolves its conditions silently: it is no longer news.
        queued += [
            notices.condition_notice(
                c, job_of(c.subject), resolved_at=now, api_label=plan.api_label
            )
            for c in resolved
            if (c.name not in _JOB_CONDITIONS or job_of(c.subject) is not None)
            and c.key not in quiet
        ]
        # Reminders look at every job: only when a channel has them (or stored times remain).
        if full and (self.reminders or any(c.policy.repeat_interval for c in plan.channels)):
            still_open = {c.key: c for c in self.open.values()}
            for c in resolved:
                still_open.pop(c.key, None)
            still_open |= {c.key: c for c in opened}
            reminder_plan = reminders.plan_reminders(
                reminders.remindables(
                    dict(last) | changed, self.since | since, still_open.values()
                ),
                plan.channels,
                self.reminders,
                now=now,
                silenced=lambda channel, item: _silenced(silences, channel, item, now),
            )
            queued += reminder_plan.notices
            reminder_times = reminder_plan.times
        stale = now - POLLED_EVERY
        polled = tuple(
            key
            for s in observed
            if (key := s.ref.key) not in changed
            and key in last
            and ((at := self._polled.get(key)) is None or at <= stale)
        )
        return _AlertPlan(
            tuple(queued),
            since,
            polled,
            tuple(opened),
            tuple(resolved),
            reminder_times,
            full,
            folded,
            changes,
        )

    def _flaps(
        self,
        plan: WatchPlan,
        decision: Diff,
        job_of: Callable[[str], JobSnapshot | None],
        since: Mapping[str, Since],
        now: datetime,
        *,
        full: bool,
    ) -> tuple[
        dict[str, tuple[StateChange, ...]], list[Condition], list[Condition], set[ConditionKey]
    ]:
        """The flapping conditions of one write: each moved job's changes of its window, the
        conditions they open (with every write: the change that opens one is folded into
        its message) and, with the cycle's last write, those that resolve because their job
        stayed in one state for its window; and which resolve silently (the job no longer
        watched, or flapping switched off)."""
        changes: dict[str, tuple[StateChange, ...]] = {}
        for transition in decision.transitions:
            change = cond.state_change(transition)
            if change is None:
                continue
            key = transition.ref.key
            earlier = changes.get(key, self.changes.get(key, ()))
            limit = plan.thresholds(transition.ref)
            changes[key] = cond.recent_changes([*earlier, change], limit, now)
        opened: list[Condition] = []
        for key, kept in changes.items():
            job = job_of(key)
            if job is None or (key, _FLAPPING) in self.open:
                continue
            detail = cond.flapping(kept, plan.thresholds(job.ref), now)
            if detail is not None:
                opened.append(Condition(key, _FLAPPING, now, detail))
        resolved: list[Condition] = []
        quiet: set[ConditionKey] = set()
        flapping = [c for c in self.open.values() if c.name is _FLAPPING] if full else []
        for c in flapping:
            job = job_of(c.subject)
            if job is None:  # no longer watched: resolved silently, like any job condition
                resolved.append(c)
                continue
            times = since.get(c.subject) or self.since.get(c.subject)
            limit = plan.thresholds(job.ref)
            if times is not None and not cond.still_flapping(times, limit, now):
                resolved.append(c)
                if not limit.flap_threshold:  # switched off: no "stable again" to tell
                    quiet.add(c.key)
        return changes, opened, resolved, quiet

    def _evaluate(
        self,
        plan: WatchPlan,
        job_of: Callable[[str], JobSnapshot | None],
        since: Mapping[str, Since],
        now: datetime,
    ) -> cond.ConditionChanges:
        """Conditions of the jobs that may have new ones: changed since the last look, or
        past their deadline; open ones of jobs no longer known resolve."""
        due = {k for k, at in self._deadlines.items() if at <= now}
        looked: list[tuple[JobSnapshot, Since, cond.Thresholds]] = []
        self._next_deadlines = {}
        for key in self._dirty | due:
            job = job_of(key)
            times = since.get(key) or self.since.get(key)
            if job is None or times is None:
                continue
            limit = plan.thresholds(job.ref)
            looked.append((job, times, limit))
            self._next_deadlines[key] = cond.deadline(job, times, limit, now)
        subjects = {job.ref.key for job, _, _ in looked}
        open_now = {
            k: c
            for k, c in self.open.items()
            if c.name in _JOB_CONDITIONS and (c.subject in subjects or job_of(c.subject) is None)
        }
        return cond.evaluate(looked, open_now, now=now)

    def applied(self, decision: Decision, *, watch: WatchPlan) -> None:
        """The decision was written: remember it."""
        now = decision.now
        self.since.update(decision.since)
        if decision.timed:
            self._plan = watch
            self._dirty = set()
            for job_key, due_at in self._next_deadlines.items():
                if due_at is None:
                    self._deadlines.pop(job_key, None)
                else:
                    self._deadlines[job_key] = due_at
        self._dirty.update(s.ref.key for s in decision.snapshots)
        for job_key, kept in decision.changes.items():
            if kept:
                self.changes[job_key] = kept
            else:
                self.changes.pop(job_key, None)
        for c in decision.resolved:
            self.open.pop(c.key, None)
        self.open.update((c.key, c) for c in decision.opened)
        for key, at in decision.reminders.items():
            if at is None:
                self.reminders.pop(key, None)
            else:
                self.reminders[key] = at
        self._polled.update((key, now) for key in decision.polled)
        self._polled.update((s.ref.key, now) for s in decision.snapshots)

    async def timed(
        self, store: StateRepo, plan: WatchPlan, last: Mapping[str, JobSnapshot], now: datetime
    ) -> Timed:
        """Read what the timer's decision needs from the store, before deciding: the silences
        in force (reminders skip silenced jobs) and the digests due now."""
        digests = await due_digests(
            store,
            plan.channels,
            now=now,
            last=last,
            conditions=list(self.open.values()),
            memo=self._digests,
        )
        return Timed(tuple(await self.silences(store, plan, now)), digests)

    async def silences(self, store: StateRepo, plan: WatchPlan, now: datetime) -> list[Silence]:
        """The silences in force, when a channel has reminders (which skip silenced jobs)."""
        if not any(c.policy.repeat_interval for c in plan.channels):
            return []
        try:
            return await store.silences(now)
        except StoreError as exc:
            log.error("store.error", error=str(exc))
            return []

    def log(self, decision: Decision, observer: Observer) -> None:
        """Say what a written decision opened, resolved and queued (the shell logs, not the core),
        and tell the observer the jobs' states."""
        if decision.snapshots:
            observer.job_states(
                {s.ref.key: (str(s.ref.kind), s.ref.job_id, s.state) for s in decision.snapshots}
            )
        for c in decision.opened:
            if c.name in _JOB_CONDITIONS:
                log.warning(
                    "condition.opened", job=c.subject, condition=str(c.name), detail=c.detail
                )
        for c in decision.resolved:
            if c.name in _JOB_CONDITIONS:
                log.info("condition.resolved", job=c.subject, condition=str(c.name))
        for notice in decision.notices:
            if notice.kind in (notices.REMINDER, notices.MILESTONE):
                event = "reminder.queued" if notice.kind == notices.REMINDER else "milestone.queued"
                log.info(event, job=notice.job_key, title=notice.message.title)
        if decision.opened or decision.resolved:
            observer.conditions(self.counts())

    def forget(self, keys: Sequence[str], observer: Observer) -> None:
        """Jobs no longer watched (a reload): their times go (conditions resolve silently)."""
        observer.job_states(dict.fromkeys(keys, ("", "", "")))
        for key in keys:
            self.since.pop(key, None)
            self.changes.pop(key, None)
            self._polled.pop(key, None)
            self._deadlines.pop(key, None)


def own_troubles(
    ledgers: Mapping[ConditionName, Mapping[str, str]], api_notice: tuple[str, str] | None
) -> list[OwnTrouble]:
    """The watcher's own conditions from the poller's bookkeeping: per condition name, the
    subjects its ledger announces now (the error; "" when it is over: readable again, the key
    accepted again), and the API's reachability ("down"/"up")."""
    own = [
        OwnTrouble(subject, name, error or None)
        for name, due in ledgers.items()
        for subject, error in due.items()
    ]
    if api_notice is not None:
        detail = api_notice[1] if api_notice[0] == "down" else None
        own.append(OwnTrouble(API_SUBJECT, ConditionName.API_DOWN, detail))
    return own


def _silenced(
    silences: Sequence[Silence], channel: Channel, item: reminders.Remindable, now: datetime
) -> bool:
    if not silences:
        return False
    fields = dict(notices.subject_fields(item.job, item.job_key))
    return silencing(silences, Subject.of_fields(fields, channel=channel.name), now) is not None
