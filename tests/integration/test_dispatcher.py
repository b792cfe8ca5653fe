"""The dispatcher beside the poller: a hanging channel holds up neither polling nor the other
channels, one job's messages reach a target in order, and settling is a pure decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.alerting import rewired
from tests.support.servers import JsonReceiver, ServedApp
from tests.support.waiting import DEADLINE, wait_until_async
from watcher import app, config
from watcher.core.delivery import (
    Delivery,
    Event,
    Mark,
    MarkKind,
    OutboxEntry,
    RetryPolicy,
    SendOutcome,
    SendResult,
    settle,
)
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow


def settings_for(
    server: ServedApp, tmp_path: Path, channels: list[dict[str, Any]], **watcher: Any
) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {
                "poll_interval": 0.2,
                "state_path": str(tmp_path / "state.db"),
                "max_requests_per_minute": 6000,
                **watcher,
            },
            "watch": [{"kind": "dpo", "jobs": ["job-a", "job-b"]}],
            "channel": channels,
        },
        {"FIREWORKS_API_KEY": KEY},
    )


async def test_a_hanging_channel_holds_up_neither_polling_nor_other_channels(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """While one channel hangs for the whole notify_timeout on job-a's message, job-b's later
    change is detected and reaches the healthy channel; the hanging send is still in flight."""
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="RUNNING")
    receiver.delay = 4.0  # the hanging channel: it answers only after notify_timeout
    async with JsonReceiver() as healthy:
        settings = settings_for(
            server,
            tmp_path,
            [
                {"name": "hanging", "urls": [receiver.url()]},
                {"name": "healthy", "urls": [healthy.url()]},
            ],
            notify_timeout=4.0,
        )
        async with app.open_watcher(settings) as watcher:
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(watcher.run_forever, stop)
                await wait_until_async(
                    lambda: watcher.last(JobRef(JobKind.DPO, "job-b")) is not None, "a"
                )
                sim.set_state("job-a", "COMPLETED")
                await wait_until_async(
                    lambda: len(healthy.messages) == 1, "job-a on the healthy channel"
                )
                await wait_until_async(
                    lambda: len(receiver.messages) == 1, "job-a posted to the hanging one"
                )
                sim.set_state("job-b", "FAILED")
                await wait_until_async(
                    lambda: len(healthy.messages) == 2, "job-b on the healthy channel"
                )
                hanging_still_in_flight = watcher.dispatcher.busy
                stop.set()

    (hanging,) = (c.targets[0].url_key for c in watcher.plan.channels if c.name == "hanging")
    # (The healthy lane may still be settling job-b's send: it was recorded before answered.)
    assert hanging in hanging_still_in_flight
    assert [
        "Sim job job-a (job-a): RUNNING → COMPLETED",
        "Sim job job-b (job-b): RUNNING → FAILED",
    ] == [m["title"] for m in healthy.messages]


async def test_after_an_outage_a_jobs_messages_arrive_in_order(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """A job moves three times while its channel is down; once it is back, the channel hears
    CREATING→PENDING, then PENDING→RUNNING, then RUNNING→COMPLETED: never the newest first."""
    sim.add_job("job-a", state="CREATING")
    sim.add_job("job-b", state="RUNNING")
    settings = settings_for(server, tmp_path, [{"name": "team", "urls": [receiver.url()]}])
    now = [datetime.now(UTC)]
    receiver.status = 503
    async with app.open_watcher(settings) as real:
        watcher = rewired(real, clock=lambda: now[0])
        await watcher.run_once(force=True)
        for state in ("PENDING", "RUNNING", "COMPLETED"):
            sim.set_state("job-a", state)
            now[0] += timedelta(seconds=1)
            await watcher.run_once(force=True)
        rejected = receiver.rejected
        receiver.status = 200
        now[0] += timedelta(minutes=5)
        await watcher.dispatch_once()

    # Only the first message was tried while the channel was down; the later ones waited.
    assert {"Sim job job-a (job-a): CREATING → PENDING"} == {m["title"] for m in rejected}
    assert [
        "Sim job job-a (job-a): CREATING → PENDING",
        "Sim job job-a (job-a): PENDING → RUNNING",
        "Sim job job-a (job-a): RUNNING → COMPLETED",
    ] == [m["title"] for m in receiver.messages]


async def test_text_is_rendered_at_send_time_from_the_event(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """A message queued while its channel is down is rendered when sent: a template changed
    by a reload meanwhile applies, and the event keeps the fields of the observation."""
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="RUNNING")
    settings = settings_for(server, tmp_path, [{"name": "team", "urls": [receiver.url()]}])
    receiver.status = 503
    async with app.open_watcher(settings) as watcher:
        await watcher.run_once(force=True)
        sim.set_state("job-a", "FAILED", status_code="INTERNAL", status_message="OOM")
        await watcher.run_once(force=True)
        channel = settings.channels[0].model_copy(
            update={"title": "{job_id} is {new_state} ({status_message})"}
        )
        changed = settings.model_copy(update={"channels": (channel,)})
        notifier = app.build_notifier(changed)
        watcher.reload(app.build_plan(changed, notifier), notifier)
        receiver.status = 200
        await watcher.poll_once()  # the reload takes effect at the next poll
        with anyio.fail_after(DEADLINE):
            while not receiver.messages:
                await watcher.dispatch_once()
                await anyio.sleep(0.2)

    assert ["job-a is FAILED (OOM)"] == [m["title"] for m in receiver.messages]
    assert ["Sim job job-a (job-a): RUNNING → FAILED: OOM"] == [
        m["title"] for m in receiver.rejected
    ][:1]


T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(first_delay=1.0, max_delay=60.0, give_up_after=3600.0)


def delivery(attempts: int = 0, *, age: float = 0.0) -> Delivery:
    entry = OutboxEntry(
        job_key="dpo/a",
        channel="team",
        url_key="k",
        url_display="json://x",
        old_state="RUNNING",
        new_state="COMPLETED",
        created_at=T0 - timedelta(seconds=age),
        event=Event(
            "dpo/a",
            "RUNNING",
            "COMPLETED",
            T0 - timedelta(seconds=age),
            (("title", "t"), ("body", "b")),
            notice=True,
        ),
    )
    return Delivery(
        id=1, entry=entry, attempts=attempts, next_attempt_at=T0, last_error="", status="pending"
    )


@pytest.mark.parametrize(
    ("row", "result", "expected"),
    [
        pytest.param(
            delivery(),
            SendResult(SendOutcome.DELIVERED),
            Mark(MarkKind.DELIVERED, T0, attempts=1),
            id="delivered",
        ),
        pytest.param(
            delivery(),
            SendResult(SendOutcome.FAILED, "503"),
            Mark(MarkKind.RETRY, T0 + timedelta(seconds=0.75), "503", 1),
            id="first failure: retry after 0.5-1 s",
        ),
        pytest.param(
            delivery(attempts=3),
            SendResult(SendOutcome.MAYBE_DELIVERED, "timed out"),
            Mark(MarkKind.RETRY, T0 + timedelta(seconds=6), "timed out", 4),
            id="timeout: retried, doubling",
        ),
        pytest.param(
            delivery(attempts=30),
            SendResult(SendOutcome.FAILED, "503"),
            Mark(MarkKind.RETRY, T0 + timedelta(seconds=45), "503", 31),
            id="capped at max_delay",
        ),
        pytest.param(
            delivery(attempts=2, age=3600),
            SendResult(SendOutcome.FAILED, "503"),
            Mark(MarkKind.DEAD, T0, "503", 3),
            id="too old: dead",
        ),
        pytest.param(
            delivery(),
            SendResult(SendOutcome.UNKNOWN_TARGET, "gone"),
            Mark(MarkKind.DEAD, T0, "gone", 1),
            id="target removed: dead at once",
        ),
    ],
)
def test_settle(row: Delivery, result: SendResult, expected: Mark) -> None:
    """What a send's result makes of its delivery, with jitter fixed at the middle."""
    assert expected == settle(row, result, POLICY, now=T0, rand=lambda: 0.5)
