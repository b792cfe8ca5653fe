"""Fetching: each target read from the API on its own schedule, and how each call's outcome
is taken.

A target is a discovered kind's listing, the listing that stands in for several explicit jobs
of one kind, or one job's GET. `launch_due` starts every target that is due and not already
in flight, each in a task of its own: nothing waits for a cycle to end, so a listing that
drips or a GET that hangs delays only itself. At most one request per target is in flight,
and the request budget is shared.

What a target reads is handed on as `Observed` values (`take()`): the poller decides and
writes them; nothing here calls back into it. Discovered kinds are listed page by page, each
page handed on as it arrives. Every call's failure is classified once here: it backs its
target off, counts toward the current `window` (the report the poller closes as a cycle), the
metrics and the unreadable ledger, and is logged.

A discovered kind's listing takes in at most `max_new_per_cycle` jobs never seen before (the
rest wait for later listings, said in one line per cycle) and at most the pages those and the
known jobs fill.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.abc
import structlog

from watcher.core import decide
from watcher.core.budget import effective_interval, requests_per_cycle
from watcher.core.errors import ApiError, ApiRejected, ApiUnavailable, PayloadError
from watcher.core.kinds import NOT_FOUND
from watcher.core.model import JobKind, JobRef, JobSnapshot, is_settled
from watcher.core.schedule import PollSchedule
from watcher.core.unreadable import UnreadableLedger
from watcher.ports import Budget, Observer, Source
from watcher.runtime.plan import CycleReport, WatchPlan

log = structlog.get_logger("watcher")
T = TypeVar("T")

#: Calls in one cycle that may fail as unavailable, with none succeeding, before the rest of
#: the cycle is skipped: probing 10,000 jobs against a dead API helps nobody.
PROBE_CALLS = 3
#: Jobs per LIST page the API client asks for (the API's maximum).
LIST_PAGE_SIZE = 200


def list_key(kind: JobKind) -> str:
    """The schedule's target for LISTing a kind."""
    return f"list:{kind}"


@dataclass(frozen=True, slots=True)
class Observed:
    """What one answer showed: the jobs read, and the discovered kinds now listed in full."""

    jobs: tuple[JobSnapshot, ...]
    listed: tuple[JobKind, ...] = ()


class Fetcher:
    """Reads what is due from the source, for the poller.

    Args:
        source: the API.
        schedule: when each target is due; told of every success and failure.
        observer: metrics.
        unreadable: the ledger of targets that cannot be read.
        last: the last stored snapshots (to confirm jobs a LIST no longer shows).
        listed: the kinds listed in full before (their new jobs are news, not a baseline).
        budget: the request budget, for the GETs one cycle can afford.
        max_parallel_polls: GETs of one kind in flight at once.
        on_idle: called when the last request in flight has ended (a cycle may close).
    """

    def __init__(
        self,
        source: Source,
        *,
        schedule: PollSchedule,
        observer: Observer,
        unreadable: UnreadableLedger,
        last: Callable[[], Mapping[str, JobSnapshot]],
        budget: Budget | None,
        max_parallel_polls: int = 4,
        listed: Callable[[], Collection[JobKind]] = frozenset,
        on_idle: Callable[[], None] = lambda: None,
    ) -> None:
        self._source = source
        self._schedule = schedule
        self._observer = observer
        self._unreadable = unreadable
        self._last = last
        self._listed = listed
        self._on_idle = on_idle
        self._budget = budget
        # GETs in flight, bounded per kind: jobs of a kind whose GETs all hang fill their
        # kind's places only, never a healthy kind's.
        self._max_parallel_polls = max_parallel_polls
        self._poll_limiters: dict[JobKind, anyio.CapacityLimiter] = {}
        #: Pages a full LIST of each kind takes, learned from `totalSize`.
        self.pages: dict[JobKind, int] = {}
        self._discover: tuple[JobKind, ...] = ()
        self._polled_refs: list[JobRef] = []
        self.targets: list[str] = []
        self._judged = 0
        self._explicit: dict[JobKind, dict[str, JobRef]] = {}
        self.explicit_keys: frozenset[str] = frozenset()
        self._budget_warned_at = 0
        self._max_new = 1000
        #: Kinds listed at least once since the start (their first listing is a baseline).
        self._tried: set[JobKind] = set()
        #: This cycle's kinds whose new jobs did not all fit: (recorded, left for later).
        self._deferred: dict[JobKind, tuple[int, int]] = {}
        #: What the calls since the poller last closed a cycle did (`close_window`).
        self.window = CycleReport()
        #: Targets with a request in flight: never started twice at once.
        self.busy: set[str] = set()
        #: Answers read and not yet taken by the poller, in order.
        self._observed: list[Observed] = []
        self._arrived = anyio.Event()

    def index(self, plan: WatchPlan) -> None:
        """Views of the plan consulted per page and per cycle, computed once per plan."""
        self._discover = plan.discover
        self._max_new = plan.max_new_per_cycle
        # Explicit jobs polled on their own; those of a discovered kind come with its LIST.
        self._polled_refs = [r for r in plan.refs if r.kind not in plan.discover]
        self.targets = [r.key for r in self._polled_refs] + [list_key(k) for k in plan.discover]
        # The account's health (one GET a terminal interval) is no target whose absence makes
        # a cycle's failures inconclusive: a one-job watcher still judges the API by its job.
        self._judged = sum(r.kind.spec.listable for r in self._polled_refs) + len(plan.discover)
        self._explicit = {}
        for ref in plan.refs:
            self._explicit.setdefault(ref.kind, {})[ref.key] = ref
        self.explicit_keys = frozenset(r.key for r in plan.refs)

    def watches(self, target: str) -> bool:
        """Whether `target` (a job key, `list:KIND` or `list:KIND:explicit`) is still polled."""
        if target in self.explicit_keys or target.split("/")[0] in self._discover:
            return True
        if not target.startswith("list:"):
            return False
        _, kind, *explicit = target.split(":")
        return kind in self._explicit if explicit else kind in self._discover

    # -- pacing ----------------------------------------------------------------------------

    def cycle_cost(self, plan: WatchPlan) -> int:
        """Requests a full cycle costs, as far as the list lengths are known."""
        return requests_per_cycle(plan.refs, plan.discover, self.pages)

    def check_budget(self, plan: WatchPlan) -> None:
        """Say once (per change) when the budget cannot poll everything every interval."""
        if self._budget is None:
            return
        cost = self.cycle_cost(plan)
        interval = effective_interval(cost, self._budget.per_minute, plan.poll_interval)
        if interval > plan.poll_interval and cost != self._budget_warned_at:
            self._budget_warned_at = cost
            log.warning(
                "budget.short",
                requests_per_cycle=cost,
                max_requests_per_minute=self._budget.per_minute,
                poll_interval=plan.poll_interval,
                effective_interval=round(interval, 1),
            )

    def next_poll(self, now: float) -> float:
        """Seconds until the next poll is due (at least a short pause); `now` is monotonic."""
        idle = [t for t in self.targets if t not in self.busy] if self.busy else self.targets
        wake = self._schedule.next_at(idle, now)
        if self._budget is not None:
            # Due polls the budget cannot pay for yet wait for it to refill.
            wake = max(wake, now + self._budget.seconds_until_available())
        return max(0.05, wake - now)

    # -- fetching --------------------------------------------------------------------------

    def launch_due(self, tg: anyio.abc.TaskGroup, now: float) -> int:
        """Start every target due at `now` (monotonic) and not in flight, each in a task of
        its own in `tg`: discovered kinds' listings, listings standing in for GETs where that
        is cheaper, and the GETs the budget can pay for now. Returns how many started."""
        due = set(self._schedule.due(self.targets, now)) - self.busy
        if not due:
            return 0
        plan = decide.plan_fetch([r for r in self._polled_refs if r.key in due], pages=self.pages)
        # Plain GETs are paid first: one per job, where a listing may take many pages.
        gets = decide.within_budget(plan.gets, self._available())
        for ref in gets:
            self._start(tg, self._get_target(ref, now), ref.key)
        for kind in self._discover:
            if list_key(kind) in due:
                self._start(tg, self._list_target(kind, None, now), list_key(kind))
        for kind, wanted in plan.lists:
            keys = [f"{list_key(kind)}:explicit", *(r.key for r in wanted)]
            self._start(tg, self._list_target(kind, wanted, now), *keys)
        return len(gets) + len(plan.lists) + sum(list_key(k) in due for k in self._discover)

    def _available(self) -> int | None:
        """Requests the budget can pay for now (None: no budget)."""
        return self._budget.available() if self._budget is not None else None

    def _start(self, tg: anyio.abc.TaskGroup, work: Awaitable[None], *keys: str) -> None:
        """Run `work` in `tg` with `keys` marked in flight until it ends, however it ends."""
        self.busy.update(keys)

        async def run() -> None:
            try:
                await work
            except Exception:
                # A bug must not end monitoring: the target is tried again when next due.
                log.exception("cycle.crashed", target=keys[0])
            finally:
                self.busy.difference_update(keys)
                if not self.busy:
                    self._arrived.set()
                    self._on_idle()

        tg.start_soon(run)

    def take(self) -> list[Observed]:
        """The answers read since the last call, in the order they arrived."""
        taken, self._observed = self._observed, []
        return taken

    async def arrived(self, *, or_idle: bool = False) -> None:
        """Return once an answer is waiting to be taken (`or_idle`: or none is in flight)."""
        while not self._observed and not (or_idle and not self.busy):
            self._arrived = anyio.Event()
            await self._arrived.wait()

    def conclusive(self, report: CycleReport) -> bool:
        """Whether a cycle says anything of the API as a whole: one whose calls all failed as
        unavailable says it is down only when several targets failed (or every one there is):
        one collection answering 429 while the cycle held nothing else is that collection's
        trouble, and backs off that target alone."""
        if report.calls == 0 or report.unavailable < report.calls:
            return True
        return len(report.unreachable_targets) >= min(PROBE_CALLS, self._judged or 1)

    def close_window(self) -> CycleReport:
        """End the current cycle's report and start the next; says what was deferred."""
        report, self.window = self.window, CycleReport()
        self._say_deferred()
        self._deferred = {}
        return report

    def _emit(self, jobs: Sequence[JobSnapshot], listed: Sequence[JobKind] = ()) -> None:
        if jobs or listed:
            self._observed.append(Observed(tuple(jobs), tuple(listed)))
            self._arrived.set()

    async def _get_target(self, ref: JobRef, now: float) -> None:
        await self._get_each([ref], now)

    async def _list_target(
        self, kind: JobKind, wanted: Sequence[JobRef] | None, now: float
    ) -> None:
        # None: a discovered kind; else the explicit jobs its listing stands in for.
        to_confirm = await self._list(kind, now, discovered=wanted is None, wanted=wanted or ())
        if to_confirm:
            await self._get_each(decide.within_budget(to_confirm, self._available()), now)

    def _say_deferred(self) -> None:
        """One line per cycle when new jobs were left for later cycles (they are listed again)."""
        if not self._deferred:
            return
        log.warning(
            "jobs.new_deferred",
            kinds=[str(k) for k in self._deferred],
            recorded=sum(new for new, _ in self._deferred.values()),
            left_for_later=sum(left for _, left in self._deferred.values()),
            max_new_per_cycle=self._max_new,
        )

    async def _get_each(self, refs: Sequence[JobRef], now: float) -> None:
        async def poll(ref: JobRef) -> None:
            limiter = self._poll_limiters.get(ref.kind)
            if limiter is None:
                limiter = anyio.CapacityLimiter(self._max_parallel_polls)
                self._poll_limiters[ref.kind] = limiter
            async with limiter:
                window = self.window
                if window.unavailable >= PROBE_CALLS and window.answered == 0:
                    return  # the API is down: leave the rest due, probe again later
                snapshot = await self._call(ref.key, self._source.get_job(ref), now)
            if snapshot is not None:
                self.window.polled += 1
                self._emit([snapshot])
                self._schedule.succeeded(ref.key, now, settled=is_settled(snapshot))

        async with anyio.create_task_group() as tg:
            for ref in refs:
                tg.start_soon(poll, ref)

    async def _list(
        self,
        kind: JobKind,
        now: float,
        *,
        discovered: bool = False,
        wanted: Sequence[JobRef] = (),
    ) -> list[JobRef]:
        """LIST a kind, recording and announcing page by page; returns the jobs still to GET:
        vanished ones to confirm, or wanted ones the list did not hold.

        For a discovered kind every listed job is observed. For explicit jobs the LIST stands
        in for their GETs and stops early when it would cost more pages than GETs.
        """
        last = self._last()
        target = list_key(kind) if discovered else f"{list_key(kind)}:explicit"
        max_pages = None if discovered else len(wanted) - 1
        explicit = self._explicit.get(kind, {})
        listed: set[str] = set()
        # Jobs known before: the stored ones of this kind and the explicit ones (never "new").
        known = {key for key, snap in last.items() if snap.ref.kind == kind} | explicit.keys()
        first = kind not in self._listed() and kind not in self._tried
        self._tried.add(kind)
        allowance = decide.new_allowance(self._max_new, first=first)
        before = len(known)
        cap = decide.listing_page_cap(before, allowance, LIST_PAGE_SIZE)
        admitted = deferred = 0
        total: int | None = None

        async def read_pages() -> bool:
            nonlocal admitted, deferred, total
            complete = False
            number = 0
            async with aclosing(self._source.pages(kind, max_pages=max_pages)) as pages:
                async for page in pages:
                    number += 1
                    if page.total_size is not None:
                        total = page.total_size
                        self.pages[kind] = max(1, -(-page.total_size // LIST_PAGE_SIZE))
                    # A job a shifted page repeats keeps its first sighting: two answers for
                    # one job in one listing would be announced back and forth on every poll.
                    jobs = [s for s in page.jobs if s.ref.key not in listed]
                    listed.update(s.ref.key for s in jobs)
                    if not discovered:
                        jobs = [s for s in jobs if s.ref.key in explicit]
                        for snap in jobs:
                            self._schedule.succeeded(snap.ref.key, now, settled=is_settled(snap))
                    else:
                        fits = decide.admit_new(jobs, known=known, allowance=allowance - admitted)
                        jobs = list(fits.jobs)
                        admitted += fits.new
                        deferred += fits.deferred
                        known.update(s.ref.key for s in jobs)
                    self.window.polled += len(jobs)
                    # Each page is handed on as it arrives: under a tight budget the last page
                    # of a big account comes long after the first.
                    self._emit(jobs)
                    complete = page.complete
                    if deferred:
                        return False  # the rest is read next cycle, with a fresh allowance
                    if discovered and number >= cap and not page.complete:
                        msg = (
                            f"LIST {kind}: more than {cap} pages, more than {before} known and"
                            f" {allowance} new jobs fill (max_new_per_cycle); stopped paging"
                        )
                        raise PayloadError(msg)
            return complete

        complete = await self._call(target, read_pages(), now)
        if complete is None:
            # The failed LIST's backoff holds for the jobs it stood in for.
            self._schedule.follow(target, [r.key for r in wanted if r.key not in listed])
            return []
        if not discovered:
            # Missing from the list: unlisted (incomplete list) or gone; either way, GET it.
            return [r for r in wanted if r.key not in listed]
        self._schedule.succeeded(list_key(kind), now)
        if deferred:
            # Not listed in full: no job is missing yet, and the kind keeps its baseline
            # allowance until its first listing is whole. Left for later: the new jobs
            # seen, and those not read yet that are not known either (from `totalSize`).
            unread = max(0, total - len(listed | known)) if total is not None else 0
            self._deferred[kind] = (admitted, deferred + unread)
            return []
        self._emit((), listed=[kind])
        # A job missing from the whole list is confirmed with one GET before it is called
        # NOT_FOUND; one already known to be gone is not asked about again.
        gone = (NOT_FOUND, "DELETED")
        # Set arithmetic on keys: this runs over every job of the account each cycle.
        missing = (last.keys() | explicit.keys()) - listed
        confirm = [last[key].ref for key in missing if key in last]
        confirm = [r for r in confirm if r.kind == kind and last[r.key].state not in gone]
        return confirm + [r for key, r in explicit.items() if key in missing and key not in last]

    async def _call(self, target: str, call: Awaitable[T], now: float) -> T | None:
        """Await one API call; on failure log it, back the target off and return None.
        Its outcome counts toward the window current when it ends."""
        try:
            result = await call
        except ApiError as exc:
            self._failed(target, exc, now)
            return None
        report = self.window
        report.calls += 1
        report.answered += 1
        self._observer.api_call("ok")
        self._unreadable.succeeded(target)
        return result

    def _failed(self, target: str, exc: ApiError, now: float) -> None:
        """Classify a failed call once: backoff, report, metrics, unreadable ledger, log."""
        report = self.window
        report.calls += 1
        report.api_errors += 1
        if isinstance(exc, ApiUnavailable):
            report.unavailable += 1
            report.unreachable = str(exc)
            report.unreachable_targets.add(target)
            if exc.retry_after is not None:
                report.retry_after = max(report.retry_after or 0.0, exc.retry_after)
            self._observer.api_call("unavailable")
            log.warning("api.error", target=target, error=str(exc))
            self._schedule.failed(target, now, retry_after=exc.retry_after)
            return
        report.answered += 1
        self._schedule.failed(target, now)
        if isinstance(exc, ApiRejected):
            report.rejected.append((target, exc.status_code, str(exc)))
            if exc.is_auth:
                report.auth_failed = True
                self._observer.api_call("auth")
                log.error("api.auth_failed", target=target, error=str(exc), status=exc.status_code)
                return
            self._observer.api_call("rejected")
            log.warning("api.error", target=target, error=str(exc), status=exc.status_code)
            if exc.status_code != 404:  # an HTML 404 is a proxy's, not the resource's
                self._unreadable.failed(target, str(exc))
            return
        # A malformed answer: skipped until the target is due again.
        self._observer.api_call("payload")
        log.warning("api.bad_answer", target=target, error=str(exc))
        self._unreadable.failed(target, str(exc))
