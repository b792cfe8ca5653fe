"""`Write`: everything one poll stores in one transaction, as one frozen value (`record`'s
one argument on every backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime

from watcher.core.conditions import Condition, Since
from watcher.core.delivery import Event, OutboxEntry
from watcher.core.model import JobSnapshot

#: A reminder time to write per (channel, subject), or None to drop the reminder.
ReminderTimes = Mapping[tuple[str, str], datetime | None]


@dataclass(frozen=True, slots=True)
class Write:
    """What `record` saves, all or nothing.

    snapshots: each becomes its job's last seen state (its update and poll time `now`).
    entries: new outbox rows: pending, no attempts, due at their `not_before` or `created_at`;
        each entry's event is stored too (once, however many entries share it).
    flags: small named values kept with them (e.g. that an outage was announced).
    events: events to keep in the history even when no entry points at them.
    since: when jobs (among `snapshots`, or known) entered their state and last moved.
    polled: keys of known jobs polled now (written snapshots count as polled).
    opened: conditions to store as open; resolved: open ones to drop.
    reminders: the next reminder time per (channel, subject); None drops it.
    """

    snapshots: Sequence[JobSnapshot] = ()
    entries: Sequence[OutboxEntry] = ()
    now: datetime = field(kw_only=True)
    flags: Mapping[str, str] = field(default_factory=dict)
    events: Sequence[Event] = ()
    since: Mapping[str, Since] = field(default_factory=dict)
    polled: Sequence[str] = ()
    opened: Sequence[Condition] = ()
    resolved: Sequence[Condition] = ()
    reminders: ReminderTimes = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Nothing to write: `record` then starts no transaction."""
        return not any(getattr(self, f.name) for f in fields(self) if f.name != "now")

    @property
    def every_event(self) -> list[Event]:
        """The events to store, each once: `events`, then the entries' own, in order."""
        return list(dict.fromkeys([*self.events, *(e.event for e in self.entries if e.event)]))
