"""The ports over the SQLite store, for the async runtime: each method of `StateStore` named
in the table below, run in a worker thread (one at a time: one connection, one writer), so
the event loop never blocks. One descriptor (`Threaded`) does the forwarding; mypy reads each
method's signature from `StateStore`, so callers are checked as if it were written out."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, Unpack, cast, overload

import anyio
import anyio.to_thread

from watcher.stores.sqlite import Options, StateStore

P = ParamSpec("P")
T = TypeVar("T")


class Threaded(Generic[P, T]):
    """`StateStore.<method>` as a coroutine method of `AsyncStore`, run in its worker thread.

    Lists, sets and dicts passed in are copied first, in the event loop's thread: the caller
    may change its own (a dispatcher's busy targets) while the worker reads them.
    """

    def __init__(self, method: Callable[Concatenate[StateStore, P], T]) -> None:
        self._method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, store: None, owner: type[AsyncStore]) -> Threaded[P, T]: ...
    @overload
    def __get__(
        self, store: AsyncStore, owner: type[AsyncStore]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, store: AsyncStore | None, owner: type[AsyncStore]) -> Any:
        if store is None:
            return self
        method, sync, limiter = self._method, store.sync, store.limiter

        async def threaded(*args: P.args, **kwargs: P.kwargs) -> T:
            # The copies keep what the signature promises (a sequence, a mapping).
            call: Callable[[], T] = functools.partial(
                cast("Callable[..., T]", method),
                sync,
                *map(_snapshot, args),
                **{name: _snapshot(value) for name, value in kwargs.items()},
            )
            return await anyio.to_thread.run_sync(call, limiter=limiter)

        return threaded


def _snapshot(value: object) -> object:
    if isinstance(value, list | set | frozenset):
        return tuple(value)
    if isinstance(value, dict):
        return dict(value)
    return value


class AsyncStore:
    """The `StateRepo`, `Outbox` and `Leases` ports over a `StateStore` (`sync`)."""

    #: One process per file (`stores.lock`): claims left at start are a dead process's.
    single_process = True
    schema_version = StateStore.SCHEMA_VERSION

    def __init__(self, store: StateStore) -> None:
        self.sync = store
        self.limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path, **options: Unpack[Options]) -> AsyncStore:
        """Open the database at `path` in a worker thread: connecting and migrating block,
        and the event loop must not. Close it with `store.sync.close()` (or `with store.sync`).

        The hooks (see `StateStore`) are called from the worker thread.
        """
        opening = functools.partial(StateStore.open, path, **options)
        return cls(await anyio.to_thread.run_sync(opening))

    @property
    def migrated_from(self) -> int:
        """The schema version the database had when opened."""
        return self.sync.migrated_from

    @property
    def display(self) -> str:
        """The database as a person reads it (its path)."""
        return str(self.sync.path)

    def fence(self, epoch: int | None) -> None:
        """See `ports.StateRepo.fence`."""
        self.sync.fence(epoch)

    record = Threaded(StateStore.record)
    aclose = Threaded(StateStore.close)

    # -- the table: every other method of the ports, and the CLI's reads --------------------
    last = Threaded(StateStore.last)
    last_all = Threaded(StateStore.last_all)
    flag = Threaded(StateStore.flag)
    flags = Threaded(StateStore.flags)
    forget = Threaded(StateStore.forget)
    since_all = Threaded(StateStore.since_all)
    polled_all = Threaded(StateStore.polled_all)
    open_conditions = Threaded(StateStore.open_conditions)
    reminder_times = Threaded(StateStore.reminder_times)
    digest_events = Threaded(StateStore.digest_events)
    history = Threaded(StateStore.history)
    silenced = Threaded(StateStore.silenced)
    prune_history = Threaded(StateStore.prune_history)
    add_silence = Threaded(StateStore.add_silence)
    expire_silence = Threaded(StateStore.expire_silence)
    silences = Threaded(StateStore.silences)
    claim = Threaded(StateStore.claim)
    claim_target = Threaded(StateStore.claim_target)
    release_claims = Threaded(StateStore.release_claims)
    release = Threaded(StateStore.release)
    next_due_at = Threaded(StateStore.next_due_at)
    outbox_stats = Threaded(StateStore.outbox_stats)
    undelivered = Threaded(StateStore.undelivered)
    mark_delivered = Threaded(StateStore.mark_delivered)
    mark_retry = Threaded(StateStore.mark_retry)
    mark_dead = Threaded(StateStore.mark_dead)
    mark_silenced = Threaded(StateStore.mark_silenced)
    hold = Threaded(StateStore.hold)
    settle_many = Threaded(StateStore.settle_many)
    announce_after_silences = Threaded(StateStore.announce_after_silences)
    prune = Threaded(StateStore.prune)
    acquire_lease = Threaded(StateStore.acquire_lease)
    release_lease = Threaded(StateStore.release_lease)
    lease = Threaded(StateStore.lease)
    beat = Threaded(StateStore.beat)
    replicas = Threaded(StateStore.replicas)


__all__ = ["AsyncStore", "Threaded"]
