"""Every resource kind end to end: simulator over loopback, real SQLite, a real receiver.

One resource of each of the 11 kinds is watched; each moves, and each move must arrive at the
`json://` receiver, from the in-process loop, from the `run` daemon, and as `watch`'s exit code.
The simulator's answers themselves are held to the official SDK in `test_sdk_oracle.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from structlog.testing import capture_logs

from fireworks_sim import Simulator, scenario
from tests.support.account import ACCOUNT, KEY
from tests.support.daemon import Daemon
from tests.support.every_kind import MOVES, add_every_kind, move_every_kind, resource_id
from tests.support.servers import FakeClock, JsonReceiver, ServedApp
from watcher import app, config
from watcher.cli import main
from watcher.core.kinds import JobKind
from watcher.stores.sqlite import StateStore

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

IDS = [str(kind) for kind, *_ in MOVES]


def expected_titles() -> list[str]:
    titles = []
    for kind, start, end, code in MOVES:
        rid = resource_id(kind)
        title = f"Sim job {rid} ({rid}): {start} → {end}"
        titles.append(title + (f": {kind} went wrong" if code and end != "CANCELLED" else ""))
    return sorted(titles)


def every_kind_settings(server: ServedApp, state: Path, receiver: JsonReceiver) -> dict[str, Any]:
    return {
        "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
        "watcher": {
            "poll_interval": 0.2,
            "state_path": str(state),
            "max_requests_per_minute": 6000,
            "health_listen": "",
        },
        "watch": [{"kind": str(kind), "jobs": [resource_id(kind)]} for kind, *_ in MOVES],
        # All eleven at once, not at the default pace of one a second.
        "channel": [{"name": "team", "urls": [receiver.url()], "max_per_second": 100}],
    }


async def test_a_transition_of_every_kind_reaches_the_receiver(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """Each of the 11 kinds is polled, diffed and announced once, with its kind's label."""
    add_every_kind(sim)
    settings = config.parse(
        every_kind_settings(server, tmp_path / "state.db", receiver), {"FIREWORKS_API_KEY": KEY}
    )
    async with app.open_watcher(settings) as watcher:
        baseline = await watcher.run_once(force=True)
        move_every_kind(sim)
        moved = await watcher.run_once(force=True)
        again = await watcher.run_once(force=True)

    got = await receiver.wait_for_async(len(MOVES))
    assert (len(MOVES), 0) == (baseline.polled, len(receiver.messages) - len(got))
    assert (0, 0) == (baseline.api_errors, moved.api_errors)
    assert len(MOVES) == len(moved.transitions)
    assert [] == again.transitions
    assert expected_titles() == sorted(m["title"] for m in got)
    labels = {kind: kind.spec.label for kind, *_ in MOVES}
    for message in got:
        kind = next(k for k in labels if f"({k}-1)" in message["title"])
        assert f"({labels[kind]} `{kind}-1`)" in message["message"]


def test_the_daemon_announces_every_kind(
    server: ServedApp,
    sim: Simulator,
    receiver: JsonReceiver,
    tmp_path: Path,
    daemon_env: dict[str, str],
) -> None:
    """`fireworks-watcher run` watching one resource of every kind delivers each move once."""
    add_every_kind(sim)
    settings = every_kind_settings(server, tmp_path / "state.db", receiver)
    path = tmp_path / "watcher.toml"
    path.write_text(to_toml(settings))
    daemon = Daemon(path, daemon_env)
    try:
        daemon.wait_event("job.baseline", len(MOVES))
        move_every_kind(sim)
        got = receiver.wait_for(len(MOVES), timeout=20)
        daemon.wait_event("notify.sent", len(MOVES))
        assert 0 == daemon.stop()
    finally:
        daemon.close()

    assert expected_titles() == sorted(m["title"] for m in got)
    assert len(MOVES) == len(receiver.messages)


def to_toml(settings: dict[str, Any]) -> str:
    """The few shapes these settings use, written as TOML."""
    lines: list[str] = []
    for table in ("fireworks", "watcher"):
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in settings[table].items()]
    for table in ("watch", "channel"):
        for entry in settings[table]:
            lines.append(f"[[{table}]]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    return "\n".join(lines) + "\n"


def errors(stderr: str) -> list[str]:
    """The command's own error lines (log lines go to stderr too)."""
    return [line for line in stderr.splitlines() if line.startswith("fireworks-watcher: error:")]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, server: ServedApp) -> None:
    """The command's environment: key, account and base URL of the simulator."""
    for name in ("FIREWORKS_API_KEY", "FIREWORKS_ACCOUNT_ID", "FIREWORKS_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FIREWORKS_API_KEY", KEY)
    monkeypatch.setenv("FIREWORKS_ACCOUNT_ID", ACCOUNT)
    monkeypatch.setenv("FIREWORKS_BASE_URL", server.url)
    monkeypatch.setenv("FIREWORKS_WATCHER_LOG_FORMAT", "json")


@pytest.mark.parametrize(("kind", "start", "end", "code"), MOVES, ids=IDS)
def test_watch_exit_code_for_every_kind(
    cli_env: None,
    sim: Simulator,
    receiver: JsonReceiver,
    capsys: pytest.CaptureFixture[str],
    kind: JobKind,
    start: str,
    end: str,
    code: int,
) -> None:
    """`watch ID --kind K` follows each kind to its outcome; the exit code is the outcome's."""
    rid = resource_id(kind)
    sim.add_job(rid, collection=kind.collection, state=start)
    sim.script(rid, [(0.3, end, "OK", "")], collection=kind.collection)

    exit_code = main(
        ["watch", rid, "--kind", str(kind), "--interval", "0.1", "--notify", receiver.url()]
    )
    out = capsys.readouterr().out

    assert code == exit_code
    assert f"{kind}/{rid}: {start} → {end}" in out
    assert [f"Sim job {rid} ({rid}): {start} → {end}"] == [m["title"] for m in receiver.wait_for(1)]


@pytest.mark.parametrize("kind", [JobKind.SFT, JobKind.DEPLOYMENT], ids=str)
def test_watch_of_a_missing_resource_ends_at_once(
    cli_env: None, sim: Simulator, capsys: pytest.CaptureFixture[str], kind: JobKind
) -> None:
    """A resource that does not exist ends `watch` after one poll, not a 10-minute hang: a
    typo, exit 2, after one GET of the id in each other kind (issue 20)."""
    exit_code = main(["watch", "no-such-thing", "--kind", str(kind), "--interval", "0.1"])

    assert 2 == exit_code
    assert "no-such-thing in account acme; no other kind has it" in capsys.readouterr().err
    assert sum(kind.spec.listable for kind in JobKind) == sim.request_count  # not the account


def test_watch_gives_up_on_a_persistent_rejection(
    cli_env: None, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 400 that persists for 3 polls ends `watch` with 2 and the API's own message."""
    sim.add_job("sft-x", collection="supervisedFineTuningJobs", state="RUNNING")
    sim.add_fault(status=400, times=100, path_contains="supervisedFineTuningJobs/sft-x")

    exit_code = main(["watch", "sft-x", "--kind", "sft", "--interval", "0.05"])
    err = capsys.readouterr().err

    (error,) = errors(err)
    assert 2 == exit_code
    assert "sft/sft-x" in error
    assert "HTTP 400 INVALID_ARGUMENT" in error
    assert 3 == sim.request_count


def test_watch_timeout_exits_3(
    cli_env: None, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--timeout` ends a watch that has not reached an outcome with exit 3, naming the flag."""
    sim.add_job("dep-slow", collection="deployments", state="CREATING")

    exit_code = main(
        ["watch", "dep-slow", "--kind", "deployment", "--interval", "0.05", "--timeout", "0.5"]
    )
    err = capsys.readouterr().err

    assert 3 == exit_code
    assert "--timeout: deployment/dep-slow is still CREATING after 0.5 s" in err


def test_watch_403_names_the_account(
    cli_env: None,
    sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 403 on the account says "permission denied for account X", not "check the key"."""
    exit_code = main(
        ["watch", "j", "--kind", "model", "--account", "someone-else", "--interval", "0.1"]
    )
    err = capsys.readouterr().err

    assert 2 == exit_code
    assert "permission denied for account someone-else" in err
    assert "FIREWORKS_API_KEY" not in err


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        pytest.param(["--notify", "notaurl://x"], "--notify #1", id="bad notify"),
        pytest.param(["--notify", "json://127.0.0.1:1/x", "--notify", ""], "--notify #2", id="2nd"),
        pytest.param(["--timeout", "-1"], "--timeout", id="timeout"),
        pytest.param(["--interval", "nan"], "--interval", id="nan interval"),
    ],
)
def test_watch_errors_name_the_flag(
    cli_env: None, capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    """A bad flag is one line naming the flag, exit 2, no traceback."""
    exit_code = main(["watch", "j", *argv])
    err = capsys.readouterr().err

    (error,) = errors(err)
    assert 2 == exit_code
    assert flag in error
    assert "channel[" not in err


def test_watch_without_an_account_names_the_flag(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No account anywhere: the error says --account."""
    monkeypatch.delenv("FIREWORKS_ACCOUNT_ID")

    exit_code = main(["watch", "j"])
    err = capsys.readouterr().err

    assert 2 == exit_code
    assert "--account" in err


class TestUnreadable:
    """A resource the daemon cannot read is news, once, and so is its recovery."""

    @pytest.fixture
    def settings(
        self, server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path
    ) -> config.Settings:
        sim.add_job("broken", collection="supervisedFineTuningJobs", state="RUNNING")
        sim.add_job("healthy", state="RUNNING")
        return config.parse(
            {
                "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
                "watcher": {
                    "poll_interval": 0.2,
                    "state_path": str(tmp_path / "state.db"),
                    "max_requests_per_minute": 6000,
                    "unreadable_after": 3,
                },
                "watch": [
                    {"kind": "sft", "jobs": ["broken"]},
                    {"kind": "dpo", "jobs": ["healthy"]},
                ],
                "channel": [{"name": "team", "urls": [receiver.url()]}],
            },
            {"FIREWORKS_API_KEY": KEY},
        )

    async def test_unreadable_then_readable_again(
        self,
        settings: config.Settings,
        sim: Simulator,
        receiver: JsonReceiver,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """3 refused polls give one "cannot read" per URL; the healthy job is still announced;
        a restart repeats nothing; the first good poll gives one "readable again"."""
        sim.add_fault(status=400, times=10_000, path_contains="supervisedFineTuningJobs/broken")
        async with app.open_watcher(settings) as watcher:
            await watcher.run_once(force=True)
            await watcher.run_once(force=True)
            assert [] == receiver.messages
            sim.set_state("healthy", "COMPLETED")
            third = await watcher.run_once(force=True)
            got = await receiver.wait_for_async(2)
            for _ in range(3):
                await watcher.run_once(force=True)

        assert ["dpo/healthy"] == [t.ref.key for t in third.transitions]
        healthy, unreadable = sorted((m["title"] for m in got), key=lambda t: "cannot" in t)
        assert "Sim job healthy (healthy): RUNNING → COMPLETED" == healthy
        assert unreadable.startswith("cannot read sft/broken: HTTP 400 INVALID_ARGUMENT")
        assert 2 == len(receiver.messages)

        capsys.readouterr()  # before any command configured logging, structlog printed here
        # The command is synchronous (files, sqlite3): run it off the event loop.
        config_file = await anyio.to_thread.run_sync(self.config_file, tmp_path, settings)
        status_argv = ["status", "--json", "-c", config_file]
        code = await anyio.to_thread.run_sync(main, status_argv)
        status = json.loads(capsys.readouterr().out)
        assert 0 == code
        assert ["sft/broken"] == [u["target"] for u in status["unreadable"]]
        assert "HTTP 400 INVALID_ARGUMENT" in status["unreadable"][0]["error"]

        async with app.open_watcher(settings) as restarted:
            await restarted.run_once(force=True)
            assert 2 == len(receiver.messages)
            sim.clear_faults()
            await restarted.run_once(force=True)
            await restarted.run_once(force=True)

        again = (await receiver.wait_for_async(3))[2]
        assert "sft/broken is readable again" == again["title"]
        assert "success" == again["type"]
        assert 3 == len(receiver.messages)
        capsys.readouterr()
        await anyio.to_thread.run_sync(main, status_argv)
        assert [] == json.loads(capsys.readouterr().out)["unreadable"]

    @staticmethod
    def config_file(tmp_path: Path, settings: config.Settings) -> str:
        path = tmp_path / "status.toml"
        path.write_text(
            f'[fireworks]\naccount_id = "{ACCOUNT}"\n'
            f'[watcher]\nstate_path = "{settings.watcher.state_path}"\n'
        )
        return str(path)

    async def test_a_resource_no_longer_watched_is_forgotten_silently(
        self, settings: config.Settings, sim: Simulator, receiver: JsonReceiver
    ) -> None:
        """A reload that stops watching an unreadable resource clears it without a message."""
        sim.add_fault(status=400, times=10_000, path_contains="supervisedFineTuningJobs/broken")
        async with app.open_watcher(settings) as watcher:
            for _ in range(3):
                await watcher.run_once(force=True)
            await receiver.wait_for_async(1)
            smaller = settings.model_copy(update={"watches": settings.watches[1:]})
            notifier = app.build_notifier(smaller)
            watcher.reload(app.build_plan(smaller, notifier), notifier)
            await watcher.run_once(force=True)

        def open_conditions() -> list[str]:
            with StateStore.open(settings.watcher.state_path) as store:
                return [c.subject for c in store.open_conditions()]

        assert [] == await anyio.to_thread.run_sync(open_conditions)
        assert 1 == len(receiver.messages)

    async def test_unparsable_answers_count_too(
        self, settings: config.Settings, sim: Simulator, receiver: JsonReceiver
    ) -> None:
        """A payload that cannot be parsed, 3 times, is unreadable too."""
        sim.add_fault(times=10_000, malformed=True, path_contains="supervisedFineTuningJobs/broken")
        async with app.open_watcher(settings) as watcher:
            for _ in range(3):
                await watcher.run_once(force=True)

        (message,) = await receiver.wait_for_async(1)
        assert message["title"].startswith("cannot read sft/broken: ")
        assert "not JSON" in message["message"]


async def test_read_mask_drift_is_survived_end_to_end(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """The API refusing our readMask costs one retry: the move still arrives, logged once."""
    add_every_kind(sim)
    settings = config.parse(
        every_kind_settings(server, tmp_path / "state.db", receiver), {"FIREWORKS_API_KEY": KEY}
    )
    refusal = json.dumps({"code": 3, "message": "invalid readMask path 'createdBy'"})
    sim.add_fault(status=400, times=1, path_contains="datasets/dataset-1?readMask=", body=refusal)
    with capture_logs() as logs:
        async with app.open_watcher(settings) as watcher:
            await watcher.run_once(force=True)
            sim.set_state("dataset-1", "READY", collection="datasets")
            moved = await watcher.run_once(force=True)

    assert ["dataset/dataset-1"] == [t.ref.key for t in moved.transitions]
    dropped = [e for e in logs if e["event"] == "api.read_mask_dropped"]
    assert [["dataset"]] == [[e["kind"]] for e in dropped]
    assert (
        "Sim job dataset-1 (dataset-1): UPLOADING → READY"
        == (await receiver.wait_for_async(1))[0]["title"]
    )


@pytest.fixture
def probe_config(tmp_path: Path, server: ServedApp) -> Path:
    path = tmp_path / "probe.toml"
    watches = "".join(
        f'[[watch]]\nkind = "{kind}"\njobs = ["{resource_id(kind)}"]\ndiscover = true\n'
        for kind, *_ in MOVES
    )
    path.write_text(
        f'[fireworks]\naccount_id = "{ACCOUNT}"\nbase_url = "{server.url}"\n'
        f'[watcher]\nstate_path = "{tmp_path / "s.db"}"\nmax_requests_per_minute = 6000\n{watches}'
    )
    return path


def test_check_probe_reads_every_kind(
    cli_env: None, sim: Simulator, probe_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check --probe` GETs and LISTs every kind and reports each."""
    add_every_kind(sim)

    code = main(["check", "--probe", "-c", str(probe_config)])
    out = capsys.readouterr().out

    assert 0 == code, out
    for kind, start, _, _ in MOVES:
        assert f"probe {kind}: 1 jobs listed" in out
        assert f"{kind}/{resource_id(kind)}: {start}" in out


async def test_chaos_never_hides_a_healthy_job(
    server: ServedApp, receiver: JsonReceiver, tmp_path: Path
) -> None:
    """Against the `chaos` scenario (every kind moving, 1 answer in 8 a fault: 500, 503, 429,
    slow, malformed), the daemon's cycles never crash and a healthy job's move is seen within
    3 cycles."""
    clock = FakeClock()
    sim = Simulator(api_key=KEY, account_id=ACCOUNT, clock=clock)
    server.app = sim
    scenario(sim, "chaos", seed=7)
    sim.add_job("healthy", state="RUNNING")
    watches: list[dict[str, Any]] = [{"kind": str(kind), "discover": True} for kind in JobKind]
    watches.append({"kind": "dpo", "jobs": ["healthy"]})
    settings = config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {
                "poll_interval": 0.2,
                "state_path": str(tmp_path / "state.db"),
                "max_requests_per_minute": 6000,
                "request_timeout": 0.5,
            },
            "watch": watches,
            "channel": [{"name": "team", "urls": [receiver.url()], "jobs": ["healthy"]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )
    polled = 0
    async with app.open_watcher(settings) as watcher:
        for _ in range(3):
            clock.now += 30
            polled = max(polled, (await watcher.run_once(force=True)).polled)
        sim.set_state("healthy", "COMPLETED")
        for cycles in range(1, 6):  # noqa: B007 (the count is the result)
            clock.now += 30
            report = await watcher.run_once(force=True)
            if "dpo/healthy" in [t.ref.key for t in report.transitions]:
                break

    assert cycles <= 3
    assert polled > len(JobKind)  # every kind was really listed, spawned runs included
    assert ["Sim job healthy (healthy): RUNNING → COMPLETED"] == [
        m["title"] for m in await receiver.wait_for_async(1)
    ]


def test_simulate_command_serves_a_scenario_the_sdk_can_read() -> None:
    """`fireworks-watcher simulate --scenario busy --api-key K` serves every kind; the official
    SDK's client lists each collection with that key (and is refused with another)."""
    import fireworks

    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_")}
    command = [sys.executable, "-m", "watcher", "simulate", "--port", "0"]
    command += ["--scenario", "busy", "--api-key", "k-123"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            base_url = line.split("FIREWORKS_BASE_URL=")[1].split()[0]
            client = fireworks.Fireworks(
                api_key="k-123", account_id="sim-account", base_url=base_url, max_retries=0
            )
            listed = {
                "deployments": [d.state for d in client.deployments.list()],
                "evaluators": [e.state for e in client.evaluators.list()],
                "sft": [j.state for j in client.supervised_fine_tuning_jobs.list()],
                "deployedModels": [m.state for m in client.lora.list()],
            }
            wrong = fireworks.Fireworks(
                api_key="nope", account_id="sim-account", base_url=base_url, max_retries=0
            )
            with pytest.raises(fireworks.AuthenticationError):
                wrong.models.list()
            process.terminate()
            code = process.wait(timeout=10)
        finally:
            process.kill()

    assert 0 == code
    assert "(scenario busy)" in line
    assert "k-123" in line  # a key given on the command line is shown, one from the env is not
    assert all(listed.values()), listed
