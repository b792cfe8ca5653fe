"""The dispatcher: claims due outbox rows, sends them, settles them; never waits on polling.

Each target (channel URL) has its own lane: one send at a time, oldest first, so a slow or
hanging channel holds up only itself, and one job's messages reach a target in the order
they happened (the outbox only offers a job's oldest pending row per target). The poller
wakes the dispatcher as soon as it records rows; otherwise it sleeps until the next retry
falls due.

`dispatch_once()` sends everything due now and waits for it (the `once` command and tests);
`run()` is the daemon's task.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import structlog

from watcher.core import messages
from watcher.core.delivery import (
    Channel,
    Delivery,
    MarkKind,
    OutboxEntry,
    RetryPolicy,
    SendOutcome,
    SendResult,
    settle,
)
from watcher.core.errors import LeaseLost, StoreError
from watcher.ports import NullObserver, Observer, Outbox, Sender

log = structlog.get_logger("watcher")

#: The longest the dispatcher sleeps without a wake: a retry time that changed under it, or a
#: claim that expired, is picked up within this.
MAX_IDLE = 5.0
#: A claim outlives the send by this much, so only a dead holder's rows are sent again.
LEASE_MARGIN = 30.0


@dataclass(slots=True)
class DispatchReport:
    """What a round of dispatching did."""

    sent: int = 0
    failed: int = 0
    dead: int = 0
    store_failed: bool = False


class Dispatcher:
    """Sends what the outbox holds.

    Args:
        outbox: where deliveries wait.
        sender: the notifier.
        policy: the retry schedule for failed sends.
        send_timeout: the longest one send may take; a claim lasts this plus a margin.
        observer: metrics.
        clock: the wall clock.
        rand: jitter in [0, 1).
        holder: this dispatcher's name on its claims (random by default).
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
    ) -> None:
        self._outbox = outbox
        self._sender = sender
        self._channels = {channel.name: channel for channel in channels}
        self._policy = policy
        self._lease = timedelta(seconds=send_timeout + LEASE_MARGIN)
        self._observer: Observer = observer if observer is not None else NullObserver()
        self._clock = clock
        self._rand = rand
        self.holder = holder or f"dispatcher-{secrets.token_hex(6)}"
        self._busy: set[str] = set()
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._store_error = ""  # the last one logged: a store that stays broken is said once

    def reload(
        self,
        sender: Sender,
        policy: RetryPolicy,
        *,
        send_timeout: float,
        channels: Sequence[Channel],
    ) -> None:
        """Use a new notifier, retry policy and channel templates from now on (SIGHUP)."""
        self._sender, self._policy = sender, policy
        self._channels = {channel.name: channel for channel in channels}
        self._lease = timedelta(seconds=send_timeout + LEASE_MARGIN)
        self.wake()

    def wake(self) -> None:
        """Rows were recorded: look for due ones now."""
        self._wake.set()

    @property
    def busy(self) -> frozenset[str]:
        """The targets with a send in flight."""
        return frozenset(self._busy)

    # -- one round, waited for -----------------------------------------------------------

    async def dispatch_once(self, report: DispatchReport | None = None) -> DispatchReport:
        """Send every delivery due now, lane by lane, until none is left; wait for them all."""
        report = report if report is not None else DispatchReport()
        while True:
            claimed = await self._claim(report)
            if not claimed:
                break
            async with anyio.create_task_group() as tg:
                for target, rows in _by_target(claimed).items():
                    self._busy.add(target)
                    tg.start_soon(self._lane, target, rows, report)
        await self._report_outbox()
        return report

    # -- the daemon's task ---------------------------------------------------------------

    async def run(self, stop: anyio.Event, *, grace: float = 5.0) -> None:
        """Dispatch until `stop` is set; then let sends in flight finish for up to `grace` s.

        A send still running when the grace ends is abandoned: its row stays pending under a
        claim, and the next start releases the claim and sends it again.
        """
        report = DispatchReport()
        async with anyio.create_task_group() as lanes:
            lanes.start_soon(self._wake_on, stop)
            while not stop.is_set():
                for target, rows in _by_target(await self._claim(report)).items():
                    self._busy.add(target)
                    self._idle = anyio.Event()
                    lanes.start_soon(self._lane, target, rows, report)
                await self._report_outbox()
                await self._sleep()
            with anyio.move_on_after(grace):
                await self._idle.wait()
            lanes.cancel_scope.cancel()

    async def _wake_on(self, stop: anyio.Event) -> None:
        await stop.wait()
        self.wake()

    async def _sleep(self) -> None:
        """Until woken (rows recorded, a lane done, stop) or the next retry is due; at most
        MAX_IDLE."""
        pause = MAX_IDLE
        try:
            due = await self._outbox.next_due_at()
        except StoreError as exc:
            self._log_store_error(exc)
            due = None
        if due is not None:
            pause = min(pause, max(0.0, (due - self._clock()).total_seconds()))
        with anyio.move_on_after(pause):
            await self._wake.wait()
        self._wake = anyio.Event()

    # -- lanes ---------------------------------------------------------------------------

    async def _claim(self, report: DispatchReport) -> list[Delivery]:
        try:
            claimed = await self._outbox.claim(
                self._clock(), holder=self.holder, lease=self._lease, busy=self._busy
            )
        except StoreError as exc:
            report.store_failed = True
            self._log_store_error(exc)
            return []
        self._store_error = ""
        return claimed

    def _log_store_error(self, exc: StoreError) -> None:
        # Every few seconds the same line would say nothing new (a lost state file, a full
        # disk): it is logged when it changes, and again after the store has worked.
        if str(exc) != self._store_error:
            self._store_error = str(exc)
            log.error("store.error", error=str(exc))

    async def _lane(self, target: str, rows: list[Delivery], report: DispatchReport) -> None:
        """Send one target's rows one after another."""
        try:
            for delivery in rows:
                await self._deliver(delivery, report)
        finally:
            self._busy.discard(target)
            if not self._busy:
                self._idle.set()
            # A settled row may unblock the next message of its job for this target.
            self.wake()

    async def _deliver(self, delivery: Delivery, report: DispatchReport) -> None:
        entry = delivery.entry
        try:
            message = self.render(entry)
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            # A stored event no template can render costs only itself: it is given up.
            result = SendResult(SendOutcome.UNKNOWN_TARGET, f"cannot render: {exc!r}"[:200])
        else:
            result = await self._sender.send(
                entry.url_key,
                title=message.title,
                body=message.body,
                notify_type=messages.notify_type(entry.new_state),
            )
        now = self._clock()
        mark = settle(delivery, result, self._policy, now=now, rand=self._rand)
        fields = {
            "delivery": delivery.id,
            "job": entry.job_key,
            "channel": entry.channel,
            "url": entry.url_display,
        }
        # Shielded: a send that went out must be marked, or a restart would repeat it.
        with anyio.CancelScope(shield=True):
            try:
                await self._mark(delivery, mark.kind, mark.at, mark.error)
            except LeaseLost as exc:
                # Another holder took the row over (this one was presumed dead): it sends it.
                log.warning("notify.lease_lost", error=str(exc), **fields)
                return
            except StoreError as exc:
                report.store_failed = True
                log.error("store.error", error=str(exc), **fields)
                return
        if mark.kind is MarkKind.DELIVERED:
            report.sent += 1
            self._observer.notification(entry.channel, "sent")
            log.info("notify.sent", new_state=entry.new_state, **fields)
        elif mark.kind is MarkKind.DEAD:
            report.dead += 1
            self._observer.notification(entry.channel, "dead")
            log.error("notify.dead", attempts=mark.attempts, error=mark.error, **fields)
        else:
            report.failed += 1
            self._observer.notification(entry.channel, "failed")
            log.warning(
                "notify.failed",
                attempts=mark.attempts,
                outcome=str(result.outcome),
                error=mark.error,
                retry_at=mark.at.isoformat(timespec="seconds"),
                **fields,
            )

    def render(self, entry: OutboxEntry) -> messages.Message:
        """The text of a delivery, rendered now from its event with the channel's templates
        in force (a row from before events existed keeps its stored text)."""
        event = entry.event
        if event is None:
            return messages.Message(entry.title, entry.body)
        fields = event.field_map()
        if event.notice:
            return messages.Message(fields.get("title", ""), fields.get("body", ""))
        channel = self._channels.get(entry.channel)
        if channel is None:  # removed by a reload: its URLs are unknown targets anyway
            return messages.render_fields(fields)
        return messages.render_fields(fields, title=channel.title, body=channel.body)

    async def _mark(self, delivery: Delivery, kind: MarkKind, at: datetime, error: str) -> None:
        claim = delivery.claim
        if kind is MarkKind.DELIVERED:
            await self._outbox.mark_delivered(delivery.id, now=at, claim=claim)
        elif kind is MarkKind.DEAD:
            await self._outbox.mark_dead(delivery.id, now=at, error=error, claim=claim)
        else:
            await self._outbox.mark_retry(delivery.id, next_attempt_at=at, error=error, claim=claim)

    async def _report_outbox(self) -> None:
        try:
            self._observer.outbox(*await self._outbox.outbox_stats())
        except StoreError as exc:
            self._log_store_error(exc)


def _by_target(rows: list[Delivery]) -> dict[str, list[Delivery]]:
    lanes: dict[str, list[Delivery]] = {}
    for delivery in rows:
        lanes.setdefault(delivery.entry.url_key, []).append(delivery)
    return lanes
