"""Endless pagination and floods of new jobs: a listing takes the pages its jobs plausibly
fill, and a cycle takes in a bounded number of jobs it never saw, the rest later.

The hostile API is a small ASGI app over loopback in front of the simulator; the healthy
kind beside it is the simulator's own.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app, config
from watcher.core import decide
from watcher.core.errors import ConfigError, PayloadError
from watcher.core.model import JobKind, JobRef, JobSnapshot
from watcher.runtime.poller import Poller
from watcher.sources.fireworks import FireworksClient
from watcher.sources.pages import MAX_PAGES, plausible_pages, stop_paging

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

SFT = "supervisedFineTuningJobs"
SFT_LIST = f"/v1/accounts/{ACCOUNT}/{SFT}"


# --- the pure bounds --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "total", "idle", "stops"),
    [
        (1, None, 0, None),
        (2, None, 2, None),
        (3, None, 3, "3 pages in a row listed no new job"),
        (1, None, 1, None),  # one empty page with a token is legal
        (2, 400, 0, None),  # 400 jobs: 2 pages, and 2 of slack
        (3, 400, 0, None),
        (4, 400, 0, "4 pages, more than totalSize 400 makes plausible"),
        (1, 0, 0, None),  # totalSize 0 (proto3 omits it) still allows a page and slack
        (3, 0, 0, "3 pages, more than totalSize 0 makes plausible"),
        (54, 10_000, 0, None),  # 50 pages and 10 % slack for jobs created meanwhile
        (55, 10_000, 0, "55 pages, more than totalSize 10000 makes plausible"),
        (MAX_PAGES - 1, None, 0, None),
        (MAX_PAGES, None, 0, f"more than {MAX_PAGES} pages"),
    ],
)
def test_stop_paging(number: int, total: int | None, idle: int, stops: str | None) -> None:
    """Paging stops at 3 pages in a row that list nothing new, past what `totalSize` makes
    plausible, and at the hard cap; otherwise it goes on."""
    assert stops == stop_paging(number, total=total, page_size=200, idle=idle)


@pytest.mark.parametrize(
    ("total", "size", "expected"),
    [(None, 200, None), (0, 200, 3), (1, 200, 3), (200, 200, 3), (201, 200, 4), (4000, 200, 22)],
)
def test_plausible_pages(total: int | None, size: int, expected: int | None) -> None:
    assert expected == plausible_pages(total, size)


def snap(job_id: str) -> JobSnapshot:
    return JobSnapshot(JobRef(JobKind.SFT, job_id), ACCOUNT, "RUNNING")


@pytest.mark.parametrize(
    ("page", "known", "allowance", "kept", "new", "deferred"),
    [
        pytest.param("abc", "abc", 0, "abc", 0, 0, id="all-known-need-no-allowance"),
        pytest.param("abc", "", 5, "abc", 3, 0, id="room-for-all"),
        pytest.param("abcde", "", 2, "ab", 2, 3, id="first-come-in-page-order"),
        pytest.param("aXbYc", "abc", 1, "aXbc", 1, 1, id="known-pass-new-wait"),
        pytest.param("aab", "", 1, "aa", 1, 1, id="a-duplicate-costs-once"),
        pytest.param("ab", "", 0, "", 0, 2, id="allowance-spent"),
        pytest.param("", "", 3, "", 0, 0, id="empty-page"),
    ],
)
def test_admit_new(
    page: str, known: str, allowance: int, kept: str, new: int, deferred: int
) -> None:
    """Known jobs always pass; new ones while the allowance lasts; the rest are counted."""
    admitted = decide.admit_new(
        [snap(c) for c in page], known=frozenset(f"sft/{c}" for c in known), allowance=allowance
    )

    assert (kept, new, deferred) == (
        "".join(s.ref.job_id for s in admitted.jobs),
        admitted.new,
        admitted.deferred,
    )


@pytest.mark.parametrize(
    ("known", "allowance", "expected"),
    [(0, 0, 3), (0, 1000, 7), (10_000, 1000, 60), (0, 10_000, 55), (199, 1, 3)],
)
def test_listing_page_cap(known: int, allowance: int, expected: int) -> None:
    """The pages the known jobs and the allowed new ones fill, plus slack."""
    assert expected == decide.listing_page_cap(known, allowance, 200)


@pytest.mark.parametrize(("first", "expected"), [(False, 7), (True, 70)])
def test_new_allowance(first: bool, expected: int) -> None:
    """A kind's first listing may take in ten times as many: a baseline is not a flood."""
    assert expected == decide.new_allowance(7, first=first)


# --- a hostile API over loopback ----------------------------------------------------------------


def sft_job(name: str) -> dict[str, str]:
    return {"name": f"accounts/{ACCOUNT}/{SFT}/{name}", "state": "JOB_STATE_RUNNING"}


class Endless:
    """An ASGI app whose SFT list never ends: every page hands out a fresh token. `mode`:
    `empty` pages; the `same` 200 jobs on every page; `fresh` 200 never-seen jobs per page;
    `one-new` 199 repeated jobs and one fresh one; `lying-total`: fresh jobs, `totalSize` 300.
    Everything else goes to the simulator."""

    def __init__(self, sim: Simulator, mode: str) -> None:
        self.sim, self.mode = sim, mode
        self.pages = 0
        self._names = itertools.count()

    def page(self) -> dict[str, Any]:
        fresh = [sft_job(f"flood-{next(self._names)}") for _ in range(200)]
        items = {
            "empty": [],
            "same": [sft_job(f"same-{i}") for i in range(200)],
            "fresh": fresh,
            "one-new": [sft_job(f"same-{i}") for i in range(199)] + fresh[:1],
            "lying-total": fresh,
        }[self.mode]
        body: dict[str, Any] = {SFT: items, "nextPageToken": f"t{self.pages}"}
        if self.mode == "lying-total":
            body["totalSize"] = 300
        return body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != SFT_LIST:
            await self.sim(scope, receive, send)
            return
        self.pages += 1
        body = orjson.dumps(self.page())
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize(
    ("mode", "pages", "match"),
    [
        ("empty", 3, "3 pages in a row listed no new job"),
        ("same", 4, "3 pages in a row listed no new job"),
        ("lying-total", 4, "4 pages, more than totalSize 300 makes plausible"),
    ],
)
async def test_the_client_stops_a_server_that_pages_forever(
    server: ServedApp, sim: Simulator, mode: str, pages: int, match: str
) -> None:
    """Empty pages, repeated jobs or more pages than `totalSize` allows, each under fresh
    tokens, end the listing as a bad answer after a handful of pages, not 10,000."""
    hostile = Endless(sim, mode)
    server.app = hostile
    async with httpx.AsyncClient(timeout=5) as http:
        client = FireworksClient(http, account_id=ACCOUNT, api_key=KEY, base_url=server.url)
        with pytest.raises(PayloadError, match=match):
            await client.list_jobs(JobKind.SFT)

    assert pages == hostile.pages


def settings_for(
    server: ServedApp, tmp_path: Path, receiver: JsonReceiver, **watcher: Any
) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {
                "poll_interval": 1,
                "state_path": str(tmp_path / "state.db"),
                "max_requests_per_minute": 100_000,
                **watcher,
            },
            # The hostile kind first: its listing must not hold up the healthy one.
            "watch": [{"kind": "sft", "discover": True}, {"kind": "dpo", "discover": True}],
            "channel": [{"name": "team", "urls": [receiver.url()]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )


@pytest.fixture
def healthy(sim: Simulator) -> Simulator:
    """One running DPO job: the healthy kind beside the hostile one."""
    sim.add_job("job-a", state="RUNNING")
    return sim


@pytest.mark.parametrize("mode", ["empty", "same", "fresh", "one-new", "lying-total"])
async def test_endless_pages_cost_a_few_pages_and_the_healthy_kind_is_seen_in_time(
    server: ServedApp,
    healthy: Simulator,
    receiver: JsonReceiver,
    tmp_path: Path,
    mode: str,
) -> None:
    """In the running daemon (poll_interval 1 s), an SFT list that never ends is read a few
    pages a cycle, and every move of a healthy DPO job is announced within 2 poll intervals
    (plus a generous margin for a loaded machine)."""
    hostile = Endless(healthy, mode)
    server.app = hostile
    settings = settings_for(server, tmp_path, receiver, max_new_per_cycle=100)
    cycles = 0
    baselined = anyio.Event()

    def on_cycle() -> None:
        nonlocal cycles
        cycles += 1
        baselined.set()

    stop = anyio.Event()
    async with app.open_watcher(settings) as watcher, anyio.create_task_group() as tg:
        tg.start_soon(lambda: watcher.run_forever(stop, on_cycle=on_cycle, max_sleep=0.5))
        with anyio.fail_after(10):
            await baselined.wait()  # a move before the first cycle would be the baseline
        for seen, state in enumerate(("COMPLETED", "RUNNING", "FAILED"), start=1):
            healthy.set_state("job-a", state)
            # 2 poll intervals, and 4 s of margin on a loaded machine; before the bound the
            # SFT listing ran 10,000 pages and nothing was seen for minutes.
            await receiver.wait_for_async(seen, 2 * 1 + 4)
        stop.set()

    assert cycles >= 3
    assert hostile.pages / cycles <= 8  # at most the cap (7 pages) per cycle, and slack


async def test_pages_past_what_the_known_and_new_jobs_fill_are_a_bad_answer(
    server: ServedApp, healthy: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """One fresh job a page among repeated ones, no `totalSize`: the client sees progress on
    every page, so the listing's own cap stops it, at the pages that the known jobs and the
    allowed new ones fill; the kind costs one `api.bad_answer`, the healthy kind nothing."""
    hostile = Endless(healthy, "one-new")
    server.app = hostile
    settings = settings_for(server, tmp_path, receiver, max_new_per_cycle=100)
    async with app.open_watcher(settings) as watcher:
        with capture_logs() as logs:
            report = await watcher.run_once(force=True)

    cap = decide.listing_page_cap(0, decide.new_allowance(100, first=True), 200)
    assert (7, 7) == (cap, hostile.pages)
    bad = [e["error"] for e in logs if e["event"] == "api.bad_answer"]
    assert ["LIST sft: more than 7 pages, more than 0 known and 1000 new jobs fill"] == [
        e.split(" (")[0] for e in bad
    ]
    assert (1, ["dpo"]) == (report.api_errors, [str(k) for k in report.listed])


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("max_answer_bytes", 2**40, "must be <= 536870912 (512 MiB), got 1099511627776"),
        ("max_answer_bytes", 1000, "must be >= 65536 (64 KiB), got 1000"),
        ("max_answer_bytes", 1.5e6, "must be an integer, got 1500000.0"),
        ("max_new_per_cycle", 0, "must be >= 1, got 0"),
        ("max_new_per_cycle", 10**9, "must be <= 100000, got 1000000000"),
        ("max_new_per_cycle", "many", "must be an integer, got 'many'"),
    ],
)
def test_the_bounds_are_bounded_in_the_config(key: str, value: object, problem: str) -> None:
    """Both keys refuse a value past their bounds with one line naming the key."""
    with pytest.raises(ConfigError) as raised:
        config.parse({"fireworks": {"account_id": ACCOUNT}, "watcher": {key: value}}, {})

    assert f"<config>: watcher.{key}: {problem}" == str(raised.value)


def test_the_bounds_have_generous_defaults() -> None:
    defaults = config.parse({"fireworks": {"account_id": ACCOUNT}}, {}).watcher
    assert (32 * 1024 * 1024, 1000) == (defaults.max_answer_bytes, defaults.max_new_per_cycle)


async def cycle_reports(watcher: Poller, count: int) -> list[Any]:
    return [await watcher.run_once(force=True) for _ in range(count)]


@pytest.mark.parametrize(
    ("existing", "flood", "max_new", "per_cycle"),
    [
        pytest.param(3, 130, 50, [50, 50, 30, 0], id="130-new-at-50-a-cycle"),
        pytest.param(1, 450, 200, [200, 200, 50, 0], id="across-pages"),
        pytest.param(2, 10, 1000, [10, 0, 0, 0], id="under-the-bound"),
    ],
)
async def test_a_flood_of_new_jobs_is_taken_in_a_bounded_batch_a_cycle_and_none_lost(
    server: ServedApp,
    sim: Simulator,
    receiver: JsonReceiver,
    tmp_path: Path,
    existing: int,
    flood: int,
    max_new: int,
    per_cycle: list[int],
) -> None:
    """After a kind's baseline, a flood of new jobs is recorded `max_new_per_cycle` a cycle;
    the rest are announced as new on later cycles, each exactly once, with one
    `jobs.new_deferred` line per cycle that left some for later."""
    for i in range(existing):
        sim.add_job(f"old-{i}", state="RUNNING")
    settings = settings_for(server, tmp_path, receiver, max_new_per_cycle=max_new)
    async with app.open_watcher(settings) as watcher:
        await watcher.run_once(force=True)
        for i in range(flood):
            sim.add_job(f"new-{i:04d}", state="RUNNING")
        with capture_logs() as logs:
            reports = await cycle_reports(watcher, len(per_cycle))

    new = [[t.ref.key for t in r.transitions if t.new_job] for r in reports]
    assert per_cycle == [len(keys) for keys in new]
    everyone = [key for keys in new for key in keys]
    assert sorted(everyone) == sorted(set(everyone)) == [f"dpo/new-{i:04d}" for i in range(flood)]
    deferred = [e for e in logs if e["event"] == "jobs.new_deferred"]
    cycles_short = sum(1 for i, n in enumerate(per_cycle[:-1]) if per_cycle[i + 1])
    assert cycles_short == len(deferred)
    lefts = [e["left_for_later"] for e in deferred]
    assert lefts == [flood - sum(per_cycle[: i + 1]) for i in range(len(lefts))]
    assert len([e for e in logs if e["event"] == "job.new"]) == flood


async def test_a_first_listing_takes_ten_times_the_bound_and_is_a_baseline_until_whole(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """A kind never listed before takes in 10 x `max_new_per_cycle` jobs in its first cycle
    as its baseline, then `max_new_per_cycle` a cycle (a listing that never ends must not cost
    the baseline's batch forever); none of them is "new" until the list was read whole, and a
    job created afterwards is."""
    for i in range(25):
        sim.add_job(f"old-{i:02d}", state="RUNNING")
    settings = settings_for(server, tmp_path, receiver, max_new_per_cycle=2)
    async with app.open_watcher(settings) as watcher:
        with capture_logs() as logs:
            baseline = await cycle_reports(watcher, 4)
            sim.add_job("zz-late", state="RUNNING")
            late = await watcher.run_once(force=True)

    counts = [sum(1 for t in r.transitions if t.ref.kind == "dpo") for r in baseline]
    assert [20, 2, 2, 1] == counts
    assert not [t for r in baseline for t in r.transitions if t.new_job]
    assert ["dpo/zz-late"] == [t.ref.key for t in late.transitions if t.new_job]
    assert 3 == len([e for e in logs if e["event"] == "jobs.new_deferred"])


async def test_an_endless_flood_records_a_bounded_batch_a_cycle(
    server: ServedApp, healthy: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """Fresh jobs on every page forever (the 478 MB case): each cycle reads one page after
    the baseline and records `max_new_per_cycle` new jobs, one log line saying so."""
    settings = settings_for(server, tmp_path, receiver, max_new_per_cycle=30)
    async with app.open_watcher(settings) as watcher:
        await watcher.run_once(force=True)  # the SFT baseline: empty, listed in full
        hostile = Endless(healthy, "fresh")
        server.app = hostile
        with capture_logs() as logs:
            reports = await cycle_reports(watcher, 3)

    assert [30, 30, 30] == [sum(1 for t in r.transitions if t.new_job) for r in reports]
    assert 3 == hostile.pages
    lines = [e for e in logs if e["event"] == "jobs.new_deferred"]
    assert [(["sft"], 30, 170)] * 3 == [
        (e["kinds"], e["recorded"], e["left_for_later"]) for e in lines
    ]
