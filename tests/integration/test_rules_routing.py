"""`kinds` and `owners` routing end to end: the simulator, the real client, store and
notifier, and two real receivers, on one fake clock (so a reminder's hour passes at once).

Channel A wants `kinds = ["dpo"]`, channel B `owners = ["alice@*"]`; jobs of two kinds by
two creators (and one by nobody) move, stall and stay failed, and each receiver gets exactly
its messages: transitions, a condition and reminders alike.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.alerting import MINUTE, SFT, Time, cycle, rows, settings_for, watcher_on
from tests.support.servers import JsonReceiver, ServedApp

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

HOUR = 60 * MINUTE
JOBS = {
    # job id: (collection, creator)
    "a-dpo": ("dpoJobs", "alice@example.com"),
    "b-dpo": ("dpoJobs", "bob@example.com"),
    "a-sft": (SFT, "Alice@Example.com"),
    "b-sft": (SFT, "bob@example.com"),
    "n-sft": (SFT, ""),
}


@pytest.fixture
def time() -> Time:
    return Time()


@pytest.fixture
def fake_sim(server: ServedApp, time: Time) -> Simulator:
    sim = Simulator(api_key=KEY, account_id=ACCOUNT, clock=time.monotonic, start_time=time.wall())
    server.app = sim
    return sim


def about(receiver: JsonReceiver) -> list[tuple[str, str]]:
    """Each message as (what, job id): `move`, `stalled`, `reminder`..."""
    found = []
    for message in receiver.messages:
        title = message["title"]
        (job_id,) = re.findall(r"\((\w-\w+)\)", title)
        if title.startswith("Reminder:"):
            what = "reminder"
        elif "no longer stalled" in title:
            what = "resolved"
        elif "stalled" in title:
            what = "stalled"
        elif "→" in title:
            what = "move"
        else:
            what = title
        found.append((what, job_id))
    return sorted(found)


async def test_each_channel_hears_exactly_its_kinds_and_owners(
    server: ServedApp, fake_sim: Simulator, time: Time, tmp_path: Path
) -> None:
    """A (kinds = dpo) hears both DPO jobs; B (owners = alice@*) both of alice's jobs, her
    address in any case; the job nobody created reaches neither. Moves, the stalled
    condition (opened and resolved) and the reminders of a FAILED job follow one rule."""
    for job_id, (collection, creator) in JOBS.items():
        progress = 0 if collection == SFT else None
        fake_sim.add_job(
            job_id, collection=collection, state="RUNNING", created_by=creator, progress=progress
        )
    watches = [
        {"kind": "dpo", "discover": True, "stall_after": 0},
        {"kind": "sft", "discover": True, "stall_after": "30m"},
    ]
    async with JsonReceiver() as a, JsonReceiver() as b:
        channels = [
            {"name": "a", "urls": [a.url()], "kinds": ["dpo"], "repeat_interval": "1h"},
            {"name": "b", "urls": [b.url()], "owners": ["alice@*"], "repeat_interval": "1h"},
        ]
        settings = settings_for(server, tmp_path / "state.db", watches, channels)
        async with watcher_on(settings, time) as watcher:
            await cycle(watcher, time, 0)
            await cycle(watcher, time, 31 * MINUTE)  # the SFT jobs stall
            await b.wait_for_async(1)
            for job_id, (collection, _) in JOBS.items():
                state = "FAILED" if job_id.endswith("dpo") else "COMPLETED"
                fake_sim.set_state(job_id, state, collection=collection)
            await cycle(watcher, time, MINUTE)
            await a.wait_for_async(2)
            await b.wait_for_async(4)
            await cycle(watcher, time, HOUR)  # the FAILED DPO jobs are reminded
            await a.wait_for_async(4)
            await b.wait_for_async(5)
            await cycle(watcher, time, MINUTE)  # nothing more is due

        heard_a, heard_b = about(a), about(b)
    queued = await rows(tmp_path / "state.db", "SELECT DISTINCT channel, job_key FROM outbox")

    assert [
        ("move", "a-dpo"),
        ("move", "b-dpo"),
        ("reminder", "a-dpo"),
        ("reminder", "b-dpo"),
    ] == heard_a
    assert [
        ("move", "a-dpo"),
        ("move", "a-sft"),
        ("reminder", "a-dpo"),
        ("resolved", "a-sft"),
        ("stalled", "a-sft"),
    ] == heard_b
    # Nothing else was queued for either, not even still to be sent.
    assert [
        ("a", "dpo/a-dpo"),
        ("a", "dpo/b-dpo"),
        ("b", "dpo/a-dpo"),
        ("b", "sft/a-sft"),
    ] == sorted(queued)
