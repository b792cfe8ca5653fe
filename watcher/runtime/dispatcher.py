"""The dispatcher: claims due outbox rows, sends them, settles them; never waits on polling.

Each target (channel URL) has its own lane: one send at a time, oldest first, so a slow or
hanging channel holds up only itself, and one job's messages reach a target in the order
they happened (the outbox only offers a job's oldest pending row per target). The poller
wakes the dispatcher as soon as it records rows; otherwise it sleeps until the next retry
falls due.

A lane keeps its target's pace (`max_per_second`: every message goes, in order, spaced). A
failed send backs off its whole target (`core.pacing`): the lane stops and gives its other
rows back, nothing is claimed for the target until the backoff has passed, and then the
failed row goes first, alone, as a probe; the rest follow once it arrived. A channel that is
down costs one request per backoff step, not one per pending message. The backoff is kept in
this dispatcher's memory: with several replicas, each probes on its own schedule (a replica
claims nothing for a target it has seen fail), so a down target sees one probe per replica
per step; the pace, too, is each replica's own.

Before a send, the silences in force are consulted (a covered row is recorded as silenced,
never sent). A channel with grouping, a rate limit or quiet hours is served a batch at a
time: all due rows of a target are claimed at once, `core.grouping` plans which go as one
message and which wait, and each message's rows are settled together.

The dispatcher claims and schedules; how a lane sends its rows (silences, pace, backoff,
batches) and settles them is `lanes.Lanes`, which it owns.

`dispatch_once()` sends everything due now and waits for it (the `once` command and tests);
`run()` is the daemon's task.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import anyio
import structlog

from watcher.core.delivery import Channel, Delivery, RetryPolicy
from watcher.core.errors import StoreError
from watcher.ports import NullObserver, Observer, Outbox, Sender
from watcher.runtime.gates import SilenceWatch
from watcher.runtime.lanes import DispatchReport, Lanes
from watcher.runtime.storelog import StoreErrorLog

__all__ = ["DispatchReport", "Dispatcher"]

log = structlog.get_logger("watcher")

#: The longest the dispatcher sleeps without a wake: a retry time that changed under it, or a
#: claim that expired, is picked up within this.
MAX_IDLE = 5.0
#: A claim outlives the send by this much, so only a dead holder's rows are sent again.
LEASE_MARGIN = 30.0
#: The most rows one claim takes (of every target together).
CLAIM_LIMIT = 100
#: A target whose pace asks a longer wait than this (seconds) is not claimed until then: a
#: lane waits for its pace only while its claim has time to spare (`SEND_WINDOW`).
PACE_IN_LANE = 5.0
#: Rows due but left by a claim are looked at again after this, doubling up to MAX_IDLE while
#: claims take nothing (a row freed by a quarantine in the claim itself is sent soon; rows of
#: a backed-off target cost a few claims, not a busy loop).
MIN_RECHECK = 0.1


class Dispatcher:
    """Claims what the outbox holds and runs a lane per target (`Lanes`) to send it.

    Args:
        outbox: where deliveries wait.
        sender: the notifier.
        policy: the retry schedule for failed sends.
        send_timeout: the longest one send may take; a claim lasts this plus a margin.
        observer: metrics.
        clock: the wall clock.
        rand: jitter in [0, 1).
        holder: this dispatcher's name on its claims (random by default).
        monotonic: the seconds silences are re-read on (at most once a second) and targets
            are paced on (`max_per_second`).
    """

    def __init__(
        self,
        outbox: Outbox,
        sender: Sender,
        *,
        channels: Sequence[Channel] = (),
        policy: RetryPolicy,
        send_timeout: float = 30.0,
        observer: Observer | None = None,
        clock: Callable[[], datetime],
        rand: Callable[[], float] = random.random,
        holder: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        store_errors: StoreErrorLog | None = None,
    ) -> None:
        self._outbox = outbox
        self._lease = timedelta(seconds=send_timeout + LEASE_MARGIN)
        self._observer: Observer = observer if observer is not None else NullObserver()
        self._clock = clock
        self.holder = holder or f"dispatcher-{secrets.token_hex(6)}"
        self._busy: set[str] = set()
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._store_errors = store_errors if store_errors is not None else StoreErrorLog()
        self._silences = SilenceWatch(
            outbox, monotonic=monotonic, on_error=self._store_errors.failed
        )
        self._lanes = Lanes(
            outbox,
            sender,
            policy=policy,
            channels=channels,
            observer=self._observer,
            clock=clock,
            rand=rand,
            holder=self.holder,
            monotonic=monotonic,
            silences=self._silences,
            store_errors=self._store_errors,
        )
        self._batches_here: Callable[[], bool] = lambda: True
        # The last claim: when, and whether it took all it could (more may be due).
        self._claimed_at: datetime | None = None
        self._claim_full = False
        # How long to wait before looking again at rows due but left by the last claims.
        self._recheck = MIN_RECHECK

    def reload(
        self,
        sender: Sender,
        policy: RetryPolicy,
        *,
        send_timeout: float,
        channels: Sequence[Channel],
    ) -> None:
        """Use a new notifier, retry policy and channel templates from now on (SIGHUP)."""
        self._lanes.configure(sender, policy, channels)
        self._lease = timedelta(seconds=send_timeout + LEASE_MARGIN)
        self.wake()

    def serve_batches(self, when: Callable[[], bool]) -> None:
        """Send batched channels' targets (group windows, rate limits, quiet hours) only while
        `when()` holds: with several replicas, the leader's dispatcher alone, so their windows
        and per-minute counts (kept in memory) are one sender's, exact."""
        self._batches_here = when

    def wake(self) -> None:
        """Rows were recorded: look for due ones now."""
        self._wake.set()

    @property
    def _sender(self) -> Sender:
        """The notifier in use (a test wraps it and hands the wrapper to `reload`)."""
        return self._lanes.sender

    @property
    def busy(self) -> frozenset[str]:
        """The targets with a send in flight."""
        return frozenset(self._busy)

    # -- one round, waited for -----------------------------------------------------------

    async def dispatch_once(self, report: DispatchReport | None = None) -> DispatchReport:
        """Send every delivery due now, lane by lane, until none is left; wait for them all."""
        report = report if report is not None else DispatchReport()
        await self._announce()
        while True:
            claimed = await self._claim(report)
            if not claimed:
                break
            async with anyio.create_task_group() as tg:
                for target, rows in claimed.items():
                    self._busy.add(target)
                    tg.start_soon(self._lane, target, rows, report)
        await self._report_outbox()
        return report

    # -- the daemon's task ---------------------------------------------------------------

    async def run(self, stop: anyio.Event, *, grace: float = 5.0) -> None:
        """Dispatch until `stop` is set; then let sends in flight finish for up to `grace` s.

        A send still running when the grace ends is abandoned, however long `notify_timeout`
        is: its thread is left to finish (it never holds up the exit), its row stays pending
        under a claim, and the next start releases the claim and sends it again (the one
        in-flight repeat).
        """
        report = DispatchReport()
        async with anyio.create_task_group() as lanes:
            lanes.start_soon(self._wake_on, stop)
            while not stop.is_set():
                await self._announce()
                for target, rows in (await self._claim(report)).items():
                    self._busy.add(target)
                    self._idle = anyio.Event()
                    lanes.start_soon(self._lane, target, rows, report)
                await self._report_outbox()
                await self._sleep()
            with anyio.move_on_after(grace):
                await self._idle.wait()
            if self._busy:
                log.warning("notify.abandoned", targets=len(self._busy), grace=grace)
            lanes.cancel_scope.cancel()

    async def _wake_on(self, stop: anyio.Event) -> None:
        await stop.wait()
        self.wake()

    async def _sleep(self) -> None:
        """Until woken (rows recorded, a lane done, stop), the next retry is due, a target's
        backoff or pace ends; at once after a full claim; at most MAX_IDLE."""
        pause = 0.0 if self._claim_full else await self._pause()
        with anyio.move_on_after(pause):
            await self._wake.wait()
        if self._wake.is_set():  # rows recorded or a lane done: what was left may go now
            self._recheck = MIN_RECHECK
        self._wake = anyio.Event()

    async def _pause(self) -> float:
        now = self._clock()
        pause = MAX_IDLE
        try:
            due = await self._outbox.next_due_at()
        except StoreError as exc:
            self._store_errors.failed(exc)
            due = None
        if due is not None and (self._claimed_at is None or due > self._claimed_at):
            pause = min(pause, (due - now).total_seconds())
        elif due is not None:
            # Due already at the last claim and not taken: it waits for its target (in a lane,
            # backed off, paced, another's), woken by a lane's end or the times below. Looked
            # at again only after a pause that grows, not at once: that would spin the loop.
            pause = min(pause, self._recheck)
            self._recheck = min(2 * self._recheck, MAX_IDLE)
        ends = self._lanes.backoff.ends_at(now)
        if ends is not None:
            pause = min(pause, (ends - now).total_seconds())
        tick = self._lanes.monotonic()
        pace = self._lanes.pace
        paced = pace.soonest(pace.ahead(tick, PACE_IN_LANE))
        if paced is not None:
            pause = min(pause, paced - PACE_IN_LANE - tick)
        return max(0.0, pause)

    # -- lanes ---------------------------------------------------------------------------

    async def _claim(self, report: DispatchReport) -> dict[str, list[Delivery]]:
        """Due rows by target: a row at a time for most, a target's whole batch for batched
        channels (their targets are left out of the plain claim)."""
        now = self._clock()
        # Backed-off targets, and those whose pace is far off, are left unclaimed.
        lanes = self._lanes
        waiting = lanes.backoff.waiting(now) | lanes.pace.ahead(lanes.monotonic(), PACE_IN_LANE)
        self._claimed_at, self._claim_full = now, False
        try:
            rows = await self._outbox.claim(
                now,
                holder=self.holder,
                lease=self._lease,
                busy=self._busy | lanes.batched.keys() | waiting,
                limit=CLAIM_LIMIT,
            )
            self._claim_full = len(rows) >= CLAIM_LIMIT
            if rows:
                self._recheck = MIN_RECHECK
            claimed = _by_target(rows)
            for target, channel in lanes.batched.items():
                if target in self._busy or target in waiting or not self._batches_here():
                    continue
                rows = await self._outbox.claim_target(
                    target,
                    now,
                    holder=self.holder,
                    lease=self._lease,
                    whole_target=channel.policy.group_by_account,
                )
                if rows:
                    claimed[target] = rows
        except StoreError as exc:
            report.store_failed = True
            self._store_errors.failed(exc)
            return {}
        self._store_errors.worked()
        return claimed

    async def _announce(self) -> None:
        """Queue again the open conditions whose silence has ended."""
        try:
            ended = await self._outbox.announce_after_silences(self._clock())
        except StoreError as exc:
            self._store_errors.failed(exc)
            return
        if ended:
            # The cached list may still hold it (expired by hand within the last second): the
            # rows just queued again must not be silenced by it once more.
            self._silences.stale()
        for silence, queued in ended.items():
            if queued:
                log.info("silence.ended", silence=silence, queued=queued)

    async def _lane(self, target: str, rows: list[Delivery], report: DispatchReport) -> None:
        """Send one target's rows (`Lanes.serve`), then free the target."""
        try:
            await self._lanes.serve(target, rows, report)
        finally:
            self._busy.discard(target)
            if not self._busy:
                self._idle.set()
            # A settled row may unblock the next message of its job for this target.
            self.wake()

    async def _report_outbox(self) -> None:
        try:
            self._observer.outbox(*await self._outbox.outbox_stats())
        except StoreError as exc:
            self._store_errors.failed(exc)


def _by_target(rows: list[Delivery]) -> dict[str, list[Delivery]]:
    lanes: dict[str, list[Delivery]] = {}
    for delivery in rows:
        lanes.setdefault(delivery.entry.url_key, []).append(delivery)
    return lanes
