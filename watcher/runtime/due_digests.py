"""Digests at run time: once per poll cycle, which channels' digests are due, built from the
history in the store.

The poller calls `due_digests` every cycle and writes what it returns in one transaction:
each notice as an event with its outbox rows, and `flags` (`digest:<channel>` = the period
id). A period is marked done in the same transaction that queues its digest, so each is sent
once, across restarts and SIGKILL; a cycle whose write fails leaves the mark unwritten, and
the next cycle plans the digest again.

Cheap when nothing is due: with a `DigestMemo` kept across calls the stored ids are read
once, and again only when a period has ended since (the mark of a digest just queued is read
back then, so a write that failed is noticed rather than trusted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Final, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio.to_thread
import structlog

from watcher.core import digest
from watcher.core.conditions import Condition
from watcher.core.delivery import Channel, Event
from watcher.core.model import JobSnapshot
from watcher.core.notices import Notice

log = structlog.get_logger("watcher")

#: The flags holding each channel's last digest period id: `digest:<channel>`.
FLAG_PREFIX: Final = "digest:"
#: The most transition events one digest reads (the newest, when a period has more).
MAX_EVENTS: Final = 10_000


def digest_flag(channel: str) -> str:
    """The flag key of a channel's last digest period."""
    return FLAG_PREFIX + channel


class DigestStore(Protocol):
    """What digests need of the state store (`stores.aio.AsyncStore` has it)."""

    async def flags(self, prefix: str) -> dict[str, str]:
        """Flags whose key starts with `prefix`, keyed by the rest."""
        ...

    async def digest_events(
        self, start: datetime, end: datetime, *, limit: int = MAX_EVENTS
    ) -> list[Event]:
        """Transition events observed in [start, end), newest first, at most `limit`."""
        ...


@dataclass(slots=True)
class DigestBatch:
    """What one cycle queues: the digest notices and the flags to write with them.

    Attributes:
        notices: one per channel whose digest is due and not empty (or `digest_empty`).
        flags: `digest:<channel>` = period id, for every channel whose period is done (sent,
            empty, or a first start's baseline); write them in the notices' transaction.
    """

    notices: list[Notice] = field(default_factory=list)
    flags: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class DigestMemo:
    """The channels' last period ids as last read from the store, kept across cycles."""

    last: dict[str, str] | None = None


#: Zones by name, resolved once each: reading a zone's file is I/O, done in a worker thread.
_ZONES: dict[str, tzinfo] = {"UTC": UTC}


async def time_zone(name: str) -> tzinfo:
    """The zone of an IANA name; "UTC" is `datetime.UTC`. An unknown name (the config
    checks names, so only a system without the zone's data) is UTC, said once."""
    if name not in _ZONES:
        try:
            _ZONES[name] = await anyio.to_thread.run_sync(ZoneInfo, name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            log.warning("digest.unusable", time_zone=name, error="unknown time zone; using UTC")
            _ZONES[name] = UTC
    return _ZONES[name]


def _steps(
    channels: Sequence[Channel],
    zones: Mapping[str, tzinfo],
    last: Mapping[str, str],
    now: datetime,
) -> dict[str, tuple[Channel, digest.Step]]:
    steps: dict[str, tuple[Channel, digest.Step]] = {}
    for channel in channels:
        schedule = channel.policy.digest
        if not schedule:
            continue
        tz = zones[channel.policy.digest_timezone]
        try:
            step = digest.advance(schedule, tz, now, last.get(channel.name))
        except ValueError as exc:  # validated with the config: not expected
            log.warning("digest.unusable", channel=channel.name, error=str(exc))
            continue
        if step.send is not None or step.mark is not None:
            steps[channel.name] = (channel, step)
    return steps


async def due_digests(
    store: DigestStore,
    channels: Sequence[Channel],
    *,
    now: datetime,
    last: Mapping[str, JobSnapshot],
    conditions: Sequence[Condition],
    memo: DigestMemo | None = None,
) -> DigestBatch:
    """The digests due now, as notices, and the flags that mark their periods done.

    Args:
        store: the flags and the history.
        channels: every configured channel; those without `digest` are skipped.
        now: the poller's (steady) wall time.
        last: the last snapshots by job key (the running jobs; names for conditions).
        conditions: the open conditions.
        memo: the stored ids, kept by the caller across cycles (None reads them every call).
    """
    scheduled = [channel for channel in channels if channel.policy.digest]
    if not scheduled:
        return DigestBatch()
    zones = {c.policy.digest_timezone: await time_zone(c.policy.digest_timezone) for c in scheduled}
    memo = memo if memo is not None else DigestMemo()
    if memo.last is None or _steps(scheduled, zones, memo.last, now):
        memo.last = await store.flags(FLAG_PREFIX)
    steps = _steps(scheduled, zones, memo.last, now)
    batch = DigestBatch()
    history: dict[tuple[datetime, datetime], list[Event]] = {}
    for name, (channel, step) in steps.items():
        if step.mark is not None:
            batch.flags[digest_flag(name)] = step.mark
        period = step.send
        if period is None:
            continue
        span = (period.start, period.end)
        if span not in history:
            history[span] = await store.digest_events(period.start, period.end, limit=MAX_EVENTS)
        events = history[span]
        completed, failed = digest.outcomes(events)
        message = digest.build(
            period,
            completed=completed,
            failed=failed,
            running=digest.active(last.values()),
            conditions=conditions,
            channel=channel,
            jobs=last,
            cut=len(events) >= MAX_EVENTS,
        )
        if message is None:
            log.info("digest.empty", channel=name, period=period.id)
            continue
        batch.notices.append(digest.digest_notice(name, period, message))
        log.info("digest.queued", channel=name, period=period.id, title=message.title)
    return batch
