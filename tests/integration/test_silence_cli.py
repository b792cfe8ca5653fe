"""`silence add | list | expire`: the state file's silences from the command line, while a
daemon runs on the same file, with one-line errors naming the flag."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fireworks_sim import Simulator
from tests.support.daemon import Daemon, write_config
from tests.support.servers import JsonReceiver
from watcher.cli import main
from watcher.stores.sqlite import StateStore


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config with two channels; a secret in a URL that is not set (never needed here)."""
    path = tmp_path / "watcher.toml"
    path.write_text(
        f"""
[watcher]
state_path = "{tmp_path / "state.db"}"
health_listen = ""

[[channel]]
name = "ml-team"
urls = ["json://127.0.0.1:9/${{UNSET_SILENCE_SECRET}}"]

[[channel]]
name = "oncall"
urls = ["json://127.0.0.1:9/x"]
"""
    )
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def add(capsys: pytest.CaptureFixture[str], config: Path, *extra: str) -> tuple[int, str, str]:
    return cli(
        capsys, "silence", "add", "-c", str(config), "--for", "2h", "--comment", "known", *extra
    )


def test_add_list_expire(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A silence added is listed with its matcher, end and comment, then expired by id."""
    code, out, err = add(capsys, config, "--job", "prod-*", "--state", "job_state_failed")
    assert (0, "") == (code, err)
    assert out.startswith("silence 1 added: job=prod-* state=FAILED, until ")
    assert "(in 2h 00m 00s)" in out or "(in 1h 59m" in out

    code, out, _ = cli(capsys, "silence", "list", "-c", str(config))
    header, row = out.splitlines()
    assert ["ID", "MATCHER", "ENDS IN", "COMMENT"] == re.split(r"\s{2,}", header)
    ident, matched, ends, comment = re.split(r"\s{2,}", row)
    assert ("1", "job=prod-* state=FAILED", "known") == (ident, matched, comment)
    assert ends.startswith(("1h 59m", "2h 00m"))

    assert (0, "silence 1 expired\n", "") == cli(
        capsys, "silence", "expire", "1", "-c", str(config)
    )
    assert (0, "no silence in force\n", "") == cli(capsys, "silence", "list", "-c", str(config))
    _, out, _ = cli(capsys, "silence", "list", "--all", "-c", str(config))
    assert "expired 20" in out.splitlines()[1]


def test_list_json_has_iso_timestamps(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`list --json` is a list of objects with every matcher field and ISO times."""
    add(capsys, config, "--job", "sft-*", "--kind", "SFT", "--channel", "oncall")
    before = datetime.now(UTC)

    _code, out, _ = cli(capsys, "silence", "list", "--json", "-c", str(config))

    (found,) = json.loads(out)
    ends = datetime.fromisoformat(found.pop("ends_at"))
    created = datetime.fromisoformat(found.pop("created_at"))
    assert {
        "id": 1,
        "job": "sft-*",
        "kind": "sft",
        "owner": "",
        "state": "",
        "channel": "oncall",
        "comment": "known",
        "expired_at": None,
        "active": True,
    } == found
    assert timedelta(hours=2) == ends - created
    assert abs(before - created) < timedelta(seconds=5)


def test_the_silence_is_in_the_history(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Adding and expiring a silence are events of the history."""
    add(capsys, config, "--job", "prod-*")
    cli(capsys, "silence", "expire", "1", "-c", str(config))

    _, out, _ = cli(capsys, "history", "-c", str(config))

    lines = out.splitlines()
    assert 2 == len(lines)
    assert "  silence  silence 1 added: job=prod-* until " in lines[0]
    assert lines[0].endswith("(known)")
    assert "  silence  silence 1 expired: job=prod-*" in lines[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--job", "x", "--for", "0"], "--for: must be more than 0", id="zero"),
        pytest.param(["--job", "x", "--for", "91d"], "at most 90 days", id="too-long"),
        pytest.param(["--job", "x", "--for", "soon"], "--for: must be a duration", id="no-dur"),
        pytest.param(["--job", "x", "--for", "2y"], "--for: must be a duration", id="unit"),
        pytest.param(["--job", "x", "--kind", "nope"], "--kind: unknown kind 'nope'", id="kind"),
        pytest.param(["--job", "x", "--state", "DONE"], "--state: unknown state 'DONE'", id="st"),
        pytest.param(["--job", "x", "--state", ""], "--state: unknown state ''", id="st-empty"),
        pytest.param(
            ["--job", "x", "--channel", "ops"],
            "--channel: no channel named 'ops' (channels: ml-team, oncall)",
            id="channel",
        ),
        pytest.param(["--job", "  "], "--job: must not be empty", id="job-empty"),
        pytest.param(["--job", "a\x1b[2J"], "--job: must not hold control", id="job-ctl"),
        pytest.param(["--job", "x" * 201], "--job: longer than 200", id="job-long"),
        pytest.param(["--job", "x", "--comment", ""], "--comment: must not be empty", id="cmt"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Each bad flag is named on one line, exit 2, no traceback, and nothing is stored."""
    flags = ["--for", "2h", "--comment", "known", *argv]

    code, out, err = cli(capsys, "silence", "add", "-c", str(config), *flags)

    assert (2, "") == (code, out)
    assert 1 == len(err.splitlines())
    assert err.startswith("fireworks-watcher: error: ")
    assert message in err
    assert not (config.parent / "state.db").exists()


@pytest.mark.parametrize(
    ("ident", "code", "message"),
    [
        pytest.param("abc", 2, "ID: 'abc' is not a silence id", id="not-a-number"),
        pytest.param("0", 2, "ID: '0' is not a silence id", id="zero"),
        pytest.param("7", 1, "no silence 7 in force", id="unknown"),
    ],
)
def test_expire_bad_id(
    config: Path, capsys: pytest.CaptureFixture[str], ident: str, code: int, message: str
) -> None:
    """An id that is none is a usage error (2); one not in force is a failure (1)."""
    add(capsys, config, "--job", "x")

    found, out, err = cli(capsys, "silence", "expire", ident, "-c", str(config))

    assert (code, "") == (found, out)
    assert message in err
    assert 1 == len(err.splitlines())


def test_no_action_is_a_usage_error(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`silence` alone names the actions, exit 2."""
    code, _, err = cli(capsys, "silence")

    assert 2 == code
    assert "add, list or expire" in err


def test_list_without_state_creates_none(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Listing before any state exists says so and writes no file."""
    assert (0, "[]\n", "") == cli(capsys, "silence", "list", "--json", "-c", str(config))
    assert not (config.parent / "state.db").exists()


def test_add_while_the_store_is_open(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With the daemon's store open on the file, `add` writes and the store reads it live."""
    with StateStore.open(config.parent / "state.db") as daemon_store:
        assert [] == daemon_store.silences(datetime.now(UTC))
        code, _, err = add(capsys, config, "--job", "prod-*")
        assert (0, "") == (code, err)
        (live,) = daemon_store.silences(datetime.now(UTC))

    assert "prod-*" == live.job


def test_add_while_a_daemon_runs(
    tmp_path: Path,
    sim: Simulator,
    receiver: JsonReceiver,
    daemon_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A running daemon holds the state file's lock; `silence add`, `list` and `expire`
    still work on the same file, and the daemon goes on polling."""
    sim.add_job("job-a", state="RUNNING")
    config = write_config(tmp_path, [receiver.url()], budget=None)
    daemon = Daemon(config, daemon_env)
    try:
        daemon.wait_event("job.baseline")
        code, _, err = add(capsys, config, "--job", "job-*", "--channel", "team")
        assert (0, "") == (code, err)
        assert "job=job-* channel=team" in cli(capsys, "silence", "list", "-c", str(config))[1]
        assert 0 == cli(capsys, "silence", "expire", "1", "-c", str(config))[0]
        sim.set_state("job-a", "COMPLETED")
        daemon.wait_event("job.transition")
        assert 0 == daemon.stop()
    finally:
        daemon.close()
