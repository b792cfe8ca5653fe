"""`Decision`: everything one poll or one tick decided, as one frozen value.

The poller builds it once (`Alerts.decide`: the diff of what the API answered, then
conditions, reminders, milestones, flapping and digests), the store writes it in one
transaction (`record`, on every backend), and the poller then remembers it, logs it and
announces its transitions. Nothing after `decide` decides anything again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from watcher.core.conditions import Condition, Since, StateChange
from watcher.core.delivery import Event, OutboxEntry
from watcher.core.model import JobSnapshot, Transition
from watcher.core.notices import Notice

#: A reminder time to write per (channel, subject), or None to drop the reminder.
ReminderTimes = Mapping[tuple[str, str], datetime | None]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to store, all or nothing, and what it announces.

    Stored by `record`:
        snapshots: each becomes its job's last seen state (its update and poll time `now`).
        entries: new outbox rows: pending, no attempts, due at their `not_before` or
            `created_at`; each entry's event is stored too (once, however many share it).
        flags: small named values kept with them (e.g. that a kind was listed in full).
        events: events to keep in the history even when no entry points at them.
        since: when jobs (among `snapshots`, or known) entered their state and last moved.
        polled: keys of known jobs polled now (written snapshots count as polled).
        opened: conditions to store as open; resolved: open ones to drop.
        reminders: the next reminder time per (channel, subject); None drops it.

    Not stored, for whoever acts on the decision once it is written:
        transitions: the moves seen (logged, counted, announced).
        notices: conditions, reminders, milestones and digests queued (logged).
        changes: each moved job's state changes of its flap window, after this decision.
        timed: conditions and reminders were looked at (the timer's decision).
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
    transitions: Sequence[Transition] = field(default=(), kw_only=True)
    notices: Sequence[Notice] = field(default=(), kw_only=True)
    changes: Mapping[str, tuple[StateChange, ...]] = field(default_factory=dict, kw_only=True)
    timed: bool = field(default=False, kw_only=True)

    @property
    def empty(self) -> bool:
        """Nothing to store: `record` then starts no transaction."""
        return not (
            self.snapshots
            or self.entries
            or self.flags
            or self.events
            or self.since
            or self.polled
            or self.opened
            or self.resolved
            or self.reminders
        )

    @property
    def every_event(self) -> list[Event]:
        """The events to store, each once: `events`, then the entries' own, in order."""
        return list(dict.fromkeys([*self.events, *(e.event for e in self.entries)]))
