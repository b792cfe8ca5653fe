"""A health endpoint on an injected clock, served over loopback, and its /metrics read back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families

from watcher.runtime.plan import CycleReport
from watcher.web.health import Health
from watcher.web.serve import serve_health

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


OK = CycleReport(polled=2, calls=2)


class Clock:
    """A wall clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@asynccontextmanager
async def serving(health: Health) -> AsyncIterator[httpx.AsyncClient]:
    """Serve `health` on a free loopback port; yields a client for it."""
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_health, health.app(), "127.0.0.1", 0)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            yield client
        tg.cancel_scope.cancel()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, keyed by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value (KeyError when absent)."""
    return found[(name, frozenset(labels.items()))]
