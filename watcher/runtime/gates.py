"""What the dispatcher consults before a send: the silences in force (read live from the
store), a channel's quiet-hours zone, and each target's recent sends (for `max_per_minute`).
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from watcher.core.delivery import Channel, OutboxEntry
from watcher.core.errors import StoreError
from watcher.core.grouping import MINUTE
from watcher.core.quiet import quiet_until
from watcher.core.rules import Subject
from watcher.core.silences import Silence, silencing
from watcher.ports import Outbox

#: Silences are re-read this often at most (seconds): `silence add` in another process takes
#: effect in a running daemon within it, without a reload.
SILENCE_REFRESH = 1.0


class SilenceWatch:
    """The silences in force, re-read from the store at most every `every` seconds.

    A store that cannot be read keeps the last list (told to `on_error`): messages go out
    rather than wait on a broken read.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        every: float = SILENCE_REFRESH,
        on_error: Callable[[StoreError], None] = lambda _: None,
    ) -> None:
        self._outbox = outbox
        self._monotonic = monotonic
        self._every = every
        self._on_error = on_error
        self._active: list[Silence] = []
        self._read_at: float | None = None

    async def covering(self, entry: OutboxEntry, now: datetime) -> Silence | None:
        """The silence covering a delivery now, or None."""
        await self._refresh(now)
        subject = Subject.of_fields(entry.event.field_map(), channel=entry.channel)
        return silencing(self._active, subject, now)

    def stale(self) -> None:
        """Read the store again before the next match (a silence was seen to end)."""
        self._read_at = None

    async def _refresh(self, now: datetime) -> None:
        tick = self._monotonic()
        if self._read_at is not None and tick - self._read_at < self._every:
            return
        self._read_at = tick
        try:
            self._active = await self._outbox.silences(now)
        except StoreError as exc:
            self._on_error(exc)


@functools.lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The tzinfo of an IANA zone name; UTC for "UTC" and for a name this host does not know
    (the config checked it where it was loaded)."""
    if name in ("", "UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def quiet_end(channel: Channel, now: datetime) -> datetime | None:
    """When the channel's quiet hours around `now` end, or None outside them (or without)."""
    policy = channel.policy
    if policy.quiet_hours is None:
        return None
    return quiet_until(policy.quiet_hours, zone(policy.digest_timezone), now)


class SendTimes:
    """When each target was last sent messages, in the last minute: kept in memory only, so a
    restart forgets them (at most one extra minute's allowance)."""

    def __init__(self) -> None:
        self._times: dict[str, deque[datetime]] = {}

    def recent(self, target: str, now: datetime) -> list[datetime]:
        """The target's sends within the minute before `now`."""
        times = self._times.get(target)
        if times is None:
            return []
        while times and now - times[0] >= MINUTE:
            times.popleft()
        return list(times)

    def add(self, target: str, at: datetime) -> None:
        """A message was sent to `target` at `at`."""
        self._times.setdefault(target, deque()).append(at)


def batched(channel: Channel) -> bool:
    """Whether a channel's targets are sent to a batch at a time (claimed whole, planned by
    `core.grouping`), rather than a row at a time."""
    policy = channel.policy
    return bool(
        policy.group_wait > 0
        or policy.group_by_account
        or policy.max_per_minute > 0
        or policy.quiet_hours is not None
    )
