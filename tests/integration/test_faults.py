"""The fault matrix: every way the API can misbehave, against the simulator over loopback.

The watcher runs in-process with the real client, store and notifier; only the client's
retry pauses are shortened so the suite stays fast.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.peers import Drip
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app, config
from watcher.runtime.fetcher import PROBE_CALLS
from watcher.runtime.plan import CycleReport
from watcher.runtime.poller import Poller
from watcher.sources.fireworks import FireworksClient
from watcher.sources.retry import RequestRetry
from watcher.stores.aio import AsyncStore

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

FAST_RETRY = RequestRetry(attempts=3, base_delay=0.01, max_delay=0.02)


def settings_for(
    server: ServedApp, tmp_path: Path, receiver: JsonReceiver, **watcher: object
) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {
                "poll_interval": 1,
                "state_path": str(tmp_path / "state.db"),
                "request_timeout": 0.5,
                "watch_account": False,  # one GET a cycle (the account: test_account_health)
                **watcher,
            },
            # One job: these faults are about a GET; LIST faults are tested with discover.
            "watch": [{"kind": "dpo", "jobs": ["job-a"]}],
            "channel": [{"name": "team", "urls": [receiver.url()]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )


@asynccontextmanager
async def fast_watcher(
    settings: config.Settings,
    *,
    base_url: str | None = None,
    clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[Poller]:
    """A watcher like the daemon's, with quick client retries and an optional clock."""
    notifier = app.build_notifier(settings)
    timeout = httpx.Timeout(settings.watcher.request_timeout)
    async with httpx.AsyncClient(timeout=timeout) as http:
        client = FireworksClient(
            http,
            account_id=ACCOUNT,
            api_key=KEY,
            base_url=base_url or settings.fireworks.base_url,
            retry=FAST_RETRY,
        )
        store = await AsyncStore.open(settings.watcher.state_path)
        with store.sync:
            # A test moves the wall clock and the monotonic one together.
            extra = {"clock": clock, "monotonic": lambda: clock().timestamp()} if clock else {}
            yield Poller(
                app.build_plan(settings, notifier),
                source=client,
                store=store,
                sender=notifier,
                **extra,  # type: ignore[arg-type]
            )


@pytest.fixture
def jobs(sim: Simulator) -> Simulator:
    """Two running DPO jobs."""
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="RUNNING")
    return sim


@pytest.fixture
def settings(server: ServedApp, tmp_path: Path, receiver: JsonReceiver) -> config.Settings:
    """The watcher's settings for the two jobs and one channel."""
    return settings_for(server, tmp_path, receiver)


async def cycle_after_fault(
    settings: config.Settings, sim: Simulator, receiver: JsonReceiver, **fault: object
) -> tuple[CycleReport, CycleReport]:
    """Baseline, inject the fault, move job-a to COMPLETED, run a faulty and a clean cycle."""
    async with fast_watcher(settings) as watcher:
        await watcher.run_once(force=True)
        sim.add_fault(**fault)  # type: ignore[arg-type]
        sim.set_state("job-a", "COMPLETED")
        faulty = await watcher.run_once(force=True)
        sim.clear_faults()
        clean = await watcher.run_once(force=True)
    return faulty, clean


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_transient_5xx_is_retried_within_the_poll(
    settings: config.Settings, jobs: Simulator, receiver: JsonReceiver, status: int
) -> None:
    """One 5xx answer is retried at once; the transition arrives in the same cycle."""
    faulty, _ = await cycle_after_fault(settings, jobs, receiver, status=status)

    assert (0, 1) == (faulty.api_errors, len(faulty.transitions))
    assert "RUNNING → COMPLETED" in (await receiver.wait_for_async(1))[0]["title"]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"status": 503, "times": 3}, id="5xx beyond the retries"),
        pytest.param({"malformed": True, "times": 1}, id="malformed json"),
        pytest.param({"truncated": True, "times": 1}, id="truncated json"),
        pytest.param(
            {"status": 200, "body": "<html>maintenance</html>", "content_type": "text/html"},
            id="html page with 200",
        ),
        pytest.param(
            {
                "status": 502,
                "body": "<html>bad gateway</html>",
                "content_type": "text/html",
                "times": 3,
            },
            id="html error page",
        ),
        pytest.param({"delay": 2.0, "times": 3}, id="hanging server"),
        pytest.param({"status": 429, "retry_after": "0", "times": 3}, id="429 beyond the retries"),
    ],
)
async def test_a_bad_answer_skips_the_job_for_one_cycle(
    settings: config.Settings, jobs: Simulator, receiver: JsonReceiver, fault: dict[str, object]
) -> None:
    """A failed poll is logged and skipped; the daemon carries on and reports the change later."""
    with capture_logs() as logs:
        faulty, clean = await cycle_after_fault(settings, jobs, receiver, **fault)

    assert (1, []) == (faulty.api_errors, faulty.transitions)
    assert ["RUNNING → COMPLETED"] == [f"{t.old_state} → {t.new_state}" for t in clean.transitions]
    assert 1 == len(await receiver.wait_for_async(1))
    assert {"api.error", "api.bad_answer"} & {e["event"] for e in logs}


@pytest.mark.parametrize("as_date", [False, True], ids=["seconds", "http date"])
async def test_429_retry_after_is_honoured(
    settings: config.Settings, jobs: Simulator, as_date: bool
) -> None:
    """A Retry-After longer than the client waits backs the job off at least that long (up
    to `terminal_poll_interval`, here 600 s)."""
    settings = settings.model_copy(
        update={"watcher": settings.watcher.model_copy(update={"terminal_poll_interval": 600.0})}
    )
    retry_after = (
        format_datetime(datetime.now(UTC) + timedelta(seconds=125), usegmt=True)
        if as_date
        else "120"
    )
    async with fast_watcher(settings) as watcher:
        jobs.add_fault(status=429, retry_after=retry_after)

        report = await watcher.run_once()

        assert 1 == report.unavailable
        assert 110 <= await watcher.next_wake()


@pytest.mark.parametrize("retry_after", ["86400", "1e20", "1e308"])
async def test_a_huge_retry_after_costs_at_most_one_slow_interval(
    settings: config.Settings, jobs: Simulator, receiver: JsonReceiver, retry_after: str
) -> None:
    """A blip of 429s asking to wait a day (or 1e20 s) never crashes a cycle and holds the
    API back at most `terminal_poll_interval`; the change made meanwhile is then announced."""
    now = [datetime.now(UTC)]
    slow = settings.watcher.terminal_poll_interval
    async with fast_watcher(settings, clock=lambda: now[0]) as watcher:
        await watcher.run_once(force=True)
        jobs.add_fault(status=429, retry_after=retry_after, times=50)
        now[0] += timedelta(seconds=settings.watcher.poll_interval)
        blip = await watcher.run_once()
        waits = await watcher.next_wake()
        jobs.clear_faults()
        jobs.set_state("job-a", "COMPLETED")
        now[0] += timedelta(seconds=slow)
        after = await watcher.run_once()

    assert (1, []) == (blip.unavailable, blip.transitions)
    assert 0 < waits <= slow
    assert ["RUNNING → COMPLETED"] == [f"{t.old_state} → {t.new_state}" for t in after.transitions]
    assert 1 == len(await receiver.wait_for_async(1))


async def test_missing_fields_and_unknown_states_pass(
    settings: config.Settings, jobs: Simulator, receiver: JsonReceiver
) -> None:
    """A job answer with only a name and a new enum value is a transition, not a crash."""
    minimal = json.dumps(
        {"name": f"accounts/{ACCOUNT}/dpoJobs/job-a", "state": "JOB_STATE_WARPING"}
    )
    faulty, _ = await cycle_after_fault(
        settings, jobs, receiver, status=200, body=minimal, path_contains="job-a"
    )

    assert ["RUNNING → WARPING"] == [f"{t.old_state} → {t.new_state}" for t in faulty.transitions]
    assert "RUNNING → WARPING" in (await receiver.wait_for_async(1))[0]["title"]


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_credentials_are_loud_and_backed_off(
    settings: config.Settings, jobs: Simulator, status: int
) -> None:
    """401/403 log an error and back off like any failure: one poll interval first (doubling
    up to the slow interval later), so a wrong key reaches `api_down_after` cycles in minutes."""
    async with fast_watcher(settings) as watcher:
        jobs.add_fault(status=status, times=2)
        with capture_logs() as logs:
            report = await watcher.run_once()

        assert report.auth_failed
        assert {"error"} == {e["log_level"] for e in logs if e["event"] == "api.auth_failed"}
        wait = await watcher.next_wake()
        assert (
            settings.watcher.poll_interval - 0.1 <= wait < settings.watcher.terminal_poll_interval
        )


async def test_connection_refused_is_survived(
    settings: config.Settings, jobs: Simulator, unused_port_url: str
) -> None:
    """With nothing listening, cycles fail and back off; nothing is recorded or crashes."""
    async with fast_watcher(settings, base_url=unused_port_url) as watcher:
        report = await watcher.run_once()
        wait = await watcher.next_wake()

    assert (1, 0) == (report.unavailable, report.polled)
    assert wait >= settings.watcher.poll_interval - 0.1


@pytest.fixture
def unused_port_url() -> str:
    """A loopback URL with no server behind it."""
    from tests.support.servers import free_tcp_port

    return f"http://127.0.0.1:{free_tcp_port()}"


async def test_api_outage_is_announced_once_then_recovery_once(
    server: ServedApp, tmp_path: Path, jobs: Simulator, receiver: JsonReceiver
) -> None:
    """After 3 failed cycles every channel hears "unreachable" once, then "reachable again" once."""
    settings = settings_for(server, tmp_path, receiver)
    now = [datetime(2026, 11, 27, 12, 0, tzinfo=UTC)]
    async with fast_watcher(settings, clock=lambda: now[0]) as watcher:
        await watcher.run_once()
        jobs.add_fault(status=503, times=10_000)
        for _ in range(6):
            now[0] += timedelta(seconds=await watcher.next_wake())
            await watcher.run_once()
        titles_during = [m["title"] for m in await receiver.wait_for_async(1)]
        jobs.clear_faults()
        jobs.set_state("job-a", "FAILED")
        now[0] += timedelta(seconds=await watcher.next_wake())
        await watcher.run_once()

    titles = [m["title"] for m in await receiver.wait_for_async(3)]
    assert ["Fireworks API unreachable"] == titles_during
    assert [
        "Fireworks API unreachable",
        "Sim job job-a (job-a): RUNNING → FAILED",
        "Fireworks API reachable again",
    ] == sorted(titles, key=lambda t: ("again" in t, t))
    assert 3 == len(receiver.messages)


async def test_outage_probing_is_bounded(
    server: ServedApp, tmp_path: Path, receiver: JsonReceiver, sim: Simulator
) -> None:
    """While the API is down a cycle stops after a few failed calls instead of trying every job."""
    for i in range(40):
        sim.add_job(f"job-{i}", state="RUNNING")
    settings = config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {"state_path": str(tmp_path / "s.db"), "request_timeout": 0.5},
            "watch": [{"jobs": [f"job-{i}" for i in range(40)]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )
    async with fast_watcher(settings) as watcher:
        sim.add_fault(status=503, times=10_000)
        sim.clear_requests()
        report = await watcher.run_once()

    # The probe budget, plus the polls already in flight when it ran out (4 in parallel).
    bound = PROBE_CALLS + 4 - 1
    assert 40 > bound >= report.calls
    assert bound * FAST_RETRY.attempts >= sim.request_count


async def test_a_dripping_answer_costs_its_kind_one_deadline_not_the_daemon(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """A LIST whose bytes trickle in is cut at `request_timeout` for the whole answer (not
    per read), retried and skipped; a healthy DPO job's move in the same cycle is announced."""
    drip = Drip(sim)
    server.app = drip
    sim.add_job("job-a", state="RUNNING")
    settings = config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {
                "poll_interval": 1,
                "state_path": str(tmp_path / "state.db"),
                "request_timeout": 0.5,
                "max_requests_per_minute": 6000,
            },
            "watch": [{"kind": "sft", "discover": True}, {"kind": "dpo", "jobs": ["job-a"]}],
            "channel": [{"name": "team", "urls": [receiver.url()]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )
    async with app.open_watcher(settings) as watcher:
        started = anyio.current_time()
        await watcher.run_once(force=True)
        sim.set_state("job-a", "COMPLETED")
        with capture_logs() as logs:
            report = await watcher.run_once(force=True)
        took = anyio.current_time() - started

    assert ["dpo/job-a"] == [t.ref.key for t in report.transitions]
    assert 1 == report.unavailable
    errors = [e["error"] for e in logs if e["event"] == "api.error"]
    assert ["no whole answer within 0.5 s" in e for e in errors] == [True]
    assert took < 15  # two cycles of three 0.5 s tries each, not 2 x 3 x 45 s of dripping
    assert 1 == len(await receiver.wait_for_async(1))
