"""Delivery vocabulary: channels, their targets, outbox rows, send results and the retry schedule.

Pure data and arithmetic, shared by the loop (which decides) and the store and notifier (which do).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from watcher.core.model import JobKind, Meaning, Transition
from watcher.core.people import People
from watcher.core.rules import Rule
from watcher.core.schedule import doubling


@dataclass(frozen=True, slots=True)
class Target:
    """One URL of a channel, as the rest of the program may see it.

    The URL itself is a secret held only by the notifier; everything else refers to it by
    `url_key` (a hash) and shows it as `url_display` (apprise's privacy form).
    """

    url_key: str
    url_display: str
    #: The message fields a templated URL uses (`{owner}`: `core.url_fields`); () for a
    #: plain one. Its `url_display` then shows each as `{name}`.
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    """When a channel hears things, beyond which subjects (its `Rule`). Seconds; 0 is off.

    Attributes:
        notify_initial: also announce the first sighting of a job.
        notify_new: also announce a job that appeared in a discovered kind after the
            watcher first listed it (a job created since).
        repeat_interval: remind of a failure or attention state, or an open condition, this often.
        group_wait: hold a job's first message this long and send what came meanwhile as one.
        group_by_account: fold the held messages of every job into one, not one per job.
        max_per_minute: at most this many messages a minute; the overflow is one summary.
        digest: "" (none), "hourly", or "HH:MM" (daily) in `digest_timezone`.
        digest_timezone: an IANA zone name ("UTC" by default).
        digest_empty: send a digest with nothing in it.
        quiet_hours: ("22:00", "07:00") holds non-failure messages until the hours end; None off.
        progress_every: announce progress every this many percent (25: 25/50/75); 0 off.
        max_per_second: the pace of sends to each of the channel's targets: every message
            still goes, in order, at most this many a second (0.5: one every 2 s).
    """

    repeat_interval: float = 0.0
    group_wait: float = 0.0
    group_by_account: bool = False
    max_per_minute: int = 0
    digest: str = ""
    digest_timezone: str = "UTC"
    digest_empty: bool = False
    quiet_hours: tuple[str, str] | None = None
    progress_every: int = 0
    max_per_second: float = 1.0
    notify_initial: bool = False
    notify_new: bool = False

    def hears_sighting(self, transition: Transition) -> bool:
        """A move is always announced; a first sighting only when the channel asks for it
        (every one, or only a job created since the watcher first listed its kind)."""
        if transition.old is not None:
            return True
        if transition.ref.kind is JobKind.ACCOUNT and transition.new.meaning is Meaning.SUCCESS:
            return False  # an account first seen unsuspended is no news, even at startup
        return self.notify_initial or (self.notify_new and transition.new_job)


@dataclass(frozen=True, slots=True)
class Channel:
    """A named group of targets with the rule, policy and templates that decide what they
    receive; `people` is the directory its templates' `{owner_mention}` looks owners up in."""

    name: str
    targets: tuple[Target, ...]
    rule: Rule = field(default_factory=Rule)
    title: str | None = None
    body: str | None = None
    policy: ChannelPolicy = field(default_factory=ChannelPolicy)
    people: People = field(default_factory=People)


@dataclass(frozen=True, slots=True)
class Event:
    """What happened, as stored once in the events table (the history) and rendered at send
    time for each target that hears of it.

    A transition keeps its message fields as of the observation; a notice about the watcher
    itself (API unreachable, cannot read) keeps its `title` and `body`.
    """

    job_key: str
    old_state: str
    new_state: str
    observed_at: datetime
    fields: tuple[tuple[str, str], ...]
    notice: bool = False
    #: "" for a transition, else what the notice is (`core.notices`: condition, reminder...).
    kind: str = ""

    def field_map(self) -> dict[str, str]:
        """The fields as a mapping."""
        return dict(self.fields)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A notification to deliver to one target, written with the event that caused it: it is
    rendered from the event when sent, with the channel's templates then in force."""

    job_key: str
    channel: str
    url_key: str
    url_display: str
    old_state: str
    new_state: str
    created_at: datetime
    event: Event
    #: First due then rather than at `created_at` (a channel's `group_wait` holds it).
    not_before: datetime | None = None
    #: Why it is recorded as skipped, never sent (a templated URL's field is empty for its
    #: message); "" for a row to send.
    skipped: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """An outbox row as read back from the store."""

    id: int
    entry: OutboxEntry
    attempts: int
    next_attempt_at: datetime
    last_error: str
    status: str  # "pending" | "delivered" | "dead" | "silenced" | "skipped"
    claim: str | None = None  # the dispatcher that claimed it, while it does


class SendOutcome(StrEnum):
    """What one send to one target came to."""

    DELIVERED = "delivered"
    FAILED = "failed"
    # The call timed out: the message may have arrived. Retried, so it may be seen twice.
    MAYBE_DELIVERED = "maybe_delivered"
    # The target is no longer configured (a reload removed it): nothing to retry.
    UNKNOWN_TARGET = "unknown_target"


@dataclass(frozen=True, slots=True)
class SendResult:
    """The outcome of one send, with a one-line reason when it did not succeed."""

    outcome: SendOutcome
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed sends are retried: exponential backoff with jitter, then given up.

    Attributes:
        first_delay: seconds before the first retry; doubles with every attempt.
        max_delay: the cap on one delay.
        give_up_after: seconds after the transition when a delivery is declared dead.
    """

    first_delay: float = 1.0
    max_delay: float = 60.0
    give_up_after: float = 86400.0


def next_attempt(
    policy: RetryPolicy,
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    rand: Callable[[], float],
) -> datetime | None:
    """When to try a delivery again after its `attempts`-th failure; None means give up.

    The delay is drawn from the upper half of the backoff window, so retries spread out
    without ever coming sooner than half the nominal delay.
    """
    if (now - created_at).total_seconds() >= policy.give_up_after:
        return None
    nominal = doubling(policy.first_delay, policy.max_delay, attempts)
    return now + timedelta(seconds=nominal * (0.5 + rand() / 2))


class MarkKind(StrEnum):
    """What becomes of a delivery after one send."""

    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Mark:
    """The settled outcome of one send: `at` is when it was delivered or died, or when to
    try again."""

    kind: MarkKind
    at: datetime
    error: str = ""
    attempts: int = 0  # attempts made so far, this one included


def settle(
    delivery: Delivery,
    result: SendResult,
    policy: RetryPolicy,
    *,
    now: datetime,
    rand: Callable[[], float],
    retry_at: datetime | None = None,
) -> Mark:
    """Decide what one send's result makes of its delivery.

    Delivered is final. A failure (or a send that timed out and may have arrived) is retried
    on the backoff schedule (at `retry_at` when given: when its target's backoff ends) until
    `give_up_after` has passed since the transition; a target the config no longer has is
    given up at once.
    """
    attempts = delivery.attempts + 1
    if result.outcome is SendOutcome.DELIVERED:
        return Mark(MarkKind.DELIVERED, now, attempts=attempts)
    own = (
        None
        if result.outcome is SendOutcome.UNKNOWN_TARGET
        else next_attempt(
            policy, attempts=attempts, created_at=delivery.entry.created_at, now=now, rand=rand
        )
    )
    if own is None:
        return Mark(MarkKind.DEAD, now, result.detail, attempts)
    return Mark(MarkKind.RETRY, own if retry_at is None else retry_at, result.detail, attempts)


@dataclass(frozen=True, slots=True)
class Pushback:
    """What a failed send's problem says of its target's limits.

    Attributes:
        rate_limited: the service answered 429 (Too Many Requests) or said it rate-limits.
        retry_after: the seconds it asked to wait (`Retry-After`), when it said.
    """

    rate_limited: bool = False
    retry_after: float | None = None


# apprise's warnings: "Failed to send JSON POST notification: error=429.", "Discord rate
# limiting in effect; blocking for 2.00 second(s)"; and the plain forms "HTTP 429",
# "429 Too Many Requests", "Retry-After: 30".
_RATE_LIMITED = re.compile(
    r"(?:\berror\s*[=:]\s*|\bstatus(?:\s*code)?\s*[=:]?\s*|\bHTTP\s*|:\s*)429\b"
    r"|\b429\s+too many|too many requests|rate[ -]?limit",
    re.IGNORECASE,
)
_RETRY_AFTER = re.compile(
    r"(?:retry[ -]after|blocking for|wait(?:ing)? for)\s*[=:]?\s*([0-9]{1,7}(?:\.[0-9]+)?)",
    re.IGNORECASE,
)


def pushback(problem: str) -> Pushback:
    """Read a failed send's one-line problem (apprise's last warning) for a 429 and a wait."""
    wait = _RETRY_AFTER.search(problem)
    return Pushback(
        rate_limited=_RATE_LIMITED.search(problem) is not None,
        retry_after=float(wait[1]) if wait else None,
    )
