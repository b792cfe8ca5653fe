"""Leadership: this replica's place among those sharing the database.

`Leadership.check`, every `renew_every(ttl)` seconds (`runtime.replica`), looks at the lease: it takes the lease
when it is free or expired, renews it while held, and beats the replica's heartbeat. The
poller polls only inside a term (`Leadership.term`), a cancel scope whose deadline is the end
of the lease as this replica may count it: the start of the last successful renewal plus the
lease time, on the event loop's monotonic clock. So a leader that cannot renew (database
lost) or was frozen (SIGSTOP) stops polling by itself when its lease may have passed to
another replica; its writes are fenced by the store in any case (`ports.StateRepo.fence`).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

import anyio
import structlog

from watcher.core.errors import StoreError
from watcher.core.lease import LEADER, MAX_TTL, MIN_TTL, POLLER, STANDBY, Lease, renew_every
from watcher.ports import Leases, Observer

log = structlog.get_logger("watcher")

#: A clean stop hands the lease over within this (seconds), or leaves it to expire.
RELEASE_TIMEOUT = 2.0


def replica_name() -> str:
    """This process's name on the lease and heartbeat: host, pid and a random tag, so a
    restarted process (same host, even same pid) is a new holder."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class Leadership:
    """Holds, renews and gives up the poller lease for one replica.

    Args:
        leases: the store.
        fence: called with the epoch of each new term (`StateRepo.fence`).
        holder: this replica's name (`replica_name()`).
        ttl: the lease time in seconds (`core.lease.lease_ttl`).
        started_at: when this replica started (its heartbeat says so).
        observer: told the role and lease after each check.
        exclusive: no other replica can exist (a SQLite file, locked by this process): a slow
            renewal then never ends a term, since nobody could take over.
    """

    def __init__(
        self,
        leases: Leases,
        *,
        fence: Callable[[int | None], None],
        holder: str,
        ttl: float,
        started_at: datetime,
        observer: Observer | None = None,
        exclusive: bool = False,
    ) -> None:
        self._leases = leases
        self._exclusive = exclusive
        self._fence = fence
        self.holder = holder
        self.ttl = ttl
        self._started_at = started_at
        self._observer = observer
        self.role = STANDBY
        self.epoch: int | None = None
        self.lease: Lease | None = None
        self._until = 0.0  # the end of the term on the loop's clock, while leader
        self._term: anyio.CancelScope | None = None
        self._changed = anyio.Event()
        self._store_error: str | None = None

    @property
    def leader(self) -> bool:
        return self.role == LEADER

    @property
    def check_every(self) -> float:
        """Seconds between lease checks: a quarter of the lease; for an exclusive replica,
        which renews only for the record (`status`), a quarter of the longest lease."""
        return renew_every(MAX_TTL if self._exclusive else self.ttl)

    async def check(self) -> None:
        """One round: renew or take the lease, or learn who has it; then beat."""
        began = anyio.current_time()
        if self.leader and began >= self._until and not self._exclusive:
            self._step_down("expired")  # frozen, or renewals failing past the lease
        held_for = MAX_TTL if self._exclusive else self.ttl
        # A silent route to the database (a partition) would hold a check for the kernel's
        # minutes. Two lease times: a check may wait up to half a lease (at least 1 s) for
        # the lease row's lock (`PgStore.hold_timeout`), and a cancelled one costs its
        # connection, so giving up sooner would slow the takeover it is for.
        patience = math.inf if self._exclusive else 2 * max(self.ttl, MIN_TTL)
        try:
            with anyio.fail_after(patience):
                lease = await self._leases.acquire_lease(
                    POLLER, self.holder, ttl=timedelta(seconds=held_for)
                )
        except (StoreError, TimeoutError) as exc:
            error = (
                f"no answer from the state database in {patience:g} s"
                if isinstance(exc, TimeoutError)
                else str(exc)
            )
            if self.leader and anyio.current_time() >= self._until:
                self._step_down("expired")
            if self._store_error != error:
                log.error("lease.unreachable", error=error, role=self.role)
            self._store_error = error
            self._tell(reachable=False)
            return
        if self._store_error is not None:
            log.info("lease.reachable", role=self.role)
            self._store_error = None
        self.lease = lease
        if lease.held_by(self.holder):
            if self.leader and lease.epoch != self.epoch:
                self._step_down("lost")  # released and re-taken: a new term
            self._until = math.inf if self._exclusive else began + self.ttl
            if self._term is not None:
                self._term.deadline = self._until
            if not self.leader:
                self._elect(lease)
        elif self.leader:
            self._step_down("lost")
        # A failed beat is not news: the next check says so if the store stays out of reach.
        with contextlib.suppress(StoreError), anyio.move_on_after(patience):
            await self._leases.beat(self.holder, role=self.role, started_at=self._started_at)
        self._tell(reachable=True)

    async def wait_elected(self, stop: anyio.Event) -> bool:
        """Wait until this replica leads (True) or `stop` is set (False)."""
        while not self.leader:
            if stop.is_set():
                return False
            changed = self._changed
            async with anyio.create_task_group() as tg:

                async def on_stop() -> None:
                    await stop.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(on_stop)
                await changed.wait()
                tg.cancel_scope.cancel()
        return True

    @asynccontextmanager
    async def term(self) -> AsyncIterator[anyio.CancelScope]:
        """The scope a term of polling runs in: cancelled when the lease may have passed on
        (its deadline, moved by each renewal) or is lost."""
        with anyio.CancelScope(deadline=self._until) as scope:
            self._term = scope
            try:
                yield scope
            finally:
                self._term = None

    async def release(self) -> None:
        """Give the lease up (a clean stop), so a standby takes over without waiting."""
        if not self.leader:
            return
        self._step_down("released")
        with anyio.move_on_after(RELEASE_TIMEOUT, shield=True):
            try:
                await self._leases.release_lease(POLLER, self.holder)
            except StoreError as exc:
                log.warning("lease.release_failed", error=str(exc))

    def _elect(self, lease: Lease) -> None:
        self.role, self.epoch = LEADER, lease.epoch
        self._fence(lease.epoch)
        log.info("lease.acquired", holder=self.holder, epoch=lease.epoch)
        self._notify()

    def _step_down(self, why: str) -> None:
        """Become standby: `why` is "released" (a clean stop), "expired" or "lost"."""
        fields = {
            "holder": self.holder,
            "epoch": self.epoch,
            "lease_holder": self.lease.holder if self.lease is not None else "",
        }
        if why == "released":
            log.info("lease.released", **fields)
        elif why == "expired":
            log.warning("lease.expired", **fields)
        else:
            log.warning("lease.lost", **fields)
        # The fence keeps the old epoch: a write still in flight from this term is refused.
        self.role = STANDBY
        if self._term is not None:
            self._term.cancel()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _tell(self, *, reachable: bool) -> None:
        if self._observer is not None:
            self._observer.leadership(self.role, self.lease, reachable=reachable)
