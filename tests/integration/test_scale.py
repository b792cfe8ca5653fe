"""What a cycle costs in API requests: LIST pages instead of GETs, discover, and the budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from structlog.testing import capture_logs

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app, config
from watcher.runtime.plan import CycleReport

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow


def settings_for(
    server: ServedApp, tmp_path: Path, watch: dict[str, Any], **watcher: Any
) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {
                "state_path": str(tmp_path / "state.db"),
                "max_requests_per_minute": 100_000,
                **watcher,
            },
            "watch": [{"kind": "dpo", **watch}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )


def fill(sim: Simulator, count: int, prefix: str = "zz-fill") -> list[str]:
    """Add `count` running DPO jobs named after `prefix` (LIST pages sort by name)."""
    ids = [f"{prefix}-{i:04d}" for i in range(count)]
    for job_id in ids:
        sim.add_job(job_id, state="RUNNING")
    return ids


@asynccontextmanager
async def counting(sim: Simulator, settings: config.Settings) -> AsyncIterator[Any]:
    """A watcher, and a function running one forced cycle that returns its API request count."""
    async with app.open_watcher(settings) as watcher:

        async def cycle() -> tuple[int, CycleReport]:
            before = sim.request_count
            report = await watcher.run_once(force=True)
            return sim.request_count - before, report

        yield cycle


async def test_explicit_jobs_are_listed_when_pages_are_fewer(
    server: ServedApp, sim: Simulator, tmp_path: Path
) -> None:
    """450 explicit jobs cost 3 LIST pages a cycle, not 450 GETs."""
    ids = fill(sim, 450)
    async with counting(sim, settings_for(server, tmp_path, {"jobs": ids})) as cycle:
        first, baseline = await cycle()
        second, _ = await cycle()

    assert (3, 3) == (first, second)
    assert 450 == baseline.polled


async def test_few_jobs_in_a_big_account_are_fetched_one_by_one(
    server: ServedApp, sim: Simulator, tmp_path: Path
) -> None:
    """Two jobs among 450 cost one probing page, then two GETs a cycle: never a full LIST."""
    sim.add_job("aa-1", state="RUNNING")
    sim.add_job("aa-2", state="RUNNING")
    fill(sim, 448)
    settings = settings_for(server, tmp_path, {"jobs": ["aa-1", "aa-2"]})
    async with counting(sim, settings) as cycle:
        first, baseline = await cycle()
        second, report = await cycle()

    assert (1, 2) == (first, second)
    assert (2, 2) == (baseline.polled, report.polled)


async def test_jobs_missing_from_the_first_page_are_fetched(
    server: ServedApp, sim: Simulator, tmp_path: Path
) -> None:
    """When the probing page lacks a wanted job, that job is fetched with a GET."""
    fill(sim, 448, prefix="aa-fill")
    sim.add_job("zz-1", state="RUNNING")
    sim.add_job("zz-2", state="RUNNING")
    settings = settings_for(server, tmp_path, {"jobs": ["zz-1", "zz-2"]})
    async with counting(sim, settings) as cycle:
        first, baseline = await cycle()

    assert 3 == first
    assert ["zz-1", "zz-2"] == sorted(t.ref.job_id for t in baseline.transitions)


async def test_discover_costs_one_request_per_page(
    server: ServedApp, sim: Simulator, tmp_path: Path
) -> None:
    """Discovering 450 jobs costs ceil(450 / 200) = 3 requests a cycle; explicit jobs of the
    same kind ride along for free."""
    ids = fill(sim, 450)
    settings = settings_for(server, tmp_path, {"discover": True, "jobs": ids[:10]})
    async with counting(sim, settings) as cycle:
        first, baseline = await cycle()
        second, _ = await cycle()

    assert (3, 3) == (first, second)
    assert 450 == len(baseline.transitions)


async def test_budget_paces_gets_across_cycles(
    server: ServedApp, sim: Simulator, tmp_path: Path
) -> None:
    """With 60 requests/min, a cycle sends only the 5-request burst; the rest wait for refills."""
    sim.add_job("aa-1", state="RUNNING")
    fill(sim, 448)
    wanted = ["aa-1", *(f"zz-fill-{i:04d}" for i in range(440, 447))]
    settings = settings_for(server, tmp_path, {"jobs": wanted}, max_requests_per_minute=60)
    async with app.open_watcher(settings) as watcher:
        # As in an account of 10,000 jobs: 50 pages cost more than 8 GETs.
        watcher._fetcher.pages[next(iter(watcher.plan.refs)).kind] = 50
        before = sim.request_count
        report = await watcher.run_once()
        wake = await watcher.next_wake()

    assert (5, 5) == (report.polled, sim.request_count - before)
    assert 0.5 <= wake <= 1.5


async def test_a_budget_too_small_is_logged_with_the_effective_interval(
    server: ServedApp, sim: Simulator, tmp_path: Path
) -> None:
    """Three pages every second exceed 60 requests/min: the log gives the 3 s interval."""
    fill(sim, 450)
    settings = settings_for(
        server, tmp_path, {"discover": True}, poll_interval=1, max_requests_per_minute=60
    )
    async with app.open_watcher(settings) as watcher:
        with capture_logs() as logs:
            await watcher.run_once()
            await watcher.run_once(force=True)

    warnings = [e for e in logs if e["event"] == "budget.short"]
    assert [(3, 3.0)] == [(e["requests_per_cycle"], e["effective_interval"]) for e in warnings]


@pytest.mark.parametrize("discover", [False, True])
async def test_idle_cycles_write_nothing(
    server: ServedApp, sim: Simulator, tmp_path: Path, discover: bool
) -> None:
    """When nothing changed, a cycle leaves the state file as it was."""
    ids = fill(sim, 30)
    watch: dict[str, Any] = {"discover": True} if discover else {"jobs": ids}
    settings = settings_for(server, tmp_path, watch)
    async with app.open_watcher(settings) as watcher:
        await watcher.run_once(force=True)
        # stat() blocks: read the stamps in a worker thread.
        before = await anyio.to_thread.run_sync(file_stamps, tmp_path)
        report = await watcher.run_once(force=True)

        assert 30 == report.polled
        assert before == await anyio.to_thread.run_sync(file_stamps, tmp_path)


def file_stamps(folder: Path) -> list[tuple[str, int, int]]:
    """Name, size and modification time of the state files."""
    return [
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("state.db*"))
    ]


async def test_pages_are_announced_as_they_arrive(
    server: ServedApp, sim: Simulator, tmp_path: Path
) -> None:
    """A move on page 1 is announced (by the dispatcher's task, as in the daemon) before a
    slow page 2 has arrived, not after the whole list."""
    fill(sim, 450)
    async with JsonReceiver() as receiver:
        settings = config.parse(
            {
                "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
                "watcher": {"state_path": str(tmp_path / "s.db"), "request_timeout": 10},
                "watch": [{"kind": "dpo", "discover": True}],
                "channel": [{"name": "t", "urls": [receiver.url()]}],
            },
            {"FIREWORKS_API_KEY": KEY},
        )
        async with app.open_watcher(settings) as watcher:
            await watcher.run_once(force=True)
            sim.set_state("zz-fill-0000", "FAILED")
            sim.add_fault(delay=3.0, path_contains="pageToken", times=2)
            finished = anyio.Event()

            stop = anyio.Event()

            async def cycle() -> None:
                await watcher.poll_once(force=True)
                finished.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher.dispatcher.run, stop)
                tg.start_soon(cycle)
                await receiver.wait_for_async(1, 2.5)
                announced_before_the_end = not finished.is_set()
                stop.set()

    assert announced_before_the_end
