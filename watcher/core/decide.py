"""What one poll's answers mean: the pure decision the poller then writes in one transaction.

`diff(last, observed, ...)` takes the last stored snapshots and what the API answered, and
returns the snapshots to store, the transitions, the outbox rows for every channel URL that
wants them, and the flags to set: frozen values, no clock, no I/O, no logging. It is the first
step of the poller's one `Decision` (`Alerts.decide` adds conditions, reminders and digests). `plan_fetch`
decides how a cycle reads its due resources (GET each, or LIST) within the request budget;
`admit_new` how many jobs the API has never shown before one cycle takes in.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final

from watcher.core import messages, owners, rules, transitions
from watcher.core.conditions import Since, folds, next_since
from watcher.core.delivery import Channel, Event, OutboxEntry
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef, JobSnapshot, Transition
from watcher.core.notices import Notice, notice_entries
from watcher.core.url_fields import channel_rows

#: The event field that marks a transition recorded in the history but sent to no channel,
#: with why ("flapping": its job is flapping, see `conditions.flapping`).
FOLDED_FIELD: Final = "folded"
FLAPPING: Final = "flapping"


def listed_flag(kind: JobKind) -> str:
    """The store flag saying a kind was listed in full before (so later jobs are new)."""
    return f"listed:{kind}"


@dataclass(frozen=True, slots=True)
class Diff:
    """What the answers changed: the snapshots to store, their moves and what they announce."""

    snapshots: tuple[JobSnapshot, ...] = ()
    transitions: tuple[Transition, ...] = ()
    entries: tuple[OutboxEntry, ...] = ()
    flags: Mapping[str, str] = field(default_factory=dict)
    #: Every transition (heard by a channel or not) and notice, for the history.
    events: tuple[Event, ...] = ()
    #: When each written snapshot's job entered its state and last moved.
    since: Mapping[str, Since] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Nothing to write: the store is left alone (an idle cycle writes nothing)."""
        return not (self.snapshots or self.entries or self.flags or self.events)


def diff(
    last: Mapping[str, JobSnapshot],
    observed: Iterable[JobSnapshot],
    *,
    channels: Sequence[Channel],
    now: datetime,
    explicit: frozenset[str] = frozenset(),
    listed_before: frozenset[JobKind] = frozenset(),
    listed_now: Iterable[JobKind] = (),
    notices: Iterable[Notice] = (),
    since: Mapping[str, Since] | None = None,
) -> Diff:
    """Diff what the API answered against the last stored state.

    Args:
        last: the stored snapshot of every known resource, by `JobRef.key`.
        observed: this poll's snapshots.
        channels: who hears what.
        now: when this was observed.
        explicit: keys of resources named in the config (never "new" jobs).
        listed_before: discovered kinds listed in full before: an unknown resource of one
            was created since, which `notify_new` channels hear about.
        listed_now: discovered kinds this cycle listed in full for the first time.
        notices: other messages to queue (conditions, reminders...), rendered already.
        since: when each known resource entered its state and last moved.
    """
    since = since or {}
    times: dict[str, Since] = {}
    changed: dict[str, JobSnapshot] = {}
    moved: list[Transition] = []
    entries: list[OutboxEntry] = []
    events: list[Event] = []
    observed = tuple(observed)
    answered = {s.ref.key: s for s in observed}

    def known(key: str) -> JobSnapshot | None:
        # Stored snapshots first: they hold the owner first seen (`core.owners`).
        return last.get(key) or answered.get(key)

    for answer in observed:
        previous = last.get(answer.ref.key)
        snapshot = owners.owned(previous, answer, known)
        stored = transitions.merge(previous, snapshot)
        if stored == previous:
            continue
        changed[stored.ref.key] = stored
        times[stored.ref.key] = next_since(previous, since.get(stored.ref.key), stored, now)
        new_job = snapshot.ref.kind in listed_before and snapshot.ref.key not in explicit
        transition = transitions.diff(previous, snapshot, at=now, new_job=new_job)
        if transition is None:
            continue
        moved.append(transition)
        event = transition_event(transition)
        # The history holds moves and jobs created since; not the baseline of what existed.
        if transition.old is not None or transition.new_job:
            events.append(event)
        entries += held(channels, outbox_entries(channels, transition, event))
    flags = {listed_flag(kind): "1" for kind in listed_now if kind not in listed_before}
    notice_events, notice_entries_ = notice_rows(channels, notices, now=now)
    return Diff(
        tuple(changed.values()),
        tuple(moved),
        (*entries, *notice_entries_),
        flags,
        (*events, *notice_events),
        times,
    )


def fold(decision: Diff, keys: Collection[str]) -> Diff:
    """The decision with the transitions of flapping jobs (`keys`) folded: still stored and
    kept in the history, marked `folded`, but sent to no channel. Outcomes and tombstones
    are never folded (`conditions.folds`)."""
    folded = {
        transition_event(t)
        for t in decision.transitions
        if t.ref.key in keys and t.old is not None and folds(t)
    }
    if not folded:
        return decision
    mark = (FOLDED_FIELD, FLAPPING)
    return replace(
        decision,
        entries=tuple(e for e in decision.entries if e.event not in folded),
        events=tuple(
            replace(e, fields=(*e.fields, mark)) if e in folded else e for e in decision.events
        ),
    )


def notice_rows(
    channels: Sequence[Channel], notices: Iterable[Notice], *, now: datetime
) -> tuple[list[Event], list[OutboxEntry]]:
    """The event of each notice, and its outbox rows for the channels that hear it."""
    events: list[Event] = []
    entries: list[OutboxEntry] = []
    for notice in notices:
        event = notice.event(now)
        events.append(event)
        entries += held(channels, notice_entries(channels, notice, event, now=now))
    return events, entries


def held(channels: Sequence[Channel], entries: list[OutboxEntry]) -> list[OutboxEntry]:
    """Entries of channels with a `group_wait`, first due when their window closes."""
    waits = {c.name: c.policy.group_wait for c in channels if c.policy.group_wait > 0}
    if not waits:
        return entries
    return [
        replace(e, not_before=e.created_at + timedelta(seconds=waits[e.channel]))
        if e.channel in waits
        else e
        for e in entries
    ]


def outbox_entries(
    channels: Sequence[Channel], transition: Transition, event: Event
) -> list[OutboxEntry]:
    """One row per URL of every channel whose rules want the transition, pointing at its
    event (rendered with the channel's templates when sent)."""
    entries: list[OutboxEntry] = []
    subject = rules.Subject.of_transition(transition)
    for channel in channels:
        if not channel.policy.hears_sighting(transition):
            continue
        if not rules.matches(channel.rule, subject):
            continue
        entries += channel_rows(
            channel,
            event,
            job_key=transition.ref.key,
            old_state=transition.old_state,
            new_state=transition.new_state,
            created_at=transition.observed_at,
        )
    return entries


def transition_event(transition: Transition) -> Event:
    """The stored form of a transition: rendered for each channel when sent."""
    return Event(
        job_key=transition.ref.key,
        old_state=transition.old_state,
        new_state=transition.new_state,
        observed_at=transition.observed_at,
        fields=tuple(messages.event_fields(transition).items()),
    )


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """How a cycle reads what is due: kinds to LIST for their explicit jobs, and GETs."""

    lists: tuple[tuple[JobKind, tuple[JobRef, ...]], ...]
    gets: tuple[JobRef, ...]


def plan_fetch(due: Sequence[JobRef], *, pages: Mapping[JobKind, int]) -> FetchPlan:
    """GET each due job, or LIST its kind when that costs fewer requests.

    A LIST costs its pages (known from an earlier `totalSize`); GETs cost one each. When the
    length is unknown, a LIST is tried once 2 or more jobs of the kind are due.
    """
    lists: list[tuple[JobKind, tuple[JobRef, ...]]] = []
    gets: list[JobRef] = []
    for kind in dict.fromkeys(ref.kind for ref in due):
        of_kind = tuple(ref for ref in due if ref.kind == kind)
        known = pages.get(kind)
        listable = kind.spec.listable  # the account is one resource: always a GET
        if listable and len(of_kind) >= 2 and (known is None or known < len(of_kind)):
            lists.append((kind, of_kind))
        else:
            gets += of_kind
    return FetchPlan(tuple(lists), tuple(gets))


def within_budget(refs: Sequence[JobRef], available: int | None) -> list[JobRef]:
    """The GETs this cycle can afford (at least one); the rest stay due for when it refills."""
    if available is None:
        return list(refs)
    return list(refs[: max(1, available)])


#: A kind's first listing may record this many times `max_new_per_cycle`: jobs that existed
#: before the watcher are a baseline, not a flood (10,000 at the default: one cycle).
BASELINE_FACTOR: Final = 10


@dataclass(frozen=True, slots=True)
class Admitted:
    """The jobs of one LIST page to record this cycle, and how many new ones must wait."""

    jobs: tuple[JobSnapshot, ...]
    new: int  # jobs among `jobs` not known before
    deferred: int  # new jobs left for a later cycle (the page's rest, in page order)


def new_allowance(max_new: int, *, first: bool) -> int:
    """New jobs one kind's listing may record in a cycle: `BASELINE_FACTOR` times `max_new`
    for the first listing of the kind (an account's existing jobs are a baseline, not a flood),
    `max_new` after it, so a listing that never ends costs a bounded batch every cycle."""
    return BASELINE_FACTOR * max_new if first else max_new


def admit_new(page: Sequence[JobSnapshot], *, known: Container[str], allowance: int) -> Admitted:
    """Every known job of a page, and new ones (keys not in `known`) while `allowance` lasts.

    A job left out is not lost: the API lists it again next cycle, when it is admitted with
    the next allowance (announced then as new, if its kind was listed before).
    """
    jobs: list[JobSnapshot] = []
    new: set[str] = set()
    deferred = 0
    for snapshot in page:
        key = snapshot.ref.key
        if key in known or key in new:
            jobs.append(snapshot)
        elif len(new) < allowance:
            new.add(key)
            jobs.append(snapshot)
        else:
            deferred += 1
    return Admitted(tuple(jobs), len(new), deferred)


def listing_page_cap(known: int, allowance: int, page_size: int) -> int:
    """The most pages a discovered kind's listing plausibly takes in one cycle.

    The list holds the `known` jobs and new ones; paging stops once `allowance` new ones
    were admitted, so more pages than those fill (plus slack for jobs that shift pages while
    it is read) means a server repeating itself under fresh page tokens.
    """
    pages = max(1, -(-(known + allowance) // page_size))
    return pages + max(2, pages // 10)
