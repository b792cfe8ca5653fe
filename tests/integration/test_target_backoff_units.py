"""Backoff per target and pacing (issue 21, item 2), part by part: the pure bookkeeping, what
a failed send's text says, the `max_per_second` key, the store's `release` on both backends,
and the dispatcher's lanes over a real store, apprise and receivers on a wall clock of the
test's own (the daemon-level figures are in `test_target_backoff.py`)."""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.account import ACCOUNT, KEY
from tests.support.backends import OpenStore
from tests.support.servers import JsonReceiver
from watcher import app, config
from watcher.core.decision import Decision
from watcher.core.delivery import (
    Channel,
    ChannelPolicy,
    Delivery,
    Event,
    Mark,
    MarkKind,
    OutboxEntry,
    Pushback,
    RetryPolicy,
    SendOutcome,
    SendResult,
    pushback,
    settle,
)
from watcher.core.errors import ConfigError
from watcher.core.pacing import RETRY_AFTER_CAP, Pace, TargetBackoff
from watcher.notify.apprise_sender import AppriseNotifier
from watcher.ports import Sender
from watcher.runtime.dispatcher import Dispatcher
from watcher.stores.aio import AsyncStore

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(first_delay=1.0, max_delay=60.0, give_up_after=86400.0)
MIDDLE = 0.5  # jitter fixed at the middle: a delay is 3/4 of its nominal value


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the pure bookkeeping ------------------------------------------------------------------


def test_a_target_backs_off_doubling_then_opens_and_resets() -> None:
    """Each failure in a row doubles the target's wait; until it ends the target waits;
    an arrival resets it."""
    backoff = TargetBackoff(POLICY)
    waits = []
    now = T0
    for _ in range(8):
        until = backoff.failed("t", now, attempts=0, rand=lambda: MIDDLE)
        waits.append((until - now).total_seconds())
        assert {"t"} == backoff.waiting(now)
        assert until == backoff.ends_at(now)
        now = until
        assert frozenset() == backoff.waiting(now)
    backoff.succeeded("t")

    assert [0.75, 1.5, 3.0, 6.0, 12.0, 24.0, 45.0, 45.0] == waits
    assert 0 == backoff.failures("t")
    assert backoff.ends_at(now) is None


def test_the_probe_rows_attempts_carry_the_backoff_over_a_restart() -> None:
    """A fresh dispatcher (after a restart) starts from the failed row's own attempts."""
    backoff = TargetBackoff(POLICY)

    until = backoff.failed("t", T0, attempts=9, rand=lambda: MIDDLE)

    assert later(45) == until
    assert 10 == backoff.failures("t")


@pytest.mark.parametrize(
    ("retry_after", "wait"),
    [
        pytest.param(None, 0.75, id="none: the backoff"),
        pytest.param(0.2, 0.75, id="shorter than the backoff: the backoff"),
        pytest.param(30.0, 30.0, id="longer: honoured"),
        pytest.param(7200.0, RETRY_AFTER_CAP, id="an hour or two: capped"),
        pytest.param(-5.0, 0.75, id="negative: ignored"),
        pytest.param(float("nan"), 0.75, id="nan: ignored"),
    ],
)
def test_retry_after_slows_only_its_target(retry_after: float | None, wait: float) -> None:
    backoff = TargetBackoff(POLICY)

    until = backoff.failed("slow", T0, attempts=0, rand=lambda: MIDDLE, retry_after=retry_after)

    assert later(wait) == until
    assert {"slow"} == backoff.waiting(T0)


def test_a_wall_clock_set_back_does_not_hold_a_target_for_as_long() -> None:
    """A backoff end further ahead than any backoff lasts (the clock went back an hour)
    does not count: the target is probed, not held for an hour."""
    backoff = TargetBackoff(POLICY)
    backoff.failed("t", T0, attempts=0, rand=lambda: MIDDLE)

    assert frozenset() == backoff.waiting(T0 - timedelta(hours=1))


def test_pace_spaces_sends_per_target() -> None:
    pace = Pace()
    pace.sent("a", 100.0, 2.0)
    pace.sent("b", 100.0, 0.1)

    assert 0.5 == pace.wait("a", 100.0)
    assert 0.0 == pace.wait("a", 100.5)
    assert 0.0 == pace.wait("never", 100.0)
    assert {"b"} == pace.ahead(100.0, 5.0)
    assert 110.0 == pace.soonest(frozenset({"b"}))
    assert frozenset() == pace.ahead(110.0, 0.0)


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("Failed to send JSON POST notification: error=429.", Pushback(True)),
        ("Failed to send to Slack: error=429.", Pushback(True)),
        ("Failed to send JSON notification: 429", Pushback(True)),
        ("Discord rate limiting in effect; blocking for 2.00 second(s)", Pushback(True, 2.0)),
        ("HTTP 429 Too Many Requests; Retry-After: 30", Pushback(True, 30.0)),
        ("Failed to send JSON POST notification: Internal server error., error=500.", Pushback()),
        ("A Connection error occurred sending JSON notification to 127.0.0.1.", Pushback()),
        ("Failed to send ntfy notification to 10.4.29.1:4290: error=404.", Pushback()),
        ("", Pushback()),
    ],
)
def test_pushback_reads_apprises_warnings(problem: str, expected: Pushback) -> None:
    assert expected == pushback(problem)


def _row(attempts: int = 0, *, days: float = 0.0) -> Delivery:
    created = T0 - timedelta(days=days)
    entry = OutboxEntry(
        "dpo/a",
        "team",
        "k",
        "json://x",
        "A",
        "B",
        created,
        event=Event("dpo/a", "A", "B", created, (("title", "t"), ("body", "b")), notice=True),
    )
    return Delivery(1, entry, attempts, T0, "", "pending")


def test_settle_retries_when_the_target_opens_and_still_dies_of_age() -> None:
    """With a target's backoff end the retry goes then; `retry_for` still ends an old row."""
    failed = SendResult(SendOutcome.FAILED, "503")

    assert Mark(MarkKind.RETRY, later(45), "503", 1) == settle(
        _row(), failed, POLICY, now=T0, rand=lambda: MIDDLE, retry_at=later(45)
    )
    assert Mark(MarkKind.DEAD, T0, "503", 4) == settle(
        _row(3, days=2), failed, POLICY, now=T0, rand=lambda: MIDDLE, retry_at=later(45)
    )


# -- the key -------------------------------------------------------------------------------


def _parse(**channel: Any) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT},
            "watch": [{"kind": "dpo", "jobs": ["job-a"]}],
            "channel": [{"name": "team", "urls": ["json://127.0.0.1:9/hook"], **channel}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )


@pytest.mark.parametrize(("value", "expected"), [(None, 1.0), (0.5, 0.5), (2, 2.0), (100, 100.0)])
def test_max_per_second_takes_a_rate_up_to_100(value: float | None, expected: float) -> None:
    settings = _parse(**({} if value is None else {"max_per_second": value}))
    plan = app.build_plan(settings, app.build_notifier(settings))

    assert expected == settings.channels[0].max_per_second
    assert expected == plan.channels[0].policy.max_per_second


@pytest.mark.parametrize("value", [0, -1, 0.0, 101, float("inf"), float("nan"), True, "fast"])
def test_max_per_second_refuses_what_is_no_pace(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(max_per_second=value)

    message = str(caught.value)
    assert "channel[0].max_per_second" in message
    assert "\n" not in message


def test_the_example_config_shows_the_key() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "watcher.example.toml"

    assert "# max_per_second = 1 " in example.read_text()


# -- the store gives claims back -------------------------------------------------------------


def _entry(
    job: str,
    url_key: str = "target",
    display: str = "json://x",
    *,
    channel: str = "team",
    at: datetime = T0,
) -> OutboxEntry:
    """A transition's outbox row, rendered from its event as "JOB: RUNNING → COMPLETED"."""
    fields = {"job_id": job, "display_name": job, "kind": "sft", "old_state": "RUNNING"}
    fields["new_state"] = "COMPLETED"
    event = Event(f"sft/{job}", "RUNNING", "COMPLETED", at, tuple(sorted(fields.items())))
    return OutboxEntry(f"sft/{job}", channel, url_key, display, "RUNNING", "COMPLETED", at, event)


async def test_released_rows_are_claimable_again_as_they_were(stores: OpenStore) -> None:
    """`release` drops this holder's claim, nothing else (no attempt, no error); a row under
    another claim, or settled, is left alone."""
    one, two = await stores(), await stores()
    await one.record(Decision([], [_entry(f"job-{i}") for i in range(4)], now=T0))
    lease = timedelta(seconds=60)
    taken = await one.claim(T0, holder="one", lease=lease)
    first, *rest = taken
    await one.mark_delivered(first.id, now=T0, claim="one")

    await one.release([first.id, rest[0].id, rest[1].id], claim="one")
    await one.release([rest[2].id], claim="someone else")
    again = await two.claim(T0, holder="two", lease=lease)

    assert [d.id for d in rest[:2]] == [d.id for d in again]
    assert all(d.attempts == 0 and d.last_error == "" for d in again)
    assert all(d.next_attempt_at == T0 for d in again)


# -- lanes over a real store, apprise and receivers --------------------------------------------


@dataclass
class Rig:
    """A dispatcher over a real store file sending through apprise to two receivers: `down`
    (the target under test) and `healthy` (beside it)."""

    path: Path
    store: AsyncStore
    dispatcher: Dispatcher
    channels: tuple[Channel, Channel]
    now: list[datetime]

    def entries(self, jobs: Sequence[str], *, on: int = 0) -> list[OutboxEntry]:
        channel = self.channels[on]
        target = channel.targets[0]
        return [
            _entry(job, target.url_key, target.url_display, channel=channel.name, at=self.now[0])
            for job in jobs
        ]

    async def rows(self) -> list[tuple[Any, ...]]:
        """(job, status, attempts, claim) of every row of the down target, oldest first."""
        key = self.channels[0].targets[0].url_key
        return await anyio.to_thread.run_sync(functools.partial(_rows, self.path, key))

    def tick(self, seconds: float) -> None:
        self.now[0] += timedelta(seconds=seconds)


def _rows(path: Path, url_key: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT job_key, status, attempts, claim FROM outbox WHERE url_key = ? ORDER BY id",
            (url_key,),
        ).fetchall()


@asynccontextmanager
async def rig(
    tmp_path: Path,
    down: JsonReceiver,
    healthy: JsonReceiver,
    *,
    fake_pace: bool = False,
    **policy: Any,
) -> AsyncIterator[Rig]:
    """Two channels, one target each, a dispatcher on the test's clock (`fake_pace`: its
    paces too, so the test moves them on without waiting)."""
    urls = [down.url(), healthy.url()]
    notifier = AppriseNotifier([(f"channel[{i}].urls[0]", u) for i, u in enumerate(urls)])
    paced = ChannelPolicy(**{"max_per_second": 100.0, **policy})
    channels = (
        Channel("down", (notifier.target(urls[0]),), policy=paced),
        Channel("healthy", (notifier.target(urls[1]),), policy=ChannelPolicy(max_per_second=100)),
    )
    path = tmp_path / "state.db"
    store = await AsyncStore.open(path)
    now = [T0]
    dispatcher = Dispatcher(
        store,
        notifier,
        channels=channels,
        policy=POLICY,
        send_timeout=5.0,
        clock=lambda: now[0],
        rand=lambda: MIDDLE,
        monotonic=(lambda: now[0].timestamp()) if fake_pace else time.monotonic,
    )
    try:
        yield Rig(path, store, dispatcher, channels, now)
    finally:
        await store.aclose()


async def test_a_down_target_gets_one_probe_per_backoff_step_and_then_all_in_order(
    tmp_path: Path,
) -> None:
    """Five messages for a target answering 500: one request, and the rest stay untried and
    unclaimed; nothing until its backoff ends; then the same first row alone; once the target
    answers, all five in order. The healthy target beside it got its five at once."""
    jobs = [f"job-{i}" for i in range(5)]
    async with JsonReceiver() as down, JsonReceiver() as healthy:
        down.status = 500
        async with rig(tmp_path, down, healthy) as r:
            await r.store.record(
                Decision([], r.entries(jobs) + r.entries(jobs, on=1), now=r.now[0])
            )
            first = await r.dispatcher.dispatch_once()
            after_first = await r.rows()
            await r.dispatcher.dispatch_once()
            r.tick(0.7)  # the backoff is 0.75 s
            await r.dispatcher.dispatch_once()
            held = len(down.rejected)
            r.tick(0.05)
            await r.dispatcher.dispatch_once()
            probes = [m["title"] for m in down.rejected]
            down.status = 200
            r.tick(1.5)
            last = await r.dispatcher.dispatch_once()

    assert (5, 1) == (first.sent, first.failed)
    assert [
        ("sft/job-0", "pending", 1, ""),
        *((f"sft/job-{i}", "pending", 0, "") for i in range(1, 5)),
    ] == after_first
    assert 1 == held
    assert ["job-0: RUNNING → COMPLETED"] * 2 == probes
    assert 5 == last.sent
    assert [f"job-{i}: RUNNING → COMPLETED" for i in range(5)] == [
        m["title"] for m in down.messages
    ]
    assert [m["title"] for m in down.messages] == [m["title"] for m in healthy.messages]


async def test_a_target_down_for_two_hours_gets_a_probe_per_backoff_step(tmp_path: Path) -> None:
    """500 messages for a target answering 500 for two hours (the dispatcher's clock, moved
    on 30 s a round): one request per backoff step (the steps double to the 60 s cap; jitter
    fixed at 3/4), never one per message; then all 500 in order, once each. The healthy
    target beside it had its 500 in the first rounds. (The daemon's own test of this, with
    real time, is `test_target_backoff.py`'s 20 s outage.)"""
    jobs = [f"job-{i:03}" for i in range(500)]
    async with (
        JsonReceiver() as down,
        JsonReceiver() as healthy,
        rig(tmp_path, down, healthy, fake_pace=True) as r,
    ):
        down.status = 500
        await r.store.record(Decision([], r.entries(jobs) + r.entries(jobs, on=1), now=r.now[0]))
        rounds_to_healthy = 0
        for _ in range(240):
            await r.dispatcher.dispatch_once()
            r.tick(30)
            if len(healthy.messages) < len(jobs):
                rounds_to_healthy += 1
        probes = len(down.rejected)
        down.status = 200
        with anyio.fail_after(60):
            while len(down.messages) < len(jobs):
                await r.dispatcher.dispatch_once()
                r.tick(10)

    # 6 steps up to the cap (0.75 s ... 24 s), then one every 45 s, looked at every 30 s:
    # one a minute, about 125 in two hours. Before backoff (b92baa0): 1,707 in the first 10 s.
    assert 100 <= probes <= 2 * 3600 / 45 + 10
    assert {"job-000: RUNNING → COMPLETED"} == {m["title"] for m in down.rejected}
    assert [f"job-{i:03}: RUNNING → COMPLETED" for i in range(500)] == [
        m["title"] for m in down.messages
    ]
    assert [m["title"] for m in healthy.messages] == [m["title"] for m in down.messages]
    assert rounds_to_healthy <= 10


async def test_a_batched_target_stops_at_its_first_failed_message(tmp_path: Path) -> None:
    """A channel with `max_per_minute` (sent a batch at a time): the first message fails,
    the others are not tried and wait with the target."""
    jobs = [f"job-{i}" for i in range(3)]
    async with JsonReceiver() as down, JsonReceiver() as healthy:
        down.status = 503
        async with rig(tmp_path, down, healthy, max_per_minute=30) as r:
            await r.store.record(Decision([], r.entries(jobs), now=r.now[0]))
            report = await r.dispatcher.dispatch_once()
            rows = await r.rows()
            down.status = 200
            r.tick(1)
            again = await r.dispatcher.dispatch_once()

    assert (0, 1) == (report.sent, report.failed)
    assert [1, 0, 0] == [attempts for _, _, attempts, _ in rows]
    assert {""} == {claim for *_, claim in rows}
    assert 3 == again.sent
    assert [f"job-{i}: RUNNING → COMPLETED" for i in range(3)] == [
        m["title"] for m in down.messages
    ]


async def test_a_targets_pace_runs_on_the_dispatchers_clock(tmp_path: Path) -> None:
    """`max_per_second` = 0.01 (one send every 100 s): one message goes, the next waits for
    the pace, and goes as soon as the dispatcher's clock says 100 s passed: no real wait."""
    jobs = [f"job-{i}" for i in range(3)]
    async with (
        JsonReceiver() as slow,
        JsonReceiver() as healthy,
        rig(tmp_path, slow, healthy, fake_pace=True, max_per_second=0.01) as r,
    ):
        await r.store.record(Decision([], r.entries(jobs), now=r.now[0]))
        with anyio.fail_after(5):
            first = await r.dispatcher.dispatch_once()
            r.tick(50)
            early = await r.dispatcher.dispatch_once()
            r.tick(50)
            paced = await r.dispatcher.dispatch_once()

    assert (1, 0, 1) == (first.sent, early.sent, paced.sent)
    assert ["job-0", "job-1"] == [m["title"].split(":")[0] for m in slow.messages]


class _ClaimCheck:
    """Sends through the real notifier, noting for each send how long the row's claim still
    had to run; then moves the test's clock on by `step` seconds (a slow target)."""

    def __init__(self, inner: Sender, path: Path, now: list[datetime], step: float) -> None:
        self.inner, self.path, self.now, self.step = inner, path, now, step
        self.spare: list[float] = []

    async def send(
        self,
        key: str,
        *,
        title: str,
        body: str,
        notify_type: str,
        fields: Mapping[str, str] | None = None,
    ) -> SendResult:
        job = "sft/" + title.split(":")[0]
        until = await anyio.to_thread.run_sync(functools.partial(_claimed_until, self.path, job))
        self.spare.append((until - self.now[0]).total_seconds())
        result = await self.inner.send(key, title=title, body=body, notify_type=notify_type)
        self.now[0] += timedelta(seconds=self.step)
        return result


def _claimed_until(path: Path, job: str) -> datetime:
    with sqlite3.connect(path) as conn:
        (until,) = conn.execute(
            "SELECT claimed_until FROM outbox WHERE job_key = ?", (job,)
        ).fetchone()
    return datetime.fromisoformat(until)


async def test_every_send_goes_under_a_claim_that_outlasts_it(tmp_path: Path) -> None:
    """A lane whose sends take 31 s each gives its later rows back rather than send them
    under a claim about to lapse (another replica could take it and send them too)."""
    jobs = [f"job-{i}" for i in range(3)]
    async with (
        JsonReceiver() as down,
        JsonReceiver() as healthy,
        rig(tmp_path, down, healthy) as r,
    ):
        checked = _ClaimCheck(r.dispatcher._sender, r.path, r.now, 31.0)
        r.dispatcher.reload(checked, POLICY, send_timeout=5.0, channels=r.channels)
        await r.store.record(Decision([], r.entries(jobs), now=r.now[0]))
        report = await r.dispatcher.dispatch_once()

    assert 3 == report.sent
    assert 3 == len(checked.spare)
    assert min(checked.spare) >= 5.0, checked.spare
