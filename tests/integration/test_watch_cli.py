"""`watch` and `history` as a newcomer meets them (issue 20, items 1, 3, 4 and 7): a typo of the
id or the kind is a usage error naming where the id lives, a notification does not garble the
live line, errors come alone and say what they mean, flags take durations and any case."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.servers import ServedApp
from tests.support.terminal import watch_on_a_terminal
from watcher.cli import main
from watcher.core.decision import Decision
from watcher.core.delivery import Event
from watcher.core.errors import ApiUnavailable
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef, JobSnapshot
from watcher.sources.fireworks import FireworksClient
from watcher.sources.retry import RequestRetry
from watcher.stores.sqlite import StateStore

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

#: An SGR (colour) sequence: what is left of a line without them is what a person sees.
SGR = re.compile(r"\x1b\[[0-9;]*m")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def gets(sim: Simulator, job_id: str) -> Counter[str]:
    """GET requests for `job_id` by collection."""
    return Counter(
        path.split("/")[-2]
        for method, path in sim.requests
        if method == "GET" and path.endswith(f"/{job_id}")
    )


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestTypo:
    def test_a_wrong_kind_exits_2_naming_the_kind_that_has_the_id(
        self, env: None, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`watch live2` (dpo) where live2 is an SFT job and a deployment: exit 2, one line
        saying where the id is, nothing on stdout; each other kind asked exactly once."""
        sim.add_job("live2", collection="supervisedFineTuningJobs", state="RUNNING")
        sim.add_job("live2", collection="deployments", state="READY")

        code, out, err = cli(capsys, "watch", "live2", "--interval", "0.1")

        assert (2, "") == (code, out)
        assert (
            "fireworks-watcher: error: no dpo job live2 in account acme; "
            "other kinds have: sft/live2, deployment/live2\n"
        ) == err
        listable = [kind for kind in JobKind if kind.spec.listable]  # not the account
        assert Counter({kind.collection: 1 for kind in listable}) == gets(sim, "live2")

    def test_a_404_after_the_resource_was_seen_is_its_end(
        self, sim: Simulator, daemon_env: dict[str, str]
    ) -> None:
        """Only a resource never seen is a typo: one this watch saw, then a 404, ends with
        exit 1 and its NOT_FOUND line, and no other kind is asked; never seen, exit 2."""
        sim.add_job("job-g", state="RUNNING")
        with subprocess.Popen(
            [sys.executable, "-m", "watcher", "watch", "job-g", "--interval", "0.1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon_env,
        ) as proc:  # fmt: skip
            assert proc.stdout is not None
            first = proc.stdout.readline()  # the first sight
            sim.remove_job("job-g")
            out, err = proc.communicate(timeout=60)
        again = subprocess.run(
            [sys.executable, "-m", "watcher", "watch", "job-g", "--interval", "0.1"],
            capture_output=True, text=True, env=daemon_env, timeout=60, check=False,
        )  # fmt: skip

        assert (1, "") == (proc.returncode, err)
        assert first.endswith(" dpo/job-g: RUNNING\n")
        assert out.endswith(" dpo/job-g: RUNNING → NOT_FOUND\n")
        assert (2, "") == (again.returncode, again.stdout)
        assert again.stderr.endswith("no dpo job job-g in account acme; no other kind has it\n")


class TestMessages:
    @pytest.mark.parametrize("log_format", ["", "json"])
    def test_a_rejected_key_is_one_line_without_log_lines(
        self,
        env: None,
        sim: Simulator,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
        log_format: str,
    ) -> None:
        """Piped, a rejected key is the one error line: no log line (JSON or not) before it."""
        sim.add_job("job-k", state="RUNNING")
        monkeypatch.setenv("FIREWORKS_API_KEY", "bad-key-42424242")
        monkeypatch.setenv("FIREWORKS_WATCHER_LOG_FORMAT", log_format)

        code, out, err = cli(capsys, "watch", "job-k", "--interval", "0.1")

        assert (2, "") == (code, out)
        assert (
            "fireworks-watcher: error: the API rejected the key (HTTP 401): "
            "check FIREWORKS_API_KEY\n"
        ) == err

    def test_piped_logs_are_lines_to_read(
        self, env: None, sim: Simulator, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:  # fmt: skip
        """Logs asked for with --log-level are readable lines when piped, not JSON."""
        monkeypatch.delenv("FIREWORKS_WATCHER_LOG_FORMAT")
        sim.add_job("job-l", state="PENDING")
        sim.script("job-l", [(0.3, "COMPLETED", "OK", "")])

        code, _, err = cli(capsys, "--log-level", "info", "watch", "job-l", "--interval", "0.1")

        assert 0 == code
        assert "job.transition" in err
        assert not [line for line in err.splitlines() if line.startswith("{")]

    def test_timeout_with_the_api_unreachable_says_so(
        self,
        env: None,
        closed_port: int,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`--timeout` while nothing answers: the API is unreachable, at which host and port,
        said once while waiting and in the last line, never the key."""
        monkeypatch.setenv("FIREWORKS_BASE_URL", f"http://127.0.0.1:{closed_port}")

        code, out, err = cli(capsys, "watch", "job-u", "--interval", "1", "--timeout", "4s")

        where = f"127.0.0.1:{closed_port}"
        note, last = err.splitlines()
        assert (3, "") == (code, out)
        assert note.startswith(f"fireworks-watcher: API unreachable ({where}): GET ")
        assert note.endswith("; trying again")
        assert last.startswith(f"fireworks-watcher: error: --timeout: API unreachable ({where}): ")
        assert f"ConnectError: cannot connect to {where}" in last
        assert last.endswith("; dpo/job-u not seen after 4 s")
        assert KEY not in err

    async def test_a_connect_error_names_the_host_and_port(self, closed_port: int) -> None:
        """The client's error for a refused connection says where it tried to connect."""
        async with httpx.AsyncClient() as http:
            client = FireworksClient(
                http,
                account_id=ACCOUNT,
                api_key=KEY,
                base_url=f"http://127.0.0.1:{closed_port}",
                retry=RequestRetry(attempts=1),
            )
            with pytest.raises(ApiUnavailable) as info:
                await client.get_job(JobRef(JobKind.DPO, "j"))

        assert f"ConnectError: cannot connect to 127.0.0.1:{closed_port}" in str(info.value)
        assert KEY not in str(info.value)

    def test_a_missing_key_names_the_one_way_to_give_it(
        self, env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.delenv("FIREWORKS_API_KEY")

        code, out, err = cli(capsys, "watch", "job-x")

        assert (2, "") == (code, out)
        assert (
            "fireworks-watcher: error: missing API key: set FIREWORKS_API_KEY "
            "(watch reads no config file)\n"
        ) == err


class TestFlags:
    def test_kind_and_log_level_in_any_case(
        self, env: None, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`--kind SFT` and `--log-level DEBUG` are what `sft` and `debug` are."""
        sim.add_job("job-s", collection="supervisedFineTuningJobs", state="COMPLETED")

        code, out, _ = cli(
            capsys, "--log-level", "DEBUG", "watch", "job-s", "--kind", "SFT", "--interval", "0.1"
        )

        assert 0 == code
        assert out.endswith(" sft/job-s: COMPLETED\n")

    @pytest.mark.parametrize(
        ("timeout", "shown"),
        [pytest.param("1s", "1", id="1s"), pytest.param("0.01m", "0.6", id="minutes")],
    )
    def test_durations(
        self, env: None, sim: Simulator, capsys: pytest.CaptureFixture[str], timeout: str,
        shown: str,
    ) -> None:  # fmt: skip
        """`--timeout` and `--interval` take `90s`, `30m`, `2h` or seconds."""
        sim.add_job("job-d", state="RUNNING")

        code, _, err = cli(capsys, "watch", "job-d", "--interval", "0.1", "--timeout", timeout)

        assert 3 == code
        assert f"--timeout: dpo/job-d is still RUNNING after {shown} s\n" in err

    def test_minutes_and_hours(
        self, env: None, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        sim.add_job("job-m", state="COMPLETED")

        code, _, err = cli(capsys, "watch", "job-m", "--interval", "1m", "--timeout", "2h")

        assert (0, "") == (code, err)

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            pytest.param(["--interval", "5x"], "--interval: must be a duration", id="unit"),
            pytest.param(["--timeout", "0s"], "--timeout: must be more than 0", id="zero"),
            pytest.param(["--timeout", "2y"], "--timeout: must be a duration", id="years"),
        ],
    )
    def test_bad_durations_are_one_line(
        self, env: None, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
    ) -> None:
        code, out, err = cli(capsys, "watch", "j", *argv)

        assert (2, "") == (code, out)
        assert 1 == len(err.splitlines())
        assert message in err


def test_a_console_notification_clears_the_live_line_first(
    sim: Simulator, server: ServedApp
) -> None:
    """`watch --notify console://` on a terminal: the notification starts on a cleared line
    (never after the live line's text), and the live line is drawn again after it."""
    sim.add_job("job-c", collection="supervisedFineTuningJobs", state="RUNNING", progress=10)

    code, shown = watch_on_a_terminal(
        server.url,
        ["job-c", "--kind", "sft", "--interval", "0.2", "--notify", "console://"],
        when="sft/job-c: RUNNING",  # the first sight, printed above the live line
        then=lambda: sim.set_state(
            "job-c", "FAILED", collection="supervisedFineTuningJobs", status_message="boom"
        ),
    )

    assert 1 == code
    title = "Sim job job-c (job-c): RUNNING → FAILED: boom"
    at = shown.index(title)
    # What the line holds before the title: since the last newline or erase-line, nothing but
    # the notification's own badge.
    line = re.split(r"\n|\x1b\[2K", SGR.sub("", shown[:at]))[-1]
    assert "[failure] " == line.lstrip("\r")
    after = SGR.sub("", shown[at:])
    assert "sft/job-c  Sim job job-c  FAILED " in after  # the live line, drawn again


@pytest.fixture
def history_config(tmp_path: Path) -> Path:
    """A state that knows dpo/quiet-job (no event) and dpo/old-job (an event 30 days ago)."""
    now = datetime.now(UTC)
    old = Event("dpo/old-job", "RUNNING", "FAILED", now - timedelta(days=30), ())
    quiet = JobSnapshot(ref=JobRef(JobKind.DPO, "quiet-job"), account_id=ACCOUNT, state="RUNNING")
    with StateStore.open(tmp_path / "state.db") as store:
        store.record(Decision([quiet], [], now=now, events=[old]))
    config = tmp_path / "watcher.toml"
    config.write_text(f'[watcher]\nstate_path = "{tmp_path / "state.db"}"\nhealth_listen = ""\n')
    return config


def test_history_tells_a_job_the_state_never_saw_from_a_quiet_one(
    history_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`history nope-job` is a typo: exit 2, one line; a known job without events in the window
    (or without any) is no error."""
    table = [
        ("nope-job", 2, "fireworks-watcher: error: no job nope-job in the state ("),
        ("nope-*", 2, "fireworks-watcher: error: no job matching nope-* in the state ("),
        ("quiet-job", 0, "no events since "),
        ("dpo/old-job", 0, "no events since "),
        ("*-job", 0, "no events since "),
    ]
    for job, code, said in table:
        exit_code, out, err = cli(capsys, "history", job, "-c", str(history_config))

        assert code == exit_code, job
        assert (out + err).startswith(said), job
        assert 1 == len((out + err).splitlines())


def test_history_without_state_knows_no_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "watcher.toml"
    config.write_text(f'[watcher]\nstate_path = "{tmp_path / "none.db"}"\n')

    code, out, err = cli(capsys, "history", "nope-job", "-c", str(config))

    assert (2, "") == (code, out)
    assert "no job nope-job in the state" in err
    assert not (tmp_path / "none.db").exists()


def test_watch_help_names_durations(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["watch", "--help"])

    assert "--timeout DURATION" in capsys.readouterr().out
