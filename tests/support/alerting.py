"""A poller on a fake clock against the simulator: one cycle at a time, the titles a receiver
heard, rows read back."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread

from tests.support.account import ACCOUNT, KEY
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app, config
from watcher.ports import Observer
from watcher.runtime.poller import Poller

SFT = "supervisedFineTuningJobs"


MINUTE = 60.0


class Time:
    """One fake clock for the simulator and the watcher: monotonic seconds and wall time."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> datetime:
        return self.start + timedelta(seconds=self.mono - 1000.0)

    def advance(self, seconds: float) -> None:
        self.mono += seconds


def settings_for(
    server: ServedApp, state: Path, watches: list[dict[str, Any]], channels: list[dict[str, Any]]
) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {"poll_interval": 30, "state_path": str(state)},
            "watch": watches,
            "channel": channels,
        },
        {"FIREWORKS_API_KEY": KEY},
    )


def rewired(
    real: Poller,
    *,
    clock: Callable[[], datetime],
    monotonic: Callable[[], float] | None = None,
    observer: Observer | None = None,
) -> Poller:
    """A Poller on `real`'s plan, client, store and notifier that reads the wall clock `clock`
    and `monotonic` (by default `clock`'s timestamp: a test moves the two together)."""
    return Poller(
        real.plan,
        source=real._source,
        store=real._store,
        sender=real._sender,
        observer=observer,
        clock=clock,
        monotonic=monotonic or (lambda: clock().timestamp()),
    )


@asynccontextmanager
async def watcher_on(settings: config.Settings, time: Time) -> AsyncIterator[Poller]:
    """The real client, store and notifier, read through the fake clock."""
    async with app.open_watcher(settings) as real:
        yield rewired(real, clock=time.wall, monotonic=time.monotonic)


async def cycle(watcher: Poller, time: Time, seconds: float) -> None:
    """Let `seconds` pass, then one poll and one dispatch."""
    time.advance(seconds)
    await watcher.run_once(force=True)


def titles(receiver: JsonReceiver) -> list[str]:
    return [m["title"] for m in receiver.messages]


async def rows(state: Path, sql: str) -> list[tuple[Any, ...]]:
    def read() -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(state)) as db:
            return db.execute(sql).fetchall()

    return await anyio.to_thread.run_sync(read)
