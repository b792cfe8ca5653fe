"""The dispatcher's sends beside the plain one-row-at-a-time lane: silences, batched targets
(grouping, rate folding, quiet hours), whose message's rows are settled together, and what
every lane does around a send: its target's pace before, its backoff after.

A mixin of `Dispatcher` (which provides the state declared here), kept apart by role.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING

import anyio
import structlog

from watcher.core import grouping
from watcher.core.delivery import (
    Channel,
    Delivery,
    Mark,
    MarkKind,
    RetryPolicy,
    SendOutcome,
    SendResult,
    pushback,
    settle,
)
from watcher.core.errors import LeaseLost, StoreError
from watcher.core.pacing import Pace, TargetBackoff
from watcher.core.urls import short_url
from watcher.ports import Observer, Outbox, Sender
from watcher.runtime.gates import SendTimes, SilenceWatch, quiet_end
from watcher.runtime.storelog import StoreErrorLog

if TYPE_CHECKING:
    from watcher.runtime.dispatcher import DispatchReport

log = structlog.get_logger("watcher")

#: A lane starts sends for this long after its claim (seconds), then gives the rest of its
#: rows back to be claimed afresh: a paced lane's last send must be settled while its claim
#: (`send_timeout` + `LEASE_MARGIN`, 30 s) still holds, or another replica could send it too.
SEND_WINDOW = 15.0


class Step(Enum):
    """What a lane does after one of its rows."""

    NEXT = "next"  # go on with the next row
    STOP = "stop"  # the target failed (this row is settled): give the rest back
    LATER = "later"  # not sent (the claim would run out first): give it and the rest back


class Lanes:
    """Silences, batched targets, and each target's pace and backoff, over the dispatcher's
    outbox, sender and clock."""

    _outbox: Outbox
    _sender: Sender
    _observer: Observer
    _policy: RetryPolicy
    _channels: dict[str, Channel]
    _clock: Callable[[], datetime]
    _rand: Callable[[], float]
    _silences: SilenceWatch
    _sent_at: SendTimes
    _store_errors: StoreErrorLog
    _backoff: TargetBackoff
    _pace: Pace
    _per_second: dict[str, float]
    holder: str

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
            try:
                await self._outbox.mark_silenced(
                    delivery.id, silence_id=silence.id, now=now, claim=delivery.claim
                )
            except LeaseLost as exc:
                log.warning("notify.lease_lost", error=str(exc), **fields)
                return True
            except StoreError as exc:
                report.store_failed = True
                self._store_errors.failed(exc, **fields)
                return True
        self._observer.silenced(delivery.entry.channel)
        log.info("notify.silenced", silence=silence.id, **fields)
        return True

    # -- a target's pace and backoff -----------------------------------------------------

    async def _paced(self, target: str, send_by: datetime) -> bool:
        """Wait for the target's pace (`max_per_second`), and take the send's turn; False,
        without waiting, when the send would start after `send_by`. A target no channel has
        (removed by a reload) is not paced: nothing goes out to it."""
        per_second = self._per_second.get(target)
        if per_second is None:
            return True
        wait = self._pace.wait(target, time.monotonic())
        if self._clock() + timedelta(seconds=wait) > send_by:
            return False
        if wait > 0:
            await anyio.sleep(wait)
        self._pace.sent(target, time.monotonic(), per_second)
        return True

    def _after_send(
        self, target: str, lead: Delivery, result: SendResult, now: datetime
    ) -> datetime | None:
        """Account for a send's result to its target: arrived, it is no longer backed off;
        failed (a 429 or its `Retry-After` too), it is backed off, and the returned time is
        when its probe (`lead`, the row that failed) is due. None: go on."""
        if result.outcome is SendOutcome.DELIVERED:
            self._backoff.succeeded(target)
            return None
        if result.outcome is SendOutcome.UNKNOWN_TARGET:
            return None  # nothing was sent: no news of the target
        hint = pushback(result.detail)
        until = self._backoff.failed(
            target, now, attempts=lead.attempts, rand=self._rand, retry_after=hint.retry_after
        )
        log.info(
            "notify.backoff",
            channel=lead.entry.channel,
            url=short_url(lead.entry.url_display),
            failures=self._backoff.failures(target),
            rate_limited=hint.rate_limited,
            until=until.isoformat(timespec="seconds"),
        )
        return until

    async def _release(self, rows: Sequence[Delivery], report: DispatchReport) -> None:
        """Give back claimed rows this lane will not send now, to be claimed afresh."""
        if not rows:
            return
        try:
            await self._outbox.release([d.id for d in rows], claim=self.holder)
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
                result = await self._sender.send(
                    target,
                    title=batch.message.title,
                    body=batch.message.body,
                    notify_type=batch.tone,
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
            marked = self._outbox.settle_many(ids, mark, claim=lead.claim or self.holder)
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
