"""The `fireworks-watcher` command: exit codes, one-line errors, output, against the simulator."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT
from tests.support.daemon import run_watcher
from tests.support.servers import JsonReceiver
from watcher.cli import main

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "watcher.toml"
    path.write_text(body)
    return path


@pytest.fixture
def config_file(tmp_path: Path, receiver: JsonReceiver, env: None) -> Path:
    """A config watching two DPO jobs with one channel on the receiver (password in the URL)."""
    url = receiver.url(user="bot", password="hunter2-pw")
    return write_config(
        tmp_path,
        f"""
[watcher]
poll_interval = 1
state_path = "{tmp_path / "state.db"}"
health_listen = ""

[[watch]]
kind = "dpo"
jobs = ["job-a", "accounts/{ACCOUNT}/dpoJobs/job-b"]

[[channel]]
name = "team"
urls = ["{url}"]
""",
    )


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def replace_in(path: Path, old: str, new: str) -> None:
    """Edit the file at `path`: `old` becomes `new`."""
    path.write_text(path.read_text().replace(old, new))


def baselined(sim: Simulator, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """job-a RUNNING and job-b PENDING, seen (silently, a baseline) by one `once`."""
    sim.add_job("job-a", state="RUNNING")
    sim.add_job("job-b", state="PENDING")
    assert 0 == run_cli(capsys, "once", "-c", str(config))[0]


def watch_completing(
    sim: Simulator, capsys: pytest.CaptureFixture[str], *before: str
) -> tuple[int, str, str]:
    """`[BEFORE] watch job-w` on a PENDING job that completes 0.3 s in."""
    sim.add_job("job-w", state="PENDING")
    sim.script("job-w", [(0.3, "COMPLETED", "OK", "")])
    return run_cli(capsys, *before, "watch", "job-w", "--interval", "0.1")


class TestCheck:
    def test_valid_config(
        self, config_file: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A valid config is summarised with masked URLs and exit 0."""
        code, out, _ = run_cli(capsys, "check", "-c", str(config_file))

        assert 0 == code
        assert "channel team:" in out
        assert "hunter2-pw" not in out
        assert "2 listed" in out

    def test_budget_is_summarised(
        self, config_file: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`check` says what a cycle costs and when the budget stretches the interval."""
        code, out, _ = run_cli(capsys, "check", "-c", str(config_file))
        assert 0 == code
        assert "API budget: 60 requests/min; a full cycle costs 2 request(s)" in out
        assert "effective interval is 2 s" in out  # 2 GETs a second is 120/min

        replace_in(config_file, "poll_interval = 1", "poll_interval = 30")
        _, out, _ = run_cli(capsys, "check", "-c", str(config_file))
        assert "effective interval" not in out

    def test_probe_counts_discovered_pages(
        self, tmp_path: Path, env: None, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With --probe, discovered kinds are listed and their pages counted in the budget."""
        for i in range(450):
            sim.add_job(f"job-{i:03d}", state="RUNNING")
        path = write_config(
            tmp_path,
            '[watcher]\nhealth_listen = ""\n[[watch]]\nkind = "dpo"\ndiscover = true\n',
        )

        code, out, _ = run_cli(capsys, "check", "--probe", "-c", str(path))

        assert 0 == code
        assert "probe dpo: 450 jobs listed in 3 page(s)" in out
        assert "a full cycle costs 3 request(s)\n" in out

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            pytest.param("[watcher]\npoll_intervl = 3\n", "poll_intervl", id="unknown key"),
            pytest.param(
                '[watcher]\npoll_interval = -1\n[[watch]]\njobs=["a"]\n',
                "watcher.poll_interval",
                id="bad value",
            ),
            pytest.param("[watcher\n", "line 1", id="toml syntax"),
            pytest.param(
                '[[watch]]\njobs=["a"]\n[[channel]]\nname="x"\nurls=["notaurl://x"]\n',
                "channel[0].urls[0]",
                id="url apprise cannot use",
            ),
            pytest.param(
                '[[watch]]\njobs=["a"]\n[[channel]]\nname="x"\nurls=["${NOPE_UNSET}"]\n',
                "NOPE_UNSET",
                id="unset variable",
            ),
        ],
    )
    def test_invalid_config_is_one_line_and_exit_2(
        self,
        tmp_path: Path,
        env: None,
        body: str,
        expected: str,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Every bad config exits 2 with one line on stderr naming the key, and no traceback."""
        code, out, err = run_cli(capsys, "check", "-c", str(write_config(tmp_path, body)))

        assert 2 == code
        assert 1 == len(err.strip().splitlines())
        assert expected in err
        assert "Traceback" not in out + err

    def test_missing_api_key_names_the_variable(
        self,
        config_file: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Without a key the error says which variable to set."""
        monkeypatch.delenv("FIREWORKS_API_KEY")

        code, _, err = run_cli(capsys, "check", "-c", str(config_file))

        assert 2 == code
        assert "FIREWORKS_API_KEY" in err

    def test_missing_config_file(
        self, tmp_path: Path, env: None, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A config path that does not exist is named in a one-line error."""
        code, _, err = run_cli(capsys, "run", "-c", str(tmp_path / "nope.toml"))

        assert 2 == code
        assert "nope.toml" in err

    def test_probe_reports_each_job(
        self, config_file: Path, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`--probe` calls the API once per job and shows its state."""
        sim.add_job("job-a", state="RUNNING")
        sim.add_job("job-b", state="COMPLETED")

        code, out, _ = run_cli(capsys, "check", "--probe", "-c", str(config_file))

        assert 0 == code
        assert "dpo/job-a: RUNNING" in out
        assert "dpo/job-b: COMPLETED" in out

    def test_probe_fails_on_missing_job_and_bad_key(
        self,
        config_file: Path,
        sim: Simulator,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A job that does not exist, or a rejected key, makes the probe exit 2."""
        sim.add_job("job-a", state="RUNNING")
        assert 2 == run_cli(capsys, "check", "--probe", "-c", str(config_file))[0]

        sim.add_job("job-b")
        monkeypatch.setenv("FIREWORKS_API_KEY", "wrong-key-xyz")
        code, out, err = run_cli(capsys, "check", "--probe", "-c", str(config_file))
        assert 2 == code
        assert "401" in err
        assert "wrong-key-xyz" not in out + err


class TestOnceAndStatus:
    def test_once_then_status(
        self,
        config_file: Path,
        sim: Simulator,
        receiver: JsonReceiver,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`once` baselines then announces; `status` shows states and an empty outbox."""
        baselined(sim, config_file, capsys)
        sim.set_state("job-a", "FAILED", status_code="INTERNAL", status_message="disk full")

        assert 0 == run_cli(capsys, "once", "-c", str(config_file))[0]
        code, out, _ = run_cli(capsys, "status", "-c", str(config_file))

        assert 0 == code
        assert "RUNNING → FAILED" in receiver.wait_for(1)[0]["title"]
        assert "dpo/job-a" in out
        assert "INTERNAL: disk full" in out
        assert "every notification delivered" in out

    def test_status_lists_undelivered_without_secrets(
        self,
        config_file: Path,
        sim: Simulator,
        receiver: JsonReceiver,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A failed delivery shows in `status` and `status --json` with its masked URL."""
        baselined(sim, config_file, capsys)
        receiver.status = 503
        sim.set_state("job-b", "RUNNING")

        assert 1 == run_cli(capsys, "once", "-c", str(config_file))[0]
        _, text, _ = run_cli(capsys, "status", "-c", str(config_file))
        _, raw, _ = run_cli(capsys, "status", "--json", "-c", str(config_file))

        document = json.loads(raw)
        assert ["pending"] == [d["status"] for d in document["undelivered"]]
        assert "PENDING" == document["undelivered"][0]["old_state"]
        assert "1 undelivered notification(s)" in text
        assert "hunter2-pw" not in text + raw

    def test_status_needs_no_channel_secret_account_or_key(
        self,
        config_file: Path,
        sim: Simulator,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """An operator without the secrets reads the state: `${VAR}` in channel URLs unset, no
        account, no API key; the URLs show in their stored privacy form."""
        sim.add_job("job-a", state="RUNNING")
        run_cli(capsys, "once", "-c", str(config_file))
        replace_in(config_file, "hunter2-pw", "${UNSET_CHANNEL_SECRET}")
        for name in ("FIREWORKS_API_KEY", "FIREWORKS_ACCOUNT_ID", "UNSET_CHANNEL_SECRET"):
            monkeypatch.delenv(name, raising=False)

        code, out, err = run_cli(capsys, "status", "-c", str(config_file))

        assert (0, "") == (code, err.strip())
        assert "dpo/job-a" in out

    def test_status_without_state_yet(
        self, config_file: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Before the first run `status` says there is no state and exits 0."""
        code, out, _ = run_cli(capsys, "status", "-c", str(config_file))

        assert 0 == code
        assert "no state yet" in out


class TestTestNotify:
    def test_reports_each_url(
        self, config_file: Path, receiver: JsonReceiver, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A test message reaches every channel URL; a failing one exits 1."""
        code, out, _ = run_cli(capsys, "test-notify", "-c", str(config_file))
        assert 0 == code
        assert "team json://bot:****@" in out
        assert "delivered" in out
        assert "fireworks-watcher test" == receiver.wait_for(1)[0]["title"]

        receiver.status = 500
        code, out, _ = run_cli(capsys, "test-notify", "-c", str(config_file), "team")
        assert 1 == code
        assert "failed" in out

    def test_unknown_channel(self, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Naming a channel that does not exist is a usage error."""
        code, _, err = run_cli(capsys, "test-notify", "-c", str(config_file), "nope")

        assert 2 == code
        assert "nope" in err


class TestWatch:
    @pytest.mark.parametrize(
        ("final", "expected_code"),
        [
            pytest.param("COMPLETED", 0, id="completed"),
            pytest.param("FAILED", 1, id="failed"),
            pytest.param("CANCELLED", 1, id="cancelled"),
            pytest.param("EXPIRED", 1, id="expired"),
        ],
    )
    def test_exit_code_follows_the_outcome(
        self,
        env: None,
        sim: Simulator,
        final: str,
        expected_code: int,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`watch` follows a job to its outcome, printing each transition; the exit code tells it."""
        sim.add_job("job-w", state="PENDING")
        sim.script(
            "job-w", [(0.3, "RUNNING", "OK", ""), (0.8, final, "OK", f"ended {final.lower()}")]
        )

        code, out, _ = run_cli(capsys, "watch", "job-w", "--interval", "0.1")

        assert expected_code == code
        assert "job-w: PENDING" in out
        assert f"RUNNING → {final}" in out

    def test_each_transition_is_printed_once_and_logs_stay_quiet(
        self, env: None, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """stdout has each transition once; stderr has no info log of it (warning level, unless
        `--log-level` asks for more)."""
        code, out, err = watch_completing(sim, capsys)

        assert 0 == code
        assert 1 == out.count("PENDING → COMPLETED")
        assert "job.transition" not in err
        assert "job.baseline" not in err

    def test_log_level_brings_the_info_logs_back(
        self, env: None, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, _, err = watch_completing(sim, capsys, "--log-level", "info")

        assert 0 == code
        assert "job.transition" in err

    def test_missing_job(
        self, env: None, sim: Simulator, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A job that never existed ends `watch` as a usage error, exit 2 (issue 20: it was
        exit 1, like a job that failed)."""
        code, out, err = run_cli(capsys, "watch", "no-such-job", "--interval", "0.1")

        assert (2, "") == (code, out)
        assert "no dpo job no-such-job in account acme; no other kind has it" in err

    def test_notifies_urls(
        self,
        env: None,
        sim: Simulator,
        receiver: JsonReceiver,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """`--notify URL` sends each transition (not the first sighting) to the URL."""
        sim.add_job("job-n", state="RUNNING")
        sim.script("job-n", [(0.3, "COMPLETED", "OK", "")])

        code = run_cli(
            capsys, "watch", "accounts/acme/dpoJobs/job-n", "--interval", "0.1",
            "--notify", receiver.url(),
        )[0]  # fmt: skip

        assert 0 == code
        assert ["Sim job job-n (job-n): RUNNING → COMPLETED"] == [
            m["title"] for m in receiver.wait_for(1)
        ]

    @pytest.mark.parametrize(
        "argv",
        [
            pytest.param(["watch"], id="no job"),
            pytest.param(["watch", "j", "--interval", "0"], id="zero interval"),
            pytest.param(["watch", "j", "--kind", "nope"], id="bad kind"),
        ],
    )
    def test_usage_errors_exit_2(
        self, env: None, argv: list[str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Bad arguments exit 2 without a traceback."""
        try:
            code = main(argv)
        except SystemExit as exited:  # argparse exits by itself
            code = exited.code  # type: ignore[assignment]
        out, err = capsys.readouterr()

        assert 2 == code
        assert "Traceback" not in out + err

    def test_rejected_key_exits_2(
        self,
        env: None,
        sim: Simulator,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """A key the API rejects is a usage error, said once, never shown."""
        sim.add_job("job-k", state="RUNNING")
        monkeypatch.setenv("FIREWORKS_API_KEY", "bad-key-42424242")

        code, out, err = run_cli(capsys, "watch", "job-k", "--interval", "0.1")

        assert 2 == code
        assert "FIREWORKS_API_KEY" in err
        assert "bad-key-42424242" not in out + err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` names each command of the contract."""
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    out = capsys.readouterr().out

    assert 0 == exited.value.code
    for command in ("run", "check", "once", "watch", "status", "test-notify", "demo", "simulate"):
        assert command in out


def without_fireworks_env() -> dict[str, str]:
    """This environment without any FIREWORKS_ variable: the demo needs no account."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_")}


def test_demo_shows_completed_and_failed() -> None:
    """`fireworks-watcher demo` needs no account, ends with exit 0 and shows jobs finishing,
    in few lines of plain text when piped."""
    done = run_watcher("demo", env=without_fireworks_env(), timeout=90)

    assert 0 == done.returncode, done.stderr
    assert "RUNNING → COMPLETED" in done.stdout
    assert "RUNNING → FAILED" in done.stdout
    assert "CUDA out of memory" in done.stdout
    # Piped, console:// prints clean text: no Markdown marks, no ANSI codes (issue 13).
    assert "**" not in done.stdout
    assert "`" not in done.stdout
    assert "\x1b[" not in done.stdout
    # One transition takes two or three lines, not nine.
    lines = done.stdout.splitlines()
    events = sum(line.startswith("[") for line in lines)
    assert events >= 4
    assert len(lines) <= 6 + 3 * events
    assert re.search(
        r"^status page: open http://127\.0\.0\.1:\d+/ while it runs$", done.stdout, re.MULTILINE
    )


def test_demo_serves_the_page_while_it_runs() -> None:
    """The URL the demo prints answers with its jobs (issue 13); with --stay it stays up."""
    with subprocess.Popen(
        [sys.executable, "-m", "watcher", "demo", "--stay"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=without_fireworks_env(),
    ) as demo:  # fmt: skip
        try:
            assert demo.stdout is not None
            url = ""
            for line in demo.stdout:
                if found := re.search(r"http://127\.0\.0\.1:\d+/", line):
                    url = found.group(0)
                if "stays up" in line:
                    break
            jobs = httpx.get(f"{url}api/v1/jobs", timeout=10).json()["jobs"]
            assert {"dpo/demo-complete", "dpo/demo-oom"} <= {job["job"] for job in jobs}
            assert "COMPLETED" in httpx.get(url, timeout=10).text
        finally:
            demo.terminate()
            demo.wait(timeout=30)


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount small tmpfs file systems (root only); skip where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        target = tmp_path / f"fs{len(mounted)}"
        target.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", str(target)], check=False)


@pytest.mark.parametrize(
    ("options", "fill", "reason"),
    [
        pytest.param("size=64k", True, "database or disk is full", id="full disk"),
        pytest.param("ro,size=64k", False, "Read-only file system", id="read-only"),
    ],
)
def test_unusable_state_path_fails_at_start(
    tiny_filesystem: Callable[[str], Path],
    config_file: Path,
    options: str,
    fill: bool,
    reason: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A state path on a full or read-only disk stops `run` at once: one line, exit 2."""
    where = tiny_filesystem(options)
    if fill:
        with (where / "filler").open("wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 4096)
    state = where / "state.db"
    replace_in(config_file, str(config_file.parent / "state.db"), str(state))

    code, out, err = run_cli(capsys, "run", "-c", str(config_file))

    assert 2 == code
    assert f"cannot open state database {state}: {reason}" in err
    assert "Traceback" not in out + err
