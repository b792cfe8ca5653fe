"""Fetching: what a poll cycle reads from the API, and how each call's outcome is taken.

Discovered kinds are LISTed page by page (each page recorded as it arrives); explicit jobs are
read by LIST where that costs fewer requests, else by GET, within the request budget. Every
call's failure is classified once here: it backs its target off, counts toward the cycle's
report, the metrics and the unreadable ledger, and is logged.

A discovered kind's listing takes in at most `max_new_per_cycle` jobs never seen before (the
rest wait for later cycles, said in one line per cycle) and at most the pages those and the
known jobs fill. Kinds are listed side by side with the plain GETs, so a costly or hostile
kind cannot hold the others back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import aclosing
from typing import TypeVar

import anyio
import structlog

from watcher.core import decide
from watcher.core.budget import effective_interval, requests_per_cycle
from watcher.core.errors import ApiError, ApiRejected, ApiUnavailable, PayloadError
from watcher.core.model import JobKind, JobRef, JobSnapshot, JobState, is_settled
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


class Fetcher:
    """Reads what is due from the source, for the poller.

    Args:
        source: the API.
        schedule: when each target is due; told of every success and failure.
        observer: metrics.
        unreadable: the ledger of targets that cannot be read.
        last: the last stored snapshots (to confirm jobs a LIST no longer shows).
        record: records a LIST page's snapshots as it arrives (the poller's `_record`).
        listed: the kinds listed in full before (their new jobs are news, not a baseline).
        budget: the request budget, for the GETs one cycle can afford.
        max_parallel_polls: GETs in flight at once.
    """

    def __init__(
        self,
        source: Source,
        *,
        schedule: PollSchedule,
        observer: Observer,
        unreadable: UnreadableLedger,
        last: Callable[[], Mapping[str, JobSnapshot]],
        record: Callable[[Sequence[JobSnapshot], CycleReport], Awaitable[object]],
        budget: Budget | None,
        max_parallel_polls: int = 4,
        listed: Callable[[], Collection[JobKind]] = frozenset,
    ) -> None:
        self._source = source
        self._schedule = schedule
        self._observer = observer
        self._unreadable = unreadable
        self._last = last
        # Listings and GETs of one cycle record concurrently; one at a time keeps each
        # decision over the state the previous one left.
        self._record_lock = anyio.Lock()

        async def record_one(jobs: Sequence[JobSnapshot], report: CycleReport) -> None:
            async with self._record_lock:
                await record(jobs, report)

        self._record = record_one
        self._listed = listed
        self._budget = budget
        self._poll_limiter = anyio.CapacityLimiter(max_parallel_polls)
        #: Pages a full LIST of each kind takes, learned from `totalSize`.
        self.pages: dict[JobKind, int] = {}
        self._discover: tuple[JobKind, ...] = ()
        self._polled_refs: list[JobRef] = []
        self.targets: list[str] = []
        self._explicit: dict[JobKind, dict[str, JobRef]] = {}
        self.explicit_keys: frozenset[str] = frozenset()
        self._budget_warned_at = 0
        self._max_new = 1000
        #: Kinds listed at least once since the start (their first listing is a baseline).
        self._tried: set[JobKind] = set()
        #: This cycle's kinds whose new jobs did not all fit: (recorded, left for later).
        self._deferred: dict[JobKind, tuple[int, int]] = {}

    def index(self, plan: WatchPlan) -> None:
        """Views of the plan consulted per page and per cycle, computed once per plan."""
        self._discover = plan.discover
        self._max_new = plan.max_new_per_cycle
        # Explicit jobs polled on their own; those of a discovered kind come with its LIST.
        self._polled_refs = [r for r in plan.refs if r.kind not in plan.discover]
        self.targets = [r.key for r in self._polled_refs] + [list_key(k) for k in plan.discover]
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
        wake = self._schedule.next_at(self.targets, now)
        if self._budget is not None:
            # Due polls the budget cannot pay for yet wait for it to refill.
            wake = max(wake, now + self._budget.seconds_until_available())
        return max(0.05, wake - now)

    # -- fetching --------------------------------------------------------------------------

    async def fetch(self, report: CycleReport, now: float) -> list[JobSnapshot]:
        """Poll what is due: LISTs of discovered kinds, LISTs standing in for GETs where that
        is cheaper, and the GETs the budget can pay for now, all at once; then the GETs that
        confirm jobs a listing no longer shows. Every call is classified.

        A kind's listing and the plain GETs run side by side, and the GETs are recorded as
        soon as they are in: a listing that drips, pages forever or times out delays its own
        kind only, never a healthy job of another."""
        observed: list[JobSnapshot] = []
        due = set(self._schedule.due(self.targets, now))
        plan = decide.plan_fetch([r for r in self._polled_refs if r.key in due], pages=self.pages)
        # Plain GETs are paid first: one per job, where a listing may take many pages.
        available = self._budget.available() if self._budget is not None else None
        gets = decide.within_budget(plan.gets, available)
        to_confirm: list[JobRef] = []
        self._deferred = {}

        async def get_now() -> None:
            got: list[JobSnapshot] = []
            await self._get_each(gets, got, report, now)
            report.polled += len(got)
            if got:
                await self._record(got, report)

        async def list_kind(kind: JobKind, wanted: Sequence[JobRef] | None) -> None:
            # None: a discovered kind; else the explicit jobs its listing stands in for.
            discovered = wanted is None
            to_confirm.extend(
                await self._list(kind, report, now, discovered=discovered, wanted=wanted or ())
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(get_now)
            for kind in self._discover:
                if list_key(kind) in due:
                    tg.start_soon(list_kind, kind, None)
            for kind, wanted in plan.lists:
                tg.start_soon(list_kind, kind, wanted)
        self._say_deferred()
        available = self._budget.available() if self._budget is not None else None
        await self._get_each(decide.within_budget(to_confirm, available), observed, report, now)
        report.polled += len(observed)
        return observed

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

    async def _get_each(
        self,
        refs: Sequence[JobRef],
        observed: list[JobSnapshot],
        report: CycleReport,
        now: float,
    ) -> None:
        async def poll(ref: JobRef) -> None:
            async with self._poll_limiter:
                if report.unavailable >= PROBE_CALLS and report.answered == 0:
                    return  # the API is down: leave the rest due, probe again later
                snapshot = await self._call(ref.key, self._source.get_job(ref), report, now)
            if snapshot is not None:
                observed.append(snapshot)
                self._schedule.succeeded(ref.key, now, settled=is_settled(snapshot))

        async with anyio.create_task_group() as tg:
            for ref in refs:
                tg.start_soon(poll, ref)

    async def _list(
        self,
        kind: JobKind,
        report: CycleReport,
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
                    report.polled += len(jobs)
                    # Each page is recorded and announced as it arrives: under a tight budget
                    # the last page of a big account comes long after the first.
                    await self._record(jobs, report)
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

        complete = await self._call(target, read_pages(), report, now)
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
        report.listed.append(kind)
        # A job missing from the whole list is confirmed with one GET before it is called
        # NOT_FOUND; one already known to be gone is not asked about again.
        gone = (JobState.NOT_FOUND, JobState.DELETED)
        # Set arithmetic on keys: this runs over every job of the account each cycle.
        missing = (last.keys() | explicit.keys()) - listed
        confirm = [last[key].ref for key in missing if key in last]
        confirm = [r for r in confirm if r.kind == kind and last[r.key].state not in gone]
        return confirm + [r for key, r in explicit.items() if key in missing and key not in last]

    async def _call(
        self, target: str, call: Awaitable[T], report: CycleReport, now: float
    ) -> T | None:
        """Await one API call; on failure log it, back the target off and return None."""
        report.calls += 1
        try:
            result = await call
        except ApiRejected as exc:
            report.api_errors += 1
            report.answered += 1
            report.rejected.append((target, exc.status_code, str(exc)))
            if exc.is_auth:
                report.auth_failed = True
                self._observer.api_call("auth")
                log.error("api.auth_failed", target=target, error=str(exc), status=exc.status_code)
            else:
                self._observer.api_call("rejected")
                log.warning("api.error", target=target, error=str(exc), status=exc.status_code)
                if exc.status_code != 404:  # an HTML 404 is a proxy's, not the resource's
                    self._unreadable.failed(target, str(exc))
            self._schedule.failed(target, now)
            return None
        except ApiUnavailable as exc:
            report.api_errors += 1
            report.unavailable += 1
            report.unreachable = str(exc)
            if exc.retry_after is not None:
                report.retry_after = max(report.retry_after or 0.0, exc.retry_after)
            self._observer.api_call("unavailable")
            log.warning("api.error", target=target, error=str(exc))
            self._schedule.failed(target, now, retry_after=exc.retry_after)
            return None
        except ApiError as exc:  # a malformed answer: skipped for this cycle
            report.api_errors += 1
            report.answered += 1
            self._observer.api_call("payload")
            log.warning("api.bad_answer", target=target, error=str(exc))
            self._unreadable.failed(target, str(exc))
            self._schedule.failed(target, now)
            return None
        report.answered += 1
        self._observer.api_call("ok")
        self._unreadable.succeeded(target)
        return result
