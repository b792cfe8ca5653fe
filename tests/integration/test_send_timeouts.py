"""Slow channels: socket timeouts follow `notify_timeout`, and a stop keeps its grace.

A receiver that answers within `notify_timeout` gets each message once (apprise's own read
timeout, 4 s for `json://`, used to give up first: the message had arrived, was logged as
failed and sent again for a day). A send that outlives `notify_timeout` is maybe-delivered,
counted in `fireworks_watcher_notifications_maybe_delivered_total`. A send still running when
SIGTERM's 5 s grace ends is abandoned: the daemon exits within grace + 1 s whatever
`notify_timeout` is, the row stays pending, and the next start sends it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fireworks_sim import Simulator
from tests.support.daemon import Daemon, write_config
from tests.support.servers import JsonReceiver
from watcher.core.delivery import SendOutcome
from watcher.notify.apprise_sender import AppriseNotifier, url_key

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

#: The stop's grace (the daemon's default) and the most a stop may take beyond it.
GRACE = 5.0
EXIT_SLACK = 1.0
COMPLETED = "Sim job job-a (job-a): RUNNING → COMPLETED"


def metric(base: str, name: str, **labels: str) -> float:
    """One sample of the daemon's /metrics (0 when the series does not exist)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if wanted else f"{name} "
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


def outbox_rows(db: Path) -> list[tuple[str, int, str, str]]:
    """(status, failed attempts, claim, last_error) of every outbox row, oldest first."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        return [
            (str(s), int(a), str(c), str(e))
            for s, a, c, e in conn.execute(
                "SELECT status, attempts, claim, last_error FROM outbox ORDER BY id"
            )
        ]
    finally:
        conn.close()


@pytest.fixture
def daemons(daemon_env: dict[str, str]) -> Iterator[list[Daemon]]:
    """Daemons a test starts (append them); each is killed at the end if it still runs."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.close()


def started(
    sim: Simulator, config: Path, env: dict[str, str], daemons: list[Daemon]
) -> tuple[Daemon, str]:
    """job-a RUNNING, and a daemon on `config` that has baselined it; its health base URL."""
    sim.add_job("job-a", state="RUNNING")
    daemon = Daemon(config, env)
    daemons.append(daemon)
    base = daemon.health_url()  # before the baseline: waiting for an event skips the earlier
    daemon.wait_event("job.baseline")
    return daemon, base


@pytest.mark.slow
def test_a_receiver_answering_in_25s_gets_each_message_once_at_defaults(
    sim: Simulator,
    receiver: JsonReceiver,
    tmp_path: Path,
    daemon_env: dict[str, str],
    daemons: list[Daemon],
) -> None:
    """At the default `notify_timeout` (30 s) a receiver that answers after 25 s gets each
    message once: three URLs (three lanes, in parallel), one message each, no repeat, no
    failure, nothing maybe-delivered."""
    paths = ["/hook-a", "/hook-b", "/hook-c"]
    config = write_config(tmp_path, [receiver.url(p) for p in paths], health=True)
    daemon, base = started(sim, config, daemon_env, daemons)
    receiver.delay = 25.0

    sim.set_state("job-a", "COMPLETED")
    receiver.wait_for(3)  # all three arrived; each answer comes 25 s later
    daemon.wait_event("notify.sent", 3, timeout=45.0)

    assert sorted(paths) == sorted(m["path"] for m in receiver.messages)
    assert [COMPLETED] * 3 == [m["title"] for m in receiver.messages]
    assert not any('"notify.failed"' in line for line in daemon.lines)
    assert 3 == metric(
        base, "fireworks_watcher_notifications_total", channel="team", outcome="sent"
    )
    assert 0 == metric(
        base, "fireworks_watcher_notifications_total", channel="team", outcome="failed"
    )
    assert 0 == metric(
        base, "fireworks_watcher_notifications_maybe_delivered_total", channel="team"
    )
    assert [("delivered", 0)] * 3 == [(s, a) for s, a, _, _ in outbox_rows(tmp_path / "state.db")]
    assert 0 == daemon.stop()


def test_a_send_past_notify_timeout_is_counted_maybe_delivered(
    sim: Simulator,
    receiver: JsonReceiver,
    tmp_path: Path,
    daemon_env: dict[str, str],
    daemons: list[Daemon],
) -> None:
    """A send that times out after its request went out may have arrived: it is counted in
    `..._maybe_delivered_total` and sent again (the one documented possible duplicate)."""
    config = write_config(tmp_path, [receiver.url()], health=True, watcher="notify_timeout = 1")
    daemon, base = started(sim, config, daemon_env, daemons)
    receiver.delay = 3.0

    sim.set_state("job-a", "COMPLETED")
    failed = daemon.wait_event("notify.failed", 1, timeout=20.0)[0]
    receiver.delay = 0.0
    daemon.wait_event("notify.sent")

    assert "maybe_delivered" == failed["outcome"]
    assert "it may have arrived" in failed["error"]
    assert 1 == metric(
        base, "fireworks_watcher_notifications_maybe_delivered_total", channel="team"
    )
    assert 1 == metric(
        base, "fireworks_watcher_notifications_total", channel="team", outcome="sent"
    )
    assert [COMPLETED] * 2 == [m["title"] for m in receiver.messages]
    assert 0 == daemon.stop()


@pytest.mark.parametrize("rto", ["", "?rto=120"], ids=["timeouts-from-notify_timeout", "url-rto"])
def test_sigterm_abandons_a_60s_send_after_the_grace(
    sim: Simulator,
    receiver: JsonReceiver,
    tmp_path: Path,
    daemon_env: dict[str, str],
    daemons: list[Daemon],
    rto: str,
) -> None:
    """SIGTERM during a 60 s send (`notify_timeout` 90 s, above the 45 s that systemd and
    Kubernetes allow a stop): exit 0 within grace + 1 s; the row stays pending as in flight
    (never settled); the next start sends it (the documented in-flight repeat)."""
    config = write_config(
        tmp_path, [receiver.url() + rto], health=True, watcher="notify_timeout = 90"
    )
    first, _ = started(sim, config, daemon_env, daemons)
    receiver.delay = 60.0
    sim.set_state("job-a", "COMPLETED")
    receiver.wait_for(1)  # the post arrived; its answer would come in 60 s

    stopped_at = time.monotonic()
    code = first.stop()
    took = time.monotonic() - stopped_at
    first.close()

    assert 0 == code
    assert took < GRACE + EXIT_SLACK, f"exited {took:.1f} s after SIGTERM"
    assert not any('"notify.sent"' in line or '"notify.failed"' in line for line in first.lines)
    [(status, attempts, claim, error)] = outbox_rows(tmp_path / "state.db")
    assert ("pending", 0, "") == (status, attempts, error)
    assert claim  # still claimed by the stopped daemon: in flight
    assert any('"notify.abandoned"' in line for line in first.lines)

    receiver.delay = 0.0
    again = Daemon(config, daemon_env)
    daemons.append(again)
    again.wait_event("notify.sent")
    assert [COMPLETED] * 2 == [m["title"] for m in receiver.wait_for(2)]
    assert [("delivered", 0)] == [(s, a) for s, a, _, _ in outbox_rows(tmp_path / "state.db")]
    assert 0 == again.stop()


async def test_socket_timeouts_follow_notify_timeout_unless_the_url_sets_them(
    receiver: JsonReceiver,
) -> None:
    """A receiver answering in 5 s (past apprise's 4 s read timeout) is a delivery at the
    default 30 s; a URL's own `rto` wins; past `notify_timeout` a send is maybe-delivered at
    once; the display form and `url_key` are those of the configured URL."""
    receiver.delay = 5.0
    plain, own_rto = receiver.url(), receiver.url() + "?rto=1"
    notifier = AppriseNotifier([("c[0]", plain), ("c[1]", own_rto)])

    delivered = await notifier.send(url_key(plain), title="a", body="b", notify_type="info")
    began = time.monotonic()
    gave_up = await notifier.send(url_key(own_rto), title="a", body="b", notify_type="info")
    own_rto_took = time.monotonic() - began

    assert SendOutcome.DELIVERED == delivered.outcome
    assert SendOutcome.FAILED == gave_up.outcome
    assert own_rto_took < 4.0
    assert "rto" not in notifier.target(plain).url_display
    assert "cto" not in notifier.target(plain).url_display
    assert "rto=1" in notifier.target(own_rto).url_display
    assert {url_key(plain), url_key(own_rto)} == set(notifier.targets)

    short = AppriseNotifier([("c[0]", plain)], timeout=1.0)
    began = time.monotonic()
    late = await short.send(url_key(plain), title="a", body="b", notify_type="info")
    assert SendOutcome.MAYBE_DELIVERED == late.outcome
    assert time.monotonic() - began < 2.0
    assert 3 == len(await receiver.wait_for_async(3))
