"""How one target's claimed rows are sent: the plain lane (a row at a time) and the batched
one (grouping, rate folding, quiet hours, a message's rows settled together); what every lane
does around a send: the silences in force before it, its target's pace before, its backoff
after; and how each send is settled.

`Lanes` is owned by the dispatcher, which claims the rows and runs one lane per target; it
reads the targets' backoff and pace (`backoff`, `pace`) to know what to leave unclaimed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

import anyio
import structlog

from watcher.core import grouping, messages
from watcher.core.delivery import (
    Channel,
    Delivery,
    Mark,
    MarkKind,
    OutboxEntry,
    RetryPolicy,
    SendOutcome,
    SendResult,
    pushback,
    settle,
)
from watcher.core.errors import LeaseLost, StoreError
from watcher.core.pacing import Pace, TargetBackoff
from watcher.core.people import People, scheme_of
from watcher.core.url_fields import template_key, url_values
from watcher.core.urls import short_url
from watcher.ports import Observer, Outbox, Sender
from watcher.runtime.gates import SendTimes, SilenceWatch, batched, quiet_end
from watcher.runtime.storelog import StoreErrorLog

log = structlog.get_logger("watcher")

#: A lane starts sends for this long after its claim (seconds), then gives the rest of its
#: rows back to be claimed afresh: a paced lane's last send must be settled while its claim
#: (`send_timeout` + `LEASE_MARGIN`, 30 s) still holds, or another replica could send it too.
SEND_WINDOW = 15.0


@dataclass(slots=True)
class DispatchReport:
    """What a round of dispatching did."""

    sent: int = 0
    failed: int = 0
    dead: int = 0
    store_failed: bool = False


class Step(Enum):
    """What a lane does after one of its rows."""

    NEXT = "next"  # go on with the next row
    STOP = "stop"  # the target failed (this row is settled): give the rest back
    LATER = "later"  # not sent (the claim would run out first): give it and the rest back


class Lanes:
    """Sends a target's claimed rows and settles them, keeping each target's pace and
    backoff.

    Args:
        outbox: where the rows are settled.
        sender: the notifier.
        policy: the retry schedule for failed sends (and the targets' backoff).
        channels: the channels, by whose templates and policies rows are sent.
        observer: metrics.
        clock: the wall clock.
        rand: jitter in [0, 1).
        holder: the dispatcher's name on its claims.
        silences: the silences in force.
        store_errors: where failed store writes are told.
    """

    def __init__(
        self,
        outbox: Outbox,
        sender: Sender,
        *,
        policy: RetryPolicy,
        channels: Sequence[Channel],
        observer: Observer,
        clock: Callable[[], datetime],
        rand: Callable[[], float],
        holder: str,
        silences: SilenceWatch,
        store_errors: StoreErrorLog,
        monotonic: Callable[[], float],
    ) -> None:
        self._outbox = outbox
        self.monotonic = monotonic  # the paces' seconds
        self._observer = observer
        self._clock = clock
        self._rand = rand
        self._holder = holder
        self._silences = silences
        self._store_errors = store_errors
        self._sent_at = SendTimes()
        #: Each target's backoff after a failed send, and its pace (`max_per_second`).
        self.backoff = TargetBackoff(policy)
        self.pace = Pace()
        self.sender = sender
        self._policy = policy
        self._channels: dict[str, Channel] = {}
        self._per_second: dict[str, float] = {}
        #: The targets served a batch at a time, with the channel that decides how.
        self.batched: dict[str, Channel] = {}
        self.configure(sender, policy, channels)

    def configure(self, sender: Sender, policy: RetryPolicy, channels: Sequence[Channel]) -> None:
        """Use this notifier, retry policy and these channels from now on."""
        self.sender, self._policy = sender, policy
        self.backoff.policy = policy
        self._channels = {channel.name: channel for channel in channels}
        # Each target's pace: the strictest of the channels that send to it.
        self._per_second = {}
        for channel in channels:
            for target in channel.targets:
                rate = channel.policy.max_per_second
                self._per_second[target.url_key] = min(
                    rate, self._per_second.get(target.url_key, rate)
                )
        self.batched = {
            target.url_key: channel
            for channel in reversed(channels)
            if batched(channel)
            for target in channel.targets
        }

    async def serve(self, target: str, rows: list[Delivery], report: DispatchReport) -> None:
        """Send one target's rows one after another (a batched target's as planned)."""
        if target in self.batched:
            await self._batches(target, rows, report)
        else:
            await self._plain(target, rows, report)

    # -- plain targets -------------------------------------------------------------------

    async def _plain(self, target: str, rows: list[Delivery], report: DispatchReport) -> None:
        """A plain target's rows, oldest first, at its pace, until one fails (its target backs
        off) or the claim would run out; the rows not sent are given back."""
        send_by = self._clock() + timedelta(seconds=SEND_WINDOW)
        for index, delivery in enumerate(rows):
            step = await self._deliver(delivery, report, send_by=send_by)
            if step is not Step.NEXT:
                await self._release(rows[index + (step is Step.STOP) :], report)
                return

    async def _deliver(
        self, delivery: Delivery, report: DispatchReport, *, send_by: datetime
    ) -> Step:
        entry = delivery.entry
        if await self._silenced(delivery, report):
            return Step.NEXT
        try:
            message = self.render(entry)
        except (ValueError, LookupError, TypeError, AttributeError) as exc:
            # A stored event no template can render costs only itself: it is given up.
            result = SendResult(SendOutcome.UNKNOWN_TARGET, f"cannot render: {exc!r}"[:200])
        else:
            if not await self._paced(entry.url_key, send_by):
                return Step.LATER
            result = await self.sender.send(
                entry.url_key,
                title=message.title,
                body=message.body,
                notify_type=messages.notify_type(entry.new_state),
                fields=self.url_values(entry),
            )
        now = self._clock()
        retry_at = self._after_send(entry.url_key, delivery, result, now)
        mark = settle(delivery, result, self._policy, now=now, rand=self._rand, retry_at=retry_at)
        fields = log_fields(delivery, delivery.id)
        # Shielded: a send that went out must be marked, or a restart would repeat it.
        with anyio.CancelScope(shield=True):
            marked = self._mark(delivery, mark.kind, mark.at, mark.error)
            if await self._settled(marked, fields, report):
                self._told(mark, result, [delivery], report, fields)
        return Step.NEXT if retry_at is None else Step.STOP

    def url_values(self, entry: OutboxEntry) -> dict[str, str]:
        """The values a templated URL takes for this row (`{owner}`...): its event's fields
        and the owner's entries in the channel's directory."""
        channel = self._channels.get(entry.channel)
        people = channel.people if channel is not None else People()
        return url_values(entry.event.field_map(), people, scheme_of(entry.url_display))

    def render(self, entry: OutboxEntry) -> messages.Message:
        """The text of a delivery, rendered now from its event with the channel's templates
        in force."""
        return grouping.render_entry(entry, self._channels.get(entry.channel))

    async def _mark(self, delivery: Delivery, kind: MarkKind, at: datetime, error: str) -> None:
        claim = delivery.claim
        if kind is MarkKind.DELIVERED:
            await self._outbox.mark_delivered(delivery.id, now=at, claim=claim)
        elif kind is MarkKind.DEAD:
            await self._outbox.mark_dead(delivery.id, now=at, error=error, claim=claim)
        else:
            await self._outbox.mark_retry(delivery.id, next_attempt_at=at, error=error, claim=claim)

    def _told(
        self,
        mark: Mark,
        result: SendResult,
        rows: Sequence[Delivery],
        report: DispatchReport,
        fields: dict[str, object],
    ) -> None:
        """Count and log a settled send of one message (of one row, or a batch's rows)."""
        channel = rows[0].entry.channel
        outcome = {MarkKind.DELIVERED: "sent", MarkKind.DEAD: "dead"}.get(mark.kind, "failed")
        for _ in rows:
            self._observer.notification(channel, outcome)
            if result.outcome is SendOutcome.MAYBE_DELIVERED:
                self._observer.maybe_delivered(channel)
        if mark.kind is MarkKind.DELIVERED:
            report.sent += len(rows)
            log.info("notify.sent", new_state=rows[-1].entry.new_state, **fields)
        elif mark.kind is MarkKind.DEAD:
            report.dead += len(rows)
            log.error("notify.dead", attempts=mark.attempts, error=mark.error, **fields)
        else:
            report.failed += len(rows)
            log.warning(
                "notify.failed",
                attempts=mark.attempts,
                outcome=str(result.outcome),
                error=mark.error,
                retry_at=mark.at.isoformat(timespec="seconds"),
                **fields,
            )

    # -- silences ------------------------------------------------------------------------

    async def _silenced(self, delivery: Delivery, report: DispatchReport) -> bool:
        """Whether a silence covers the delivery now; if so it is recorded as silenced."""
        now = self._clock()
        silence = await self._silences.covering(delivery.entry, now)
        if silence is None:
            return False
        fields = log_fields(delivery, delivery.id)
        with anyio.CancelScope(shield=True):
            marked = self._outbox.mark_silenced(
                delivery.id, silence_id=silence.id, now=now, claim=delivery.claim
            )
            if not await self._settled(marked, fields, report):
                return True
        self._observer.silenced(delivery.entry.channel)
        log.info("notify.silenced", silence=silence.id, **fields)
        return True

    # -- a target's pace and backoff -----------------------------------------------------

    async def _paced(self, target: str, send_by: datetime) -> bool:
        """Wait for the target's pace (`max_per_second`), and take the send's turn; False,
        without waiting, when the send would start after `send_by`. A target no channel has
        (removed by a reload) is not paced: nothing goes out to it."""
        per_second = self._per_second.get(template_key(target))
        if per_second is None:
            return True
        wait = self.pace.wait(target, self.monotonic())
        if self._clock() + timedelta(seconds=wait) > send_by:
            return False
        if wait > 0:
            await anyio.sleep(wait)
        self.pace.sent(target, self.monotonic(), per_second)
        return True

    def _after_send(
        self, target: str, lead: Delivery, result: SendResult, now: datetime
    ) -> datetime | None:
        """Account for a send's result to its target: arrived, it is no longer backed off;
        failed (a 429 or its `Retry-After` too), it is backed off, and the returned time is
        when its probe (`lead`, the row that failed) is due. None: go on."""
        if result.outcome is SendOutcome.DELIVERED:
            self.backoff.succeeded(target)
            return None
        if result.outcome is SendOutcome.UNKNOWN_TARGET:
            return None  # nothing was sent: no news of the target
        hint = pushback(result.detail)
        until = self.backoff.failed(
            target, now, attempts=lead.attempts, rand=self._rand, retry_after=hint.retry_after
        )
        log.info(
            "notify.backoff",
            channel=lead.entry.channel,
            url=short_url(lead.entry.url_display),
            failures=self.backoff.failures(target),
            rate_limited=hint.rate_limited,
            until=until.isoformat(timespec="seconds"),
        )
        return until

    async def _release(self, rows: Sequence[Delivery], report: DispatchReport) -> None:
        """Give back claimed rows this lane will not send now, to be claimed afresh."""
        if not rows:
            return
        try:
            await self._outbox.release([d.id for d in rows], claim=self._holder)
        except StoreError as exc:  # they wait out their claim instead
            report.store_failed = True
            self._store_errors.failed(exc, delivery=[d.id for d in rows])

    # -- batched targets -----------------------------------------------------------------

    async def _batches(self, target: str, rows: list[Delivery], report: DispatchReport) -> None:
        """A batched target's claimed rows: silenced ones recorded, the rest planned (per
        channel: one URL may serve two), held or sent a message at a time, at the target's
        pace; the first failed message backs the target off and gives the rest back."""
        send_by = self._clock() + timedelta(seconds=SEND_WINDOW)
        ready = [d for d in rows if not await self._silenced(d, report)]
        by_channel: dict[str, list[Delivery]] = {}
        for delivery in ready:
            by_channel.setdefault(delivery.entry.channel, []).append(delivery)
        unsent: list[Delivery] = []
        stopped = False
        for name, part in by_channel.items():
            if stopped:
                unsent += part
                continue
            channel = self._channels.get(name) or Channel(name, ())
            now = self._clock()
            plan = grouping.plan_target(
                part,
                channel,
                now=now,
                recent=self._sent_at.recent(target, now),
                quiet_until=quiet_end(channel, now),
            )
            for delivery, until, why in plan.holds:
                await self._hold(delivery, until, why, report)
            for delivery, why in plan.unrenderable:
                result = SendResult(SendOutcome.UNKNOWN_TARGET, why)
                await self._settle_batch((delivery,), delivery, result, report)
            for batch in plan.batches:
                if stopped or not await self._paced(target, send_by):
                    stopped = True
                    unsent += batch.rows
                    continue
                result = await self.sender.send(
                    target,
                    title=batch.message.title,
                    body=batch.message.body,
                    notify_type=batch.tone,
                    fields=self.url_values(batch.lead.entry),
                )
                now = self._clock()
                self._sent_at.add(target, now)
                retry_at = self._after_send(target, batch.lead, result, now)
                await self._settle_batch(batch.rows, batch.lead, result, report, retry_at)
                stopped = retry_at is not None
        await self._release(unsent, report)

    async def _hold(
        self, delivery: Delivery, until: datetime, why: str, report: DispatchReport
    ) -> None:
        fields = log_fields(delivery, delivery.id)
        held = self._outbox.hold(delivery.id, until=until, claim=delivery.claim, why=why)
        if not await self._settled(held, fields, report):
            return
        log.info("notify.held", until=until.isoformat(timespec="seconds"), why=why, **fields)

    async def _settle_batch(
        self,
        rows: Sequence[Delivery],
        lead: Delivery,
        result: SendResult,
        report: DispatchReport,
        retry_at: datetime | None = None,
    ) -> None:
        """Settle every row of one message together: all of them, or (the lease lost) none;
        a retry goes at `retry_at` when given (its target's backoff)."""
        now = self._clock()
        mark = settle(lead, result, self._policy, now=now, rand=self._rand, retry_at=retry_at)
        ids = [d.id for d in rows]
        fields = log_fields(lead, ids[0] if len(ids) == 1 else ids)
        with anyio.CancelScope(shield=True):
            marked = self._outbox.settle_many(ids, mark, claim=lead.claim or self._holder)
            if not await self._settled(marked, fields, report):
                return
        self._told(mark, result, rows, report, fields)

    async def _settled(
        self, write: Awaitable[None], fields: dict[str, object], report: DispatchReport
    ) -> bool:
        """Await one settling write; False (and logged) when the row is no longer this
        dispatcher's (another holder took it over and sends it) or the store failed."""
        try:
            await write
        except LeaseLost as exc:
            log.warning("notify.lease_lost", error=str(exc), **fields)
            return False
        except StoreError as exc:
            report.store_failed = True
            self._store_errors.failed(exc, **fields)
            return False
        return True


def log_fields(row: Delivery, delivery: object) -> dict[str, object]:
    """The log fields of a send: the delivery id (a batch's list of ids), job, channel, URL."""
    entry = row.entry
    return {
        "delivery": delivery,
        "job": entry.job_key,
        "channel": entry.channel,
        "url": short_url(entry.url_display),
    }
