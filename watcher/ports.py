"""The ports: what the poller and the dispatcher need from the world, as async Protocols.

Adapters implement them (the Fireworks client, the SQLite store, the apprise notifier, the
health server); a second backend (PostgreSQL) implements the same `StateRepo` and `Outbox`.
The runtime reaches adapters only through these.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NotRequired, Protocol, TypedDict, Unpack

from watcher.core.conditions import Condition, Since
from watcher.core.decision import Decision
from watcher.core.delivery import Delivery, Event, Mark, SendResult
from watcher.core.kinds import JobKind
from watcher.core.lease import Lease, Replica
from watcher.core.model import JobRef, JobSnapshot
from watcher.core.silences import Silence
from watcher.core.timeline import Timeline


class Page(Protocol):
    """A LIST page as the poller reads it."""

    @property
    def jobs(self) -> list[JobSnapshot]: ...
    @property
    def complete(self) -> bool: ...
    @property
    def total_size(self) -> int | None: ...


class Source(Protocol):
    """Where snapshots come from (the Fireworks API client)."""

    async def get_job(self, ref: JobRef) -> JobSnapshot:
        """One resource; a vanished one comes back in state NOT_FOUND."""
        ...

    def pages(self, kind: JobKind, *, max_pages: int | None = None) -> AsyncGenerator[Page, None]:
        """LIST a kind page by page; stops early (incomplete) past `max_pages` pages."""
        ...


class StateRepo(Protocol):
    """The last seen snapshot of every resource, and small named flags.

    `record` writes a `Decision` (snapshots, events, outbox rows, flags...) in one transaction: the guarantee
    that a transition is never lost rests on it.
    """

    async def last_all(self) -> dict[str, JobSnapshot]: ...
    async def record(self, decision: Decision) -> None: ...
    def fence(self, epoch: int | None) -> None:
        """Carry `epoch` on every later write of a poll (`record`, `forget`, `prune_history`):
        each is refused (`core.errors.Fenced`) unless the poller lease still has that epoch.
        None writes unfenced (one process on its own, the CLI)."""
        ...

    async def since_all(self) -> dict[str, Since]: ...
    async def open_conditions(self) -> list[Condition]: ...
    async def reminder_times(self) -> dict[tuple[str, str], datetime]: ...
    async def silences(self, now: datetime, *, include_ended: bool = False) -> list[Silence]: ...
    async def flag(self, key: str) -> str | None: ...
    async def flags(self, prefix: str) -> dict[str, str]: ...
    async def forget(self, keys: Sequence[str]) -> None: ...
    async def prune_history(self, before: datetime) -> tuple[int, int]: ...
    async def digest_events(
        self, start: datetime, end: datetime, *, limit: int = 10_000
    ) -> list[Event]: ...


class Claim(TypedDict):
    """`Outbox.claim`'s keywords: the claim's holder and how long it lasts; targets to skip
    (`busy`, none by default) and how many rows at most (`limit`, 100 by default)."""

    holder: str
    lease: timedelta
    busy: NotRequired[Collection[str]]
    limit: NotRequired[int]


class TargetClaim(TypedDict):
    """`Outbox.claim_target`'s keywords: the claim's holder and how long it lasts; how many
    rows at most (`limit`, 200 by default), and whether rows of any job may join
    (`whole_target`, False by default)."""

    holder: str
    lease: timedelta
    limit: NotRequired[int]
    whole_target: NotRequired[bool]


class Outbox(Protocol):
    """Deliveries waiting to be sent, claimed with a lease by the one who sends them."""

    async def claim(self, now: datetime, **options: Unpack[Claim]) -> list[Delivery]: ...
    async def release_claims(self) -> int: ...
    async def release(self, delivery_ids: Sequence[int], *, claim: str) -> None: ...
    async def next_due_at(self) -> datetime | None: ...
    async def outbox_stats(self) -> tuple[int, datetime | None]: ...
    async def mark_delivered(
        self, delivery_id: int, *, now: datetime, claim: str | None = None
    ) -> None: ...
    async def mark_retry(
        self, delivery_id: int, *, next_attempt_at: datetime, error: str, claim: str | None = None
    ) -> None: ...
    async def mark_dead(
        self, delivery_id: int, *, now: datetime, error: str, claim: str | None = None
    ) -> None: ...
    async def prune(self, *, delivered_before: datetime) -> int: ...
    async def claim_target(
        self, url_key: str, now: datetime, **options: Unpack[TargetClaim]
    ) -> list[Delivery]: ...
    async def settle_many(self, delivery_ids: Sequence[int], mark: Mark, claim: str) -> None: ...
    async def hold(
        self, delivery_id: int, *, until: datetime, claim: str | None = None, why: str = "quiet"
    ) -> None: ...
    async def mark_silenced(
        self, delivery_id: int, *, silence_id: int, now: datetime, claim: str | None = None
    ) -> None: ...
    async def silences(self, now: datetime, *, include_ended: bool = False) -> list[Silence]: ...
    async def announce_after_silences(self, now: datetime) -> dict[int, int]: ...


class Leases(Protocol):
    """The leadership lease and the replicas' heartbeats (see `core.lease`).

    Times are the store's own clock (the database server's, for PostgreSQL), so replicas on
    hosts whose clocks disagree still agree on who holds the lease.
    """

    async def acquire_lease(self, name: str, holder: str, *, ttl: timedelta) -> Lease:
        """Take the lease when it is free or expired (the epoch grows by one on a change of
        holder), or renew it when `holder` has it (same epoch, even if it had expired);
        otherwise change nothing. Returns the lease as it stands after, whoever holds it."""
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Let the lease expire now if `holder` has it (a clean stop hands over at once)."""
        ...

    async def lease(self, name: str) -> Lease | None: ...
    async def beat(self, holder: str, *, role: str, started_at: datetime) -> None:
        """Record that replica `holder` is alive now in `role`."""
        ...

    async def replicas(self, *, seen_within: timedelta) -> list[Replica]:
        """The replicas seen within `seen_within` of now, leader first, then by holder."""
        ...


class Sender(Protocol):
    """Sends one rendered message to one target (the apprise notifier). A templated target
    (`{owner}` in its URL) is rendered with `fields`: the message's `url_fields.url_values`."""

    async def send(
        self,
        key: str,
        *,
        title: str,
        body: str,
        notify_type: str,
        fields: Mapping[str, str] | None = None,
    ) -> SendResult: ...


class Budget(Protocol):
    """The API request budget shared with the client (`watcher.core.budget.RequestBudget`)."""

    @property
    def per_minute(self) -> float: ...
    def available(self) -> int: ...
    def seconds_until_available(self) -> float: ...


class Report(Protocol):
    """What a poll cycle tells the observer."""

    @property
    def polled(self) -> int: ...
    @property
    def calls(self) -> int: ...
    @property
    def api_errors(self) -> int: ...
    @property
    def auth_failed(self) -> bool: ...
    @property
    def store_failed(self) -> bool: ...


class StatusSource(Protocol):
    """What the status page reads (`views.StoreStatus`): JSON-ready documents (see
    `views.overview_document`) and a job's timeline."""

    async def overview(self) -> dict[str, Any]:
        """Every job, condition, silence and undelivered notification, and the daemon's role."""

    async def job(self, key: str) -> tuple[dict[str, Any], Timeline] | None:
        """One job with its history, and its timeline; None when there is no such job."""


class Observer(Protocol):
    """Told what happens, for health checks and metrics; every method must be cheap."""

    def api_call(self, outcome: str) -> None:
        """One API call ended: ok, unavailable, rejected, auth or payload."""

    def transition(self, kind: str, new_state: str) -> None:
        """A job moved (first sightings excluded)."""

    def notification(self, channel: str, outcome: str) -> None:
        """A send ended: sent, failed or dead."""

    def maybe_delivered(self, channel: str) -> None:
        """A send to `channel` timed out: it may have arrived, and is sent again."""

    def cycle_done(self, report: Report, *, at: datetime) -> None:
        """A poll cycle finished."""

    def outbox(self, pending: int, oldest: datetime | None) -> None:
        """The outbox now holds `pending` deliveries, the oldest created at `oldest`."""

    def unreadable(self, targets: Mapping[str, str]) -> None:
        """These targets (job key or `list:KIND`) cannot be read, with the last error."""

    def job_states(self, states: Mapping[str, tuple[str, str, str]]) -> None:
        """Jobs whose state changed (key -> (kind, job id, state)); state "" means forgotten."""

    def conditions(self, open_by_name: Mapping[str, int]) -> None:
        """How many conditions of each name are open now (every name, zeros included)."""

    def silenced(self, channel: str) -> None:
        """A message to `channel` was silenced (recorded, not sent)."""

    def leadership(self, role: str, lease: Lease | None, *, reachable: bool) -> None:
        """A lease check ended: this replica's role, the lease as last read, and whether the
        store answered."""


class NullObserver:
    """Observes nothing."""

    def api_call(self, outcome: str) -> None:
        """Ignore it."""

    def transition(self, kind: str, new_state: str) -> None:
        """Ignore it."""

    def notification(self, channel: str, outcome: str) -> None:
        """Ignore it."""

    def maybe_delivered(self, channel: str) -> None:
        """Ignore it."""

    def cycle_done(self, report: Report, *, at: datetime) -> None:
        """Ignore it."""

    def outbox(self, pending: int, oldest: datetime | None) -> None:
        """Ignore it."""

    def unreadable(self, targets: Mapping[str, str]) -> None:
        """Ignore it."""

    def job_states(self, states: Mapping[str, tuple[str, str, str]]) -> None:
        """Ignore it."""

    def conditions(self, open_by_name: Mapping[str, int]) -> None:
        """Ignore it."""

    def silenced(self, channel: str) -> None:
        """Ignore it."""

    def leadership(self, role: str, lease: Lease | None, *, reachable: bool) -> None:
        """Ignore it."""
