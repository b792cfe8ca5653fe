"""The health and metrics server over real loopback HTTP, with an injected clock."""

from __future__ import annotations

import signal
import socket
from datetime import timedelta
from typing import Any

import anyio
import httpx
import pytest

from tests.support.health import OK, T0, Clock, sample, samples, serving
from watcher.core.errors import ListenError
from watcher.ports import Observer
from watcher.runtime.plan import CycleReport
from watcher.web.health import AUTH_REASON, STORE_REASON, Health
from watcher.web.serve import serve_health

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

AUTH = CycleReport(calls=2, api_errors=2, auth_failed=True)
DOWN = CycleReport(calls=3, api_errors=3, unavailable=3)
STORE = CycleReport(polled=2, calls=2, store_failed=True)


@pytest.fixture
def clock() -> Clock:
    """A clock standing at T0."""
    return Clock()


@pytest.fixture
def health(clock: Clock) -> Health:
    """A health observer polling every 30 s, started at T0."""
    return Health(poll_interval=30, clock=clock)


# -- /healthz --------------------------------------------------------------------------------


async def test_healthz_is_ok_during_the_grace_after_start(health: Health, clock: Clock) -> None:
    """Before the first cycle the watcher is alive for one liveness window."""
    async with serving(health) as client:
        clock.advance(90)
        response = await client.get("/healthz")

    assert (200, "ok\n") == (response.status_code, response.text)


async def test_healthz_fails_when_no_cycle_ever_finished(health: Health, clock: Clock) -> None:
    """Past the grace with no finished cycle, the loop is reported stuck."""
    async with serving(health) as client:
        clock.advance(91)
        response = await client.get("/healthz")

    assert (503, "no poll cycle finished in the last 90 s\n") == (
        response.status_code,
        response.text,
    )


async def test_healthz_follows_the_last_cycle(health: Health, clock: Clock) -> None:
    """Alive while the last cycle is recent, 503 once it is older than the window."""
    async with serving(health) as client:
        clock.advance(200)
        health.cycle_done(DOWN, at=clock())
        fresh = await client.get("/healthz")
        clock.advance(91)
        stale = await client.get("/healthz")

    assert [200, 503] == [fresh.status_code, stale.status_code]


@pytest.mark.parametrize(
    ("poll", "terminal", "window"),
    [(30, None, 90), (5, None, 60), (30, 300, 330), (100, 120, 300)],
    ids=["three-intervals", "sixty-second-floor", "slow-settled-polls", "terminal-close-to-poll"],
)
def test_liveness_window(clock: Clock, poll: float, terminal: float | None, window: float) -> None:
    """A cycle may be as old as the window, not a second more."""
    health = Health(poll_interval=poll, terminal_poll_interval=terminal, clock=clock)
    health.cycle_done(OK, at=clock())
    clock.advance(window)
    at_edge = health.liveness()[0]
    clock.advance(1)

    assert [True, False] == [at_edge, health.liveness()[0]]


def test_set_poll_interval_moves_the_windows(health: Health, clock: Clock) -> None:
    """After a reload to a slower pace, older cycles and polls still count as fresh."""
    health.cycle_done(OK, at=clock())
    clock.advance(200)
    before = (health.liveness()[0], health.readiness()[0])
    health.set_poll_interval(60, terminal_poll_interval=180)

    assert [(False, False), (True, True)] == [before, (health.liveness()[0], health.readiness()[0])]


# -- /readyz ---------------------------------------------------------------------------------


async def test_readyz_through_a_life(health: Health, clock: Clock) -> None:
    """Readiness follows first poll, auth failure, store failure, recovery and staleness."""
    script: list[tuple[CycleReport | None, float]] = [
        (None, 0),
        (OK, 10),
        (AUTH, 10),
        (OK, 10),
        (STORE, 10),
        (OK, 10),
        (None, 91),
    ]
    seen = []
    async with serving(health) as client:
        for report, later in script:
            clock.advance(later)
            if report is not None:
                health.cycle_done(report, at=clock())
            response = await client.get("/readyz")
            seen.append((response.status_code, response.text))

    assert [
        (503, "no successful poll yet\n"),
        (200, "ready\n"),
        (503, f"{AUTH_REASON}\n"),
        (200, "ready\n"),
        (503, f"{STORE_REASON}\n"),
        (200, "ready\n"),
        (503, "no successful poll in the last 90 s\n"),
    ] == seen


async def test_readyz_lists_every_failing_reason(health: Health, clock: Clock) -> None:
    """Each failing condition gets its own line."""
    health.cycle_done(
        CycleReport(calls=1, api_errors=1, auth_failed=True, store_failed=True), at=T0
    )
    async with serving(health) as client:
        response = await client.get("/readyz")

    assert (503, ["no successful poll yet", AUTH_REASON, STORE_REASON]) == (
        response.status_code,
        response.text.splitlines(),
    )


async def test_readyz_names_unreadable_resources(health: Health, clock: Clock) -> None:
    """A resource that cannot be read is named by /readyz, which stays ready for the rest."""
    health.cycle_done(OK, at=T0)
    health.unreadable({"sft/x": "HTTP 400 INVALID_ARGUMENT: bad", "list:dpo": "not JSON"})
    async with serving(health) as client:
        named = await client.get("/readyz")
        health.unreadable({})
        cleared = await client.get("/readyz")

    assert (
        200,
        [
            "ready",
            "cannot read list:dpo: not JSON",
            "cannot read sft/x: HTTP 400 INVALID_ARGUMENT: bad",
        ],
    ) == (named.status_code, named.text.splitlines())
    assert (200, "ready\n") == (cleared.status_code, cleared.text)


@pytest.mark.parametrize(
    ("reports", "ready"),
    [
        ([OK], True),
        ([CycleReport(calls=1)], True),
        ([CycleReport(polled=1)], True),
        ([DOWN], False),
        ([CycleReport()], False),
        ([OK, CycleReport(polled=1, calls=2, api_errors=1, auth_failed=True)], False),
        ([AUTH, DOWN], False),
        ([AUTH, OK], True),
        ([STORE, CycleReport()], True),
        ([OK, DOWN], True),
    ],
    ids=[
        "polled",
        "empty-list-answer",
        "polled-without-calls-counted",
        "api-down",
        "nothing-due",
        "auth-fails-beside-successes",
        "auth-then-api-down",
        "auth-recovered",
        "store-recovered",
        "recent-success-survives-an-outage-cycle",
    ],
)
def test_readiness_after_cycles(
    health: Health, clock: Clock, reports: list[CycleReport], ready: bool
) -> None:
    """Readiness after a sequence of cycles a few seconds apart."""
    for report in reports:
        health.cycle_done(report, at=clock.advance(5))

    assert ready == health.readiness()[0]


# -- /metrics --------------------------------------------------------------------------------


async def test_metrics_count_what_the_loop_reports(health: Health, clock: Clock) -> None:
    """Each Observer call shows up under its metric name and labels."""
    health.api_call("ok")
    health.api_call("ok")
    health.api_call("auth")
    health.transition("dpo", "COMPLETED")
    health.notification("ml-team", "sent")
    health.notification("ml-team", "failed")
    health.notification("ops", "dead")
    health.cycle_done(CycleReport(polled=3, calls=4, api_errors=1), at=T0)
    health.cycle_done(DOWN, at=clock.advance(30))
    health.outbox(2, T0)
    async with serving(health) as client:
        response = await client.get("/metrics")
    found = samples(response.text)

    assert {
        "api ok": 2.0,
        "api auth": 1.0,
        "transition": 1.0,
        "sent": 1.0,
        "failed": 1.0,
        "dead": 1.0,
        "polls ok": 3.0,
        "polls error": 4.0,
        "last cycle": (T0 + timedelta(seconds=30)).timestamp(),
        "last success": T0.timestamp(),
        "pending": 2.0,
        "oldest age": 30.0,
    } == {
        "api ok": sample(found, "fireworks_watcher_api_calls_total", outcome="ok"),
        "api auth": sample(found, "fireworks_watcher_api_calls_total", outcome="auth"),
        "transition": sample(
            found, "fireworks_watcher_transitions_total", kind="dpo", new_state="COMPLETED"
        ),
        "sent": sample(
            found, "fireworks_watcher_notifications_total", channel="ml-team", outcome="sent"
        ),
        "failed": sample(
            found, "fireworks_watcher_notifications_total", channel="ml-team", outcome="failed"
        ),
        "dead": sample(
            found, "fireworks_watcher_notifications_total", channel="ops", outcome="dead"
        ),
        "polls ok": sample(found, "fireworks_watcher_polls_total", outcome="ok"),
        "polls error": sample(found, "fireworks_watcher_polls_total", outcome="error"),
        "last cycle": sample(found, "fireworks_watcher_last_cycle_timestamp_seconds"),
        "last success": sample(found, "fireworks_watcher_last_successful_poll_timestamp_seconds"),
        "pending": sample(found, "fireworks_watcher_outbox_pending"),
        "oldest age": sample(found, "fireworks_watcher_outbox_oldest_pending_age_seconds"),
    }


async def test_metrics_have_the_prometheus_content_type(health: Health) -> None:
    """Scrapers get the text exposition format, with zeroed poll counters from the start."""
    async with serving(health) as client:
        response = await client.get("/metrics")

    assert ("text/plain", 0.0) == (
        response.headers["content-type"].split(";")[0],
        sample(samples(response.text), "fireworks_watcher_polls_total", outcome="error"),
    )


def test_oldest_pending_age_follows_the_clock(health: Health, clock: Clock) -> None:
    """The age grows between cycles and drops to 0 once the outbox is empty."""
    age = "fireworks_watcher_outbox_oldest_pending_age_seconds"
    health.outbox(3, T0 - timedelta(seconds=5))
    ages = [health.registry.get_sample_value(age)]
    clock.advance(42)
    ages.append(health.registry.get_sample_value(age))
    health.outbox(0, None)
    ages.append(health.registry.get_sample_value(age))

    assert [5.0, 47.0, 0.0] == ages


async def test_request_latency_histogram(health: Health) -> None:
    """Each observed request lands in its status's buckets, count and sum."""
    health.observe_request(0.2, status="200")
    health.observe_request(3.0, status="200")
    health.observe_request(10.0, status="error")
    async with serving(health) as client:
        found = samples((await client.get("/metrics")).text)
    name = "fireworks_watcher_api_request_seconds"

    assert [1.0, 1.0, 2.0, 2.0, 3.2, 1.0] == [
        sample(found, f"{name}_bucket", status="200", le="0.25"),
        sample(found, f"{name}_bucket", status="200", le="2.5"),
        sample(found, f"{name}_bucket", status="200", le="5.0"),
        sample(found, f"{name}_count", status="200"),
        sample(found, f"{name}_sum", status="200"),
        sample(found, f"{name}_bucket", status="error", le="+Inf"),
    ]


def test_each_health_has_its_own_registry(clock: Clock) -> None:
    """Two observers in one process count independently (no global registry)."""
    first, second = Health(poll_interval=30, clock=clock), Health(poll_interval=30, clock=clock)
    first.api_call("ok")
    name = "fireworks_watcher_api_calls_total"

    assert [1.0, None] == [
        first.registry.get_sample_value(name, {"outcome": "ok"}),
        second.registry.get_sample_value(name, {"outcome": "ok"}),
    ]


def test_health_is_a_loop_observer(health: Health) -> None:
    """The loop can take a Health wherever it wants an Observer."""
    observer: Observer = health
    observer.cycle_done(OK, at=T0)

    assert health.readiness()[0]


# -- HTTP details ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/", 404, None),
        ("GET", "/health", 404, None),
        ("POST", "/nope", 404, None),
        ("POST", "/healthz", 405, "GET, HEAD"),
        ("PUT", "/readyz", 405, "GET, HEAD"),
        ("DELETE", "/metrics", 405, "GET"),
        ("HEAD", "/metrics", 405, "GET"),
    ],
    ids=[
        "root",
        "near-miss",
        "post-unknown",
        "post-healthz",
        "put-readyz",
        "delete-metrics",
        "head-metrics",
    ],
)
async def test_unknown_paths_and_methods(
    health: Health, method: str, path: str, status: int, allow: str | None
) -> None:
    """Unknown paths answer 404; known paths refuse other methods with 405 and Allow."""
    async with serving(health) as client:
        response = await client.request(method, path)

    assert (status, allow) == (response.status_code, response.headers.get("allow"))


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_head_answers_without_a_body(health: Health, path: str) -> None:
    """HEAD probes get the status and headers of GET, and no body."""
    health.cycle_done(OK, at=T0)
    async with serving(health) as client:
        response = await client.head(path)

    assert (200, b"") == (response.status_code, response.content)


async def test_lifespan_is_acknowledged(health: Health) -> None:
    """Mounted where lifespan is on, the app completes startup and shutdown at once."""
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> Any:
        return next(incoming)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await health.app()({"type": "lifespan"}, receive, send)

    assert [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}] == sent


# -- serving ---------------------------------------------------------------------------------


async def test_port_in_use_is_a_listen_error(health: Health) -> None:
    """An address already taken is reported against health_listen."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as caught:
            await serve_health(health.app(), "127.0.0.1", port)

    assert str(caught.value).startswith(
        f"watcher.health_listen: cannot listen on 127.0.0.1:{port}: "
    )


async def test_cancelling_stops_the_server_and_frees_the_port(health: Health) -> None:
    """Cancelling the task group ends the server promptly, and the port can be bound again."""
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_health, health.app(), "127.0.0.1", 0)
            async with httpx.AsyncClient(trust_env=False) as client:
                first = await client.get(f"http://127.0.0.1:{port}/healthz")
            tg.cancel_scope.cancel()
        async with anyio.create_task_group() as tg:
            again = await tg.start(serve_health, health.app(), "127.0.0.1", port)
            async with httpx.AsyncClient(trust_env=False) as client:
                second = await client.get(f"http://127.0.0.1:{port}/healthz")
            tg.cancel_scope.cancel()

    assert [200, port, 200] == [first.status_code, again, second.status_code]


async def test_cancelling_with_an_open_connection_is_prompt(health: Health) -> None:
    """A keep-alive connection left open does not hold up the shutdown."""
    with anyio.fail_after(5):
        async with (
            httpx.AsyncClient(trust_env=False) as client,
            anyio.create_task_group() as tg,
        ):
            port = await tg.start(serve_health, health.app(), "127.0.0.1", 0)
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
            tg.cancel_scope.cancel()

    assert 200 == response.status_code


async def test_serving_leaves_signal_handlers_alone(health: Health) -> None:
    """The daemon owns SIGINT and SIGTERM: serving installs no handlers of its own."""
    before = [signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)]
    async with serving(health) as client:
        await client.get("/healthz")
        during = [signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)]

    assert before == during
