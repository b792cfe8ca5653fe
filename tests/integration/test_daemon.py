"""The daemon as a real subprocess: SIGKILL and restart lose and repeat nothing; SIGTERM exits 0."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fireworks_sim import Simulator
from tests.support.daemon import Daemon, run_watcher, serve_health, wait_cycles, write_config
from tests.support.servers import JsonReceiver, free_tcp_port
from tests.support.waiting import DEADLINE, wait_until

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow


@pytest.fixture
def config_path(tmp_path: Path, receiver: JsonReceiver) -> Path:
    """Two watched jobs, polled every 0.3 s, one channel on the receiver."""
    return write_config(tmp_path, [receiver.url()], watch='jobs = ["job-a", "job-b"]')


StartDaemon = Callable[..., Daemon]


@pytest.fixture
def start(config_path: Path, daemon_env: dict[str, str]) -> Iterator[StartDaemon]:
    """Starts daemons on the test's config (optionally with another environment); every one is
    killed at the end, whatever happened."""
    started: list[Daemon] = []

    def start_daemon(env: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon(config_path, daemon_env if env is None else env)
        started.append(daemon)
        return daemon

    yield start_daemon
    for daemon in started:
        daemon.close()


def started_on_two_jobs(sim: Simulator, start: StartDaemon) -> Daemon:
    """job-a and job-b RUNNING, and a daemon started that has baselined both."""
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="RUNNING")
    daemon = start()
    daemon.wait_event("job.baseline", 2)
    return daemon


def test_sigkill_and_restart_loses_and_repeats_nothing(
    sim: Simulator,
    receiver: JsonReceiver,
    config_path: Path,
    start: StartDaemon,
) -> None:
    """A daemon killed with SIGKILL and restarted reports what changed meanwhile, exactly once."""
    first = started_on_two_jobs(sim, start)

    sim.set_state("job-a", "COMPLETED")
    receiver.wait_for(1)
    first.wait_event("notify.sent")
    first.kill()
    sim.set_state("job-b", "FAILED", status_code="INTERNAL", status_message="node lost")

    serve_health(config_path)
    second = start()
    health = second.health_url()
    second.wait_event("notify.sent")
    # Several more cycles: nothing may be sent again.
    wait_cycles(health, 3)

    titles = [m["title"] for m in receiver.messages]
    assert [
        "Sim job job-a (job-a): RUNNING → COMPLETED",
        "Sim job job-b (job-b): RUNNING → FAILED: node lost",
    ] == titles
    assert "node lost" in receiver.messages[1]["message"]
    assert 0 == second.stop()


def test_sigterm_exits_zero(sim: Simulator, config_path: Path, start: StartDaemon) -> None:
    """SIGTERM stops the daemon cleanly with exit code 0."""
    daemon = started_on_two_jobs(sim, start)

    assert 0 == daemon.stop()
    assert any('"watcher.stopped"' in line for line in daemon.lines)


def test_bad_api_answers_do_not_stop_the_daemon(
    sim: Simulator,
    receiver: JsonReceiver,
    config_path: Path,
    start: StartDaemon,
) -> None:
    """Malformed JSON, 500s and 429s are logged and survived; the transition still arrives."""
    daemon = started_on_two_jobs(sim, start)

    sim.add_fault(malformed=True, times=2)
    sim.add_fault(status=500, times=6)
    sim.add_fault(status=429, retry_after="0", times=2)
    sim.set_state("job-a", "COMPLETED")

    assert "RUNNING → COMPLETED" in receiver.wait_for(1)[0]["title"]
    assert daemon.proc.poll() is None
    assert daemon.wait_event("api.error")
    assert 0 == daemon.stop()


def test_sighup_reloads_the_config_and_rejects_a_bad_one(
    sim: Simulator,
    receiver: JsonReceiver,
    config_path: Path,
    start: StartDaemon,
) -> None:
    """SIGHUP: added jobs are baselined, removed ones dropped, channels rebuilt; a bad file is refused."""
    for job in ("job-a", "job-b", "job-c"):
        sim.add_job(job, state="RUNNING")
    daemon = start()
    daemon.wait_event("job.baseline", 2)
    original = config_path.read_text()
    with JsonReceiver() as second:
        config_path.write_text(
            original.replace('jobs = ["job-a", "job-b"]', 'jobs = ["job-a", "job-c"]').replace(
                receiver.url(), second.url()
            )
        )
        daemon.proc.send_signal(signal.SIGHUP)
        reloaded = daemon.wait_event("watcher.reloaded")[0]
        assert (1, 1) == (reloaded["added"], reloaded["removed"])
        assert "dpo/job-c" == daemon.wait_event("job.baseline")[0]["job"]

        config_path.write_text(original.replace("poll_interval = 0.3", "poll_interval = -1"))
        daemon.proc.send_signal(signal.SIGHUP)
        assert "watcher.poll_interval" in daemon.wait_event("config.reload_rejected")[0]["error"]

        sim.set_state("job-b", "FAILED")
        sim.set_state("job-a", "COMPLETED")
        assert ["Sim job job-a (job-a): RUNNING → COMPLETED"] == [
            m["title"] for m in second.wait_for(1)
        ]
        assert [] == receiver.messages
        assert 0 == daemon.stop()


def test_health_endpoints_of_a_running_daemon(
    sim: Simulator,
    receiver: JsonReceiver,
    config_path: Path,
    start: StartDaemon,
) -> None:
    """The daemon serves /healthz, /readyz and /metrics; a rejected key turns /readyz 503."""
    serve_health(config_path)
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="RUNNING")
    daemon = start()
    base = daemon.health_url()
    daemon.wait_event("job.baseline", 2)
    sim.set_state("job-a", "COMPLETED")
    receiver.wait_for(1)
    daemon.wait_event("notify.sent")

    assert 200 == httpx.get(f"{base}/healthz").status_code
    assert 200 == httpx.get(f"{base}/readyz").status_code
    metrics = httpx.get(f"{base}/metrics").text
    assert 'fireworks_watcher_transitions_total{kind="dpo",new_state="COMPLETED"} 1.0' in metrics
    assert 'fireworks_watcher_notifications_total{channel="team",outcome="sent"} 1.0' in metrics
    assert "fireworks_watcher_api_request_seconds_bucket" in metrics

    sim.add_fault(status=401, times=1_000)
    daemon.wait_event("api.auth_failed")
    wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 503, "/readyz to turn 503")
    assert "credentials" in httpx.get(f"{base}/readyz").text
    assert 0 == daemon.stop()


def test_sigterm_lets_an_in_flight_send_finish(
    sim: Simulator,
    receiver: JsonReceiver,
    config_path: Path,
    start: StartDaemon,
) -> None:
    """SIGTERM during a slow send waits for it (up to 5 s), marks it, and a restart repeats nothing."""
    daemon = started_on_two_jobs(sim, start)
    receiver.delay = 2.0
    sim.set_state("job-a", "COMPLETED")
    receiver.wait_for(1)  # recorded: the daemon now waits 2 s for the answer

    stopped_at = time.monotonic()
    assert 0 == daemon.stop()
    assert time.monotonic() - stopped_at < 5.5
    assert any('"notify.sent"' in line for line in daemon.lines)

    receiver.delay = 0.0
    serve_health(config_path)
    again = start()
    health = again.health_url()
    wait_cycles(health, 3)
    assert 1 == len(receiver.messages)
    assert 0 == again.stop()


def test_sigterm_leaves_a_send_longer_than_the_grace_pending(
    sim: Simulator,
    receiver: JsonReceiver,
    start: StartDaemon,
) -> None:
    """A send still running when the 5 s grace ends is abandoned: exit 0 within the grace,
    the row stays pending, and the next start sends it again (an in-flight repeat)."""
    daemon = started_on_two_jobs(sim, start)
    receiver.delay = 8.0  # longer than the grace, shorter than notify_timeout (30 s)
    sim.set_state("job-a", "COMPLETED")
    receiver.wait_for(1)

    stopped_at = time.monotonic()
    assert 0 == daemon.stop()
    assert time.monotonic() - stopped_at < 6.0  # the grace, and a second to exit
    assert not any('"notify.sent"' in line for line in daemon.lines)
    assert any('"notify.abandoned"' in line for line in daemon.lines)

    receiver.delay = 0.0
    again = start()
    again.wait_event("notify.sent")
    assert ["Sim job job-a (job-a): RUNNING → COMPLETED"] * 2 == [
        m["title"] for m in receiver.wait_for(2)
    ]
    assert 0 == again.stop()


def test_a_second_daemon_on_the_same_state_file_exits_2(
    sim: Simulator, receiver: JsonReceiver, start: StartDaemon, config_path: Path
) -> None:
    """One daemon per state file: a second `run` (or `once`) says who holds it, exit 2; the
    first keeps delivering each transition once."""
    first = started_on_two_jobs(sim, start)

    second = start()
    code = second.proc.wait(timeout=20)
    once = run_watcher("once", "-c", str(config_path), env=first.env)
    sim.set_state("job-a", "COMPLETED")
    receiver.wait_for(1)
    first.wait_event("notify.sent")

    errors = [line for line in second.lines if line.startswith("fireworks-watcher: error:")]
    assert 2 == code
    assert [f"pid {first.proc.pid}"] == [e.split("(")[-1].rstrip(")\n") for e in errors]
    assert 2 == once.returncode
    assert f"in use by another fireworks-watcher (pid {first.proc.pid})" in once.stderr
    assert "Traceback" not in "".join(second.lines) + once.stderr
    assert 1 == len(receiver.messages)
    assert 0 == first.stop()


def test_health_port_in_use_is_one_line_and_exit_2(
    sim: Simulator, config_path: Path, start: StartDaemon
) -> None:
    """A health port already taken stops `run` at once: one line naming the key, exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve_health(config_path, f"127.0.0.1:{port}")
        daemon = start()
        code = daemon.proc.wait(timeout=20)
        daemon.close()

    assert 2 == code
    expected = (
        f"fireworks-watcher: error: watcher.health_listen: cannot listen on 127.0.0.1:{port}:"
        " Address already in use\n"
    )
    assert [expected] == [line for line in daemon.lines if not line.startswith("{")]


def test_systemd_notify_protocol(
    sim: Simulator,
    config_path: Path,
    daemon_env: dict[str, str],
    start: StartDaemon,
    tmp_path: Path,
) -> None:
    """Under systemd the daemon sends READY=1, a WATCHDOG=1 beat, RELOADING=1 and STOPPING=1."""
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="RUNNING")
    socket_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify_socket:
        notify_socket.bind(str(socket_path))
        notify_socket.settimeout(DEADLINE)
        env = daemon_env | {"NOTIFY_SOCKET": str(socket_path), "WATCHDOG_USEC": "600000"}
        daemon = start(env)

        def next_message() -> str:
            return notify_socket.recv(4096).decode()

        def wait_for(prefix: str) -> list[str]:
            seen: list[str] = []
            while not (seen and seen[-1].startswith(prefix)):
                seen.append(next_message())
            return seen

        assert "READY=1\nSTATUS=watching" == next_message()
        beats = [wait_for("WATCHDOG=1") for _ in range(4)]
        daemon.proc.send_signal(signal.SIGHUP)
        reload_messages = wait_for("RELOADING=1")
        assert "MONOTONIC_USEC=" in reload_messages[-1]
        wait_for("READY=1")
        daemon.proc.send_signal(signal.SIGTERM)
        wait_for("STOPPING=1")
        assert 0 == daemon.proc.wait(timeout=15)

    assert 4 == len(beats)


def test_healthcheck_command(
    sim: Simulator,
    config_path: Path,
    daemon_env: dict[str, str],
    start: StartDaemon,
) -> None:
    """`fireworks-watcher healthcheck` exits 0 while the daemon is healthy and 1 once it is gone."""
    port = free_tcp_port()
    serve_health(config_path, f"0.0.0.0:{port}")

    def healthcheck() -> subprocess.CompletedProcess[str]:
        return run_watcher("healthcheck", "-c", str(config_path), env=daemon_env, timeout=30)

    daemon = started_on_two_jobs(sim, start)
    healthy = healthcheck()
    assert 0 == daemon.stop()
    gone = healthcheck()

    assert (0, f"http://127.0.0.1:{port}/healthz: 200\n") == (healthy.returncode, healthy.stdout)
    assert 1 == gone.returncode
    assert 1 == len(gone.stderr.strip().splitlines())
