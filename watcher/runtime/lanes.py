"""The dispatcher's sends beside the plain one-row-at-a-time lane: silences, and batched
targets (grouping, rate folding, quiet hours), whose message's rows are settled together.

A mixin of `Dispatcher` (which provides the state declared here), kept apart by role.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
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
    settle,
)
from watcher.core.errors import LeaseLost, StoreError
from watcher.core.urls import short_url
from watcher.ports import Observer, Outbox, Sender
from watcher.runtime.gates import SendTimes, SilenceWatch, quiet_end
from watcher.runtime.storelog import StoreErrorLog

if TYPE_CHECKING:
    from watcher.runtime.dispatcher import DispatchReport

log = structlog.get_logger("watcher")


class Lanes:
    """Silences and batched targets, over the dispatcher's outbox, sender and clock."""

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

    # -- batched targets -----------------------------------------------------------------

    async def _batches(self, target: str, rows: list[Delivery], report: DispatchReport) -> None:
        """A batched target's claimed rows: silenced ones recorded, the rest planned (per
        channel: one URL may serve two), held or sent a message at a time."""
        ready = [d for d in rows if not await self._silenced(d, report)]
        by_channel: dict[str, list[Delivery]] = {}
        for delivery in ready:
            by_channel.setdefault(delivery.entry.channel, []).append(delivery)
        for name, part in by_channel.items():
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
                result = await self._sender.send(
                    target,
                    title=batch.message.title,
                    body=batch.message.body,
                    notify_type=batch.tone,
                )
                self._sent_at.add(target, self._clock())
                await self._settle_batch(batch.rows, batch.lead, result, report)

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
    ) -> None:
        """Settle every row of one message together: all of them, or (the lease lost) none."""
        mark = settle(lead, result, self._policy, now=self._clock(), rand=self._rand)
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
