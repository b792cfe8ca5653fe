"""A replica's life: the dispatcher always, the poller while this replica holds the lease.

Every replica sends (its dispatcher claims outbox rows with a lease of their own); one polls.
Each term of leadership starts from the store, not from memory: another replica may have
polled and written since this one last led. With no `Leadership` (`once`, `watch`, tests of
the loop) the process polls from start to stop, as one term.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol

import anyio
import structlog

from watcher.ports import Budget
from watcher.runtime.dispatcher import Dispatcher
from watcher.runtime.leadership import Leadership
from watcher.runtime.plan import WatchPlan

log = structlog.get_logger("watcher")


class Polling(Protocol):
    """What a replica runs: the poller (`runtime.poller.Poller`), seen from here."""

    plan: WatchPlan
    dispatcher: Dispatcher

    @property
    def budget(self) -> Budget | None: ...

    def cycle_cost(self) -> int: ...

    def check_budget(self) -> None: ...

    def new_term(self) -> None: ...

    async def start(self) -> None: ...

    async def poll_forever(
        self, *, on_cycle: Callable[[], None] | None = None, max_sleep: float | None = None
    ) -> None: ...


async def run(
    watcher: Polling,
    stop: anyio.Event,
    *,
    grace: float = 5.0,
    on_cycle: Callable[[], None] | None = None,
    max_sleep: float | None = None,
    leadership: Leadership | None = None,
) -> None:
    """Dispatch, and poll while leading, until `stop` is set.

    The poll in progress at `stop` (or at the end of a term) is abandoned: nothing is
    half-written, records are transactions. Sends in flight get up to `grace` seconds, then
    are left pending. A clean stop hands the lease over.

    Args:
        stop: set to stop.
        grace: seconds in-flight sends may take after `stop`.
        on_cycle: called after every poll cycle, and (while standby) every lease check:
            systemd's READY and WATCHDOG pings.
        max_sleep: the longest pause between cycles, so `on_cycle` keeps its beat.
        leadership: the lease to poll under; None polls throughout.
    """
    plan = watcher.plan
    budget = watcher.budget
    log.info(
        "watcher.started",
        jobs=len(plan.refs),
        discover=[str(k) for k in plan.discover],
        channels=[c.name for c in plan.channels],
        poll_interval=plan.poll_interval,
        requests_per_cycle=watcher.cycle_cost(),
        max_requests_per_minute=budget.per_minute if budget else None,
        replica=leadership.holder if leadership else None,
    )
    watcher.check_budget()
    if leadership is not None:
        # Group windows and rate limits are counted in memory: one sender keeps them exact.
        watcher.dispatcher.serve_batches(lambda: leadership.leader)
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(watcher.dispatcher.run, stop, grace=grace))
        with anyio.CancelScope() as polling:

            async def stop_polling() -> None:
                await stop.wait()
                polling.cancel()

            tg.start_soon(stop_polling)
            if leadership is None:
                await watcher.start()
                await watcher.poll_forever(on_cycle=on_cycle, max_sleep=max_sleep)
            else:
                tg.start_soon(_lease_loop, leadership, stop, on_cycle)
                await _terms(watcher, leadership, stop, on_cycle, max_sleep)
        if leadership is not None:
            await leadership.release()
    log.info("watcher.stopped")


async def _lease_loop(
    leadership: Leadership, stop: anyio.Event, on_cycle: Callable[[], None] | None
) -> None:
    """Check the lease until `stop`; a standby's checks are its heartbeat for systemd."""
    while not stop.is_set():
        await leadership.check()
        if on_cycle is not None and not leadership.leader:
            on_cycle()
        with anyio.move_on_after(leadership.check_every):
            await stop.wait()


async def _terms(
    watcher: Polling,
    leadership: Leadership,
    stop: anyio.Event,
    on_cycle: Callable[[], None] | None,
    max_sleep: float | None,
) -> None:
    """Poll through each term of leadership, starting each from the store."""
    while await leadership.wait_elected(stop):
        async with leadership.term():
            watcher.new_term()
            await watcher.start()
            await watcher.poll_forever(on_cycle=on_cycle, max_sleep=max_sleep)
