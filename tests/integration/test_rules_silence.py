"""Silences on the job's owner: `silence add --owner GLOB` from the command line against a
real state file mutes only that owner's jobs; the owner is stored, listed, kept in the
history and migrated into older databases, on both backends."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio.to_thread
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.alerting import MINUTE, Time, cycle, rows, settings_for, watcher_on
from tests.support.backends import OpenStore
from tests.support.servers import JsonReceiver, ServedApp
from watcher.cli import main
from watcher.core.silences import Silence
from watcher.stores.aio import AsyncStore
from watcher.stores.pg.store import PgStore

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


# --- the store, both backends ---------------------------------------------------------------


async def test_an_owner_is_stored_listed_and_kept_in_the_history(stores: OpenStore) -> None:
    """A silence's owner glob is read back as written, and its history event names it."""
    store = await stores()
    silence = Silence(0, "*", kind="dpo*", owner="alice@*", ends_at=T0 + timedelta(hours=1))

    silence_id = await store.add_silence(silence, now=T0)
    (found,) = await store.silences(T0)
    await store.expire_silence(silence_id, now=T0 + timedelta(minutes=1))
    (ended,) = await store.silences(T0, include_ended=True)
    events, _ = await store.history(since=T0)

    assert ("*", "dpo*", "alice@*") == (found.job, found.kind, found.owner)
    assert "alice@*" == ended.owner
    assert [("added", "alice@*"), ("expired", "alice@*")] == [
        (e.event.field_map()["action"], e.event.field_map()["owner"]) for e in events
    ]


async def test_a_database_from_before_owners_is_migrated(
    stores: OpenStore, backend: str, tmp_path: Path
) -> None:
    """A database written before silences had an owner gets the column; its silences match
    every owner."""
    store = await stores()
    await store.add_silence(Silence(0, "old-*", ends_at=T0 + timedelta(hours=1)), now=T0)
    # Put the database back as the previous version wrote it: no owner column.
    if isinstance(store, PgStore):
        async with store.db.tx() as conn:
            await conn.execute("ALTER TABLE silences DROP COLUMN owner")
            await conn.execute("DELETE FROM schema_migrations WHERE version = 2")
        await store.aclose()
    else:
        assert isinstance(store, AsyncStore)
        await store.aclose()

        def downgrade() -> None:
            with closing(sqlite3.connect(tmp_path / "state.db")) as db, db:
                db.execute("ALTER TABLE silences DROP COLUMN owner")
                db.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")

        await anyio.to_thread.run_sync(downgrade)

    again = await stores()
    (found,) = await again.silences(T0)

    assert (backend, "old-*", "") == (backend, found.job, found.owner)
    assert again.migrated_from == (1 if backend == "postgresql" else 5)


# --- the command line and a watcher on one state file ---------------------------------------


@pytest.fixture
def time() -> Time:
    """The fake clock starts at the real now: the CLI stamps a silence with the real time."""
    clock = Time()
    clock.start = datetime.now(UTC)
    return clock


@pytest.fixture
def fake_sim(server: ServedApp, time: Time) -> Simulator:
    sim = Simulator(api_key=KEY, account_id=ACCOUNT, clock=time.monotonic, start_time=time.wall())
    server.app = sim
    return sim


@pytest.fixture
def team_config(tmp_path: Path, receiver: JsonReceiver) -> Path:
    """The config `silence` reads: the state file and the channel names."""
    path = tmp_path / "watcher.toml"
    path.write_text(
        f'[watcher]\nstate_path = "{tmp_path / "state.db"}"\nhealth_listen = ""\n\n'
        f'[[channel]]\nname = "team"\nurls = ["{receiver.url()}"]\n'
    )
    return path


def silence_cli(*argv: str) -> int:
    return main(["silence", *argv])


async def test_an_owner_silence_from_the_cli_mutes_only_that_owners_jobs(
    server: ServedApp,
    fake_sim: Simulator,
    time: Time,
    tmp_path: Path,
    receiver: JsonReceiver,
    team_config: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`silence add --owner 'alice@*'` on the state file: alice's job (her address in any
    case) is recorded as silenced, bob's is sent; `list` shows the owner."""
    state, path = tmp_path / "state.db", team_config
    fake_sim.add_job("a-dpo", state="RUNNING", created_by="Alice@Example.com")
    fake_sim.add_job("b-dpo", state="RUNNING", created_by="bob@example.com")
    added = await anyio.to_thread.run_sync(
        lambda: silence_cli(
            "add",
            "-c",
            str(path),
            "--job",
            "*",
            "--owner",
            "alice@*",
            "--for",
            "1d",
            "--comment",
            "alice is on it",
        )
    )
    listed = capsys.readouterr().out
    watches = [{"kind": "dpo", "discover": True, "stall_after": 0}]
    channels = [{"name": "team", "urls": [receiver.url()]}]
    settings = settings_for(server, state, watches, channels)

    async with watcher_on(settings, time) as watcher:
        await cycle(watcher, time, 0)
        fake_sim.set_state("a-dpo", "FAILED")
        fake_sim.set_state("b-dpo", "FAILED")
        await cycle(watcher, time, MINUTE)
        (sent,) = await receiver.wait_for_async(1)
        await cycle(watcher, time, MINUTE)
    settled = await rows(state, "SELECT job_key, status, silence_id FROM outbox ORDER BY id")
    await anyio.to_thread.run_sync(lambda: silence_cli("list", "--json", "-c", str(path)))
    (document,) = json.loads(capsys.readouterr().out)

    assert 0 == added
    assert "silence 1 added: job=* owner=alice@*, until " in listed
    assert "Sim job b-dpo (b-dpo): RUNNING → FAILED" == sent["title"]
    assert 1 == len(receiver.messages)
    assert [("dpo/a-dpo", "silenced", 1), ("dpo/b-dpo", "delivered", None)] == settled
    assert ("*", "", "alice@*") == (document["job"], document["kind"], document["owner"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--owner", "a\x1b[2J"], "--owner: must not hold control", id="ctl"),
        pytest.param(["--owner", "a" * 201], "--owner: longer than 200", id="long"),
        pytest.param(["--kind", "zz*"], "--kind: unknown kind 'zz*'", id="kind glob"),
    ],
)
def test_a_bad_owner_or_kind_glob_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """A bad `--owner` or a `--kind` glob that matches no kind: one line, exit 2."""
    path = tmp_path / "watcher.toml"
    path.write_text(f'[watcher]\nstate_path = "{tmp_path / "state.db"}"\n')

    code = silence_cli("add", "-c", str(path), "--job", "x", "--for", "1h", "--comment", "c", *argv)
    _, err = capsys.readouterr()

    assert 2 == code
    assert 1 == len(err.splitlines())
    assert message in err


def test_a_kind_glob_is_a_silence_of_every_kind_it_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--kind 'dpo*'` is kept as the glob, which the rule engine matches."""
    path = tmp_path / "watcher.toml"
    path.write_text(f'[watcher]\nstate_path = "{tmp_path / "state.db"}"\n')

    code = silence_cli(
        "add", "-c", str(path), "--job", "x", "--for", "1h", "--comment", "c", "--kind", "DPO*"
    )

    assert 0 == code
    assert "silence 1 added: job=x kind=dpo*," in capsys.readouterr().out
