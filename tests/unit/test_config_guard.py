"""Config and state-file guards: durations with units, an API key never sent in clear, a
state path `run` could not open, "did you mean", and the state's files kept to their owner
(the lock never followed through a link, the database and its WAL/SHM made 0600, a rescue
copy 0600 from its first byte)."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, BeforeValidator

from tests.support.account import ACCOUNT, KEY
from watcher.cli import main
from watcher.config import ChannelSettings, WatcherSettings, WatchSettings, alerting, load, parse
from watcher.core.decision import Decision
from watcher.core.errors import ConfigError, StoreError
from watcher.stores import files
from watcher.stores.lock import exclusive
from watcher.stores.sqlite import StateStore

needs_permissions = pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
VICTIM = b"precious: not a lock file\n"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's environment: a key and an account, nothing else of the caller's."""
    for name in list(os.environ):
        if name.startswith(("FIREWORKS_", "STATE_DIRECTORY", "CREDENTIALS_DIRECTORY")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FIREWORKS_API_KEY", KEY)
    monkeypatch.setenv("FIREWORKS_ACCOUNT_ID", ACCOUNT)


def config(tmp_path: Path, watcher: str = "", *, top: str = "", extra: str = "") -> Path:
    """A config file with `watcher` lines in [watcher] (state under tmp_path unless given)."""
    state = "" if "state_path" in watcher else f'state_path = "{tmp_path / "state.db"}"\n'
    path = tmp_path / "watcher.toml"
    path.write_text(
        f'{top}\n[watcher]\nhealth_listen = ""\n{state}{watcher}\n'
        '[[watch]]\njobs = ["job-a"]\n'
        '[[channel]]\nname = "team"\nurls = ["json://127.0.0.1:9/hook"]\n'
        f"{extra}"
    )
    return path


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    code = main(["check", "-c", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys: pytest.CaptureFixture[str], path: Path) -> str:
    """`check` exits 2 with one line on stderr (no traceback); that line."""
    code, out, err = check(capsys, path)
    assert (2, "") == (code, out), err
    assert 1 == len(err.strip().splitlines()), err
    assert "Traceback" not in err
    return err.strip()


# --- durations ---------------------------------------------------------------------------------

#: The float keys that are not durations: a rate (sends a second).
RATES = {("channel", "max_per_second")}
#: Every other float key of the schema is a duration (the test below finds any new one).
DURATION_KEYS = [
    (section, name)
    for section, model in (
        ("watcher", WatcherSettings),
        ("watch", WatchSettings),
        ("channel", ChannelSettings),
    )
    for name, field in model.model_fields.items()
    if field.annotation is float and (section, name) not in RATES
]


def test_every_duration_key_is_found_and_has_the_one_duration_type() -> None:
    """The keys below are the ones the contract lists, none is missed, and each is read by
    the one duration type (not a copy of it per key)."""
    assert {
        ("watcher", "poll_interval"),
        ("watcher", "terminal_poll_interval"),
        ("watcher", "request_timeout"),
        ("watcher", "retry_max_delay"),
        ("watcher", "retry_for"),
        ("watcher", "notify_timeout"),
        ("watch", "stall_after"),
        ("watch", "pending_after"),
        ("watch", "max_runtime"),
        ("watch", "flap_window"),
        ("channel", "repeat_interval"),
        ("channel", "group_wait"),
    } == set(DURATION_KEYS)
    models: dict[str, type[BaseModel]] = {
        "watcher": WatcherSettings,
        "watch": WatchSettings,
        "channel": ChannelSettings,
    }
    without = [
        f"{section}.{key}"
        for section, key in DURATION_KEYS
        if not any(
            isinstance(m, BeforeValidator) and m.func is alerting._duration
            for m in models[section].model_fields[key].metadata
        )
    ]
    assert [] == without


@pytest.mark.parametrize(("section", "key"), DURATION_KEYS)
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("2m", 120.0), ("1m30s", 90.0), ("10m", 600.0), ("150", 150.0), (75, 75.0)],
)
def test_every_duration_key_takes_units_and_seconds(
    section: str, key: str, text: object, seconds: float
) -> None:
    """ "90s", "2m", "1m30s", "150" and 75 are the same kind of value for every duration key."""
    data: dict[str, Any] = {
        "fireworks": {"account_id": ACCOUNT},
        # terminal_poll_interval may not be below poll_interval: give it room both ways.
        "watcher": {"poll_interval": 1, "terminal_poll_interval": 3600},
        "watch": [{"jobs": ["job-a"]}],
        "channel": [{"name": "team", "urls": ["json://127.0.0.1:9/hook"]}],
    }
    table = data["watcher"] if section == "watcher" else data[section][0]
    table[key] = text

    settings = parse(data, {"FIREWORKS_API_KEY": KEY})

    holder = {
        "watcher": settings.watcher,
        "watch": settings.watches[0],
        "channel": settings.channels[0],
    }[section]
    assert seconds == getattr(holder, key)


def test_check_reports_durations_written_with_units(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` runs on "90s" and "30m", and the outcome interval's default follows a
    poll_interval written with a unit (10 x, at most 600, never below it)."""
    path = config(
        tmp_path, 'poll_interval = "90s"\nterminal_poll_interval = "30m"\nretry_for = "2h"\n'
    )
    code, out, err = check(capsys, path)
    assert 0 == code, err
    assert "poll every 90 s, outcome states every 1800 s" in out
    assert 7200.0 == load(path, os.environ).watcher.retry_for

    for poll, terminal in (('"2m"', 600), ('"20m"', 1200)):
        code, out, err = check(capsys, config(tmp_path, f"poll_interval = {poll}\n"))
        assert 0 == code, err
        assert f"outcome states every {terminal} s" in out


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('poll_interval = "soon"', 'watcher.poll_interval: must be a duration like "90s"'),
        ('poll_interval = "2d"', "watcher.poll_interval: must be <= 86400, got '2d'"),
        ('request_timeout = "11m"', "watcher.request_timeout: must be <= 600, got '11m'"),
        ('retry_for = "31d"', "watcher.retry_for: must be <= 2.592e+06, got '31d'"),
        ('notify_timeout = "0s"', "watcher.notify_timeout: must be > 0"),
        ("retry_max_delay = true", "watcher.retry_max_delay: must be a duration like"),
    ],
)
def test_a_bad_duration_is_one_line_naming_the_key(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str], line: str, expected: str
) -> None:
    """The bounds of each key hold for a value with a unit as for seconds."""
    message = refused(capsys, config(tmp_path, line + "\n"))
    assert expected in message
    assert "; " not in message  # no knock-on error on another key


# --- the API key is never sent in clear ------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3:8080",
        "http://api.fireworks.ai",
        "http://127.0.0.1.nip.io:8080",
        "http://localhost.example.com",
        "http://user:proxy-pw@proxy.internal:3128",
    ],
)
def test_http_beyond_loopback_is_refused(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """`check` refuses it in one line naming the key and the flag, and shows neither the URL's
    password nor the API key; with the flag set the same file passes."""
    message = refused(capsys, config(tmp_path, top=f'[fireworks]\nbase_url = "{url}"\n'))
    assert "fireworks.base_url: http:// to a host other than loopback" in message
    assert "watcher.allow_insecure_base_url = true" in message
    assert "proxy-pw" not in message
    assert KEY not in message

    allowed = config(
        tmp_path, "allow_insecure_base_url = true\n", top=f'[fireworks]\nbase_url = "{url}"\n'
    )
    code, _, err = check(capsys, allowed)
    assert 0 == code, err


def test_http_beyond_loopback_from_the_environment_is_refused(
    tmp_path: Path,
    clean_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FIREWORKS_BASE_URL is held to the same rule, and the message says where it came from."""
    monkeypatch.setenv("FIREWORKS_BASE_URL", "http://simulator:8080")
    message = refused(capsys, config(tmp_path))
    assert "fireworks.base_url: http:// to a host other than loopback" in message
    assert message.endswith("(from FIREWORKS_BASE_URL)")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.8.9.10",
        "http://[::1]:8080/",
        "http://localhost:8080",
        "http://LOCALHOST.",
        "https://10.1.2.3:8443",
        "https://api.fireworks.ai",
    ],
)
def test_loopback_and_https_are_accepted(url: str) -> None:
    """Loopback over http (the simulator, a local proxy) and https anywhere need no flag."""
    data = {"fireworks": {"account_id": ACCOUNT, "base_url": url}}
    settings = parse(data, {"FIREWORKS_API_KEY": KEY})
    assert not settings.watcher.allow_insecure_base_url


def test_the_flag_is_a_boolean() -> None:
    """`allow_insecure_base_url = "yes"` is an error, not a truthy string."""
    data = {"fireworks": {"account_id": ACCOUNT}, "watcher": {"allow_insecure_base_url": "yes"}}
    with pytest.raises(
        ConfigError, match=r"watcher\.allow_insecure_base_url: must be true or false"
    ):
        parse(data, {})


# --- check: a state path run could not open ---------------------------------------------------


def test_check_refuses_a_state_folder_that_cannot_be_created(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder under a file: `check` says so in one line naming watcher.state_path, as `run`
    would fail to open it."""
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    state = blocker / "sub" / "state.db"

    message = refused(capsys, config(tmp_path, f'state_path = "{state}"\n'))

    assert f"watcher.state_path: folder {state.parent} cannot be created" in message
    assert f"{blocker} is not a folder" in message
    with pytest.raises(StoreError):  # what `run` meets
        StateStore.open(state)


def test_check_refuses_a_state_path_that_is_a_folder(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder where the database should be is named as such."""
    state = tmp_path / "state.db"
    state.mkdir()
    message = refused(capsys, config(tmp_path, f'state_path = "{state}"\n'))
    assert f"watcher.state_path: {state} is a folder, not a file" in message


def test_check_says_a_missing_folder_will_be_created_and_creates_nothing(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing folder `run` can create is fine, and `check` says it will be; it writes
    nothing itself."""
    state = tmp_path / "new" / "deeper" / "state.db"
    code, out, err = check(capsys, config(tmp_path, f'state_path = "{state}"\n'))
    assert 0 == code, err
    assert f"state: {state} (folder {state.parent} will be created)" in out
    assert not (tmp_path / "new").exists()


@needs_permissions
def test_check_refuses_a_read_only_state_folder(
    tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder the daemon cannot write (the database, its WAL and lock live there)."""
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        message = refused(capsys, config(tmp_path, f'state_path = "{folder / "state.db"}"\n'))
    finally:
        folder.chmod(0o700)
    assert f"watcher.state_path: folder {folder} is not writable" in message


# --- did you mean ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("watcher", "top", "extra", "expected"),
    [
        ("pol_interval = 3", "", "", "watcher.pol_interval: unknown key (did you mean poll_interval?)"),
        ("", "[fireworks]\nacount_id = 'x'", "", "fireworks.acount_id: unknown key (did you mean account_id?)"),
        ("", "[fireworks]\napi_keyfile = 'x'", "", "(did you mean api_key_file?)"),
        ("", "", "to_state = ['FAILED']", "channel[0].to_state: unknown key (did you mean to_states?)"),
        ("", "[wacher]", "", "wacher: unknown key (did you mean watcher?)"),
        ("", "[[watches]]\njobs = ['x']", "", "watches: unknown key (did you mean watch?)"),
        ("zebra = 1", "", "", "watcher.zebra: unknown key"),  # no far-fetched guess
    ],
    ids=["watcher", "fireworks", "key-file", "channel", "top", "plural", "far"],
)  # fmt: skip
def test_an_unknown_key_close_to_a_known_one_is_named(
    tmp_path: Path,
    clean_env: None,
    capsys: pytest.CaptureFixture[str],
    watcher: str,
    top: str,
    extra: str,
    expected: str,
) -> None:
    """A typo gets the key it most likely meant, from that table's own keys; a key like
    none gets no guess."""
    message = refused(capsys, config(tmp_path, watcher + "\n", top=top, extra=extra + "\n"))
    assert message.endswith(expected)


# --- the lock file is never followed ------------------------------------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    """A file someone wants overwritten through the lock file; checked untouched after."""
    path = tmp_path / "victim.txt"
    path.write_bytes(VICTIM)
    path.chmod(0o644)
    yield path
    assert VICTIM == path.read_bytes()
    assert 0o644 == stat.S_IMODE(path.stat().st_mode)


def test_a_symlinked_lock_file_is_refused(tmp_path: Path, victim: Path) -> None:
    """state.db.lock -> victim: a one-line StoreError; the victim keeps its bytes and mode."""
    db = tmp_path / "state.db"
    (tmp_path / "state.db.lock").symlink_to(victim)

    with pytest.raises(StoreError) as info, exclusive(db):
        pass  # pragma: no cover

    assert f"lock file {db}.lock is a symbolic link" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_hard_linked_lock_file_is_refused(tmp_path: Path, victim: Path) -> None:
    """state.db.lock as a second name of the victim: refused as well."""
    db = tmp_path / "state.db"
    os.link(victim, tmp_path / "state.db.lock")

    with pytest.raises(StoreError, match="has other names"), exclusive(db):
        pass  # pragma: no cover


def test_once_exits_2_on_a_symlinked_lock_file(
    tmp_path: Path, clean_env: None, victim: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the CLI: one line, exit 2, and the victim is untouched."""
    (tmp_path / "state.db.lock").symlink_to(victim)

    # Nothing answers there: the old code, which followed the link, polled and failed (exit 1).
    nothing = '[fireworks]\nbase_url = "http://127.0.0.1:9"\n'
    code = main(["once", "-c", str(config(tmp_path, top=nothing))])

    err = capsys.readouterr().err.strip()
    assert 2 == code, err
    assert err.endswith("state.db.lock is a symbolic link: refused (remove it)")
    assert 1 == len(err.splitlines())


# --- the state's files are the owner's alone -------------------------------------------------


def test_open_makes_the_database_and_its_wal_and_shm_owner_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database left 0644 (and its WAL and SHM, while another connection holds them) is made
    0600 on open, with one warning per file naming it; a second open says nothing."""
    db = tmp_path / "state.db"
    with StateStore.open(db):
        pass
    other = sqlite3.connect(db)  # keeps -wal and -shm in place
    try:
        other.execute("PRAGMA journal_mode=WAL")
        other.execute("CREATE TABLE IF NOT EXISTS scratch (x)")
        other.commit()
        trio = [db, tmp_path / "state.db-wal", tmp_path / "state.db-shm"]
        for path in trio:
            path.chmod(0o644)

        with caplog.at_level(logging.WARNING), StateStore.open(db):
            pass

        assert [0o600] * 3 == [stat.S_IMODE(p.stat().st_mode) for p in trio]
        told = [r for r in caplog.records if r.getMessage() == "store.file_mode_tightened"]
        assert [str(p) for p in trio] == [getattr(r, "path", None) for r in told]
        assert ["0644"] * 3 == [getattr(r, "was", None) for r in told]

        caplog.clear()
        with caplog.at_level(logging.WARNING), StateStore.open(db):
            pass
        assert [] == [r for r in caplog.records if "file_mode" in r.getMessage()]
    finally:
        other.close()


def test_a_rescue_copy_is_never_readable_by_others(tmp_path: Path) -> None:
    """While VACUUM INTO writes `*.orphaned-*` (umask 022), the copy is already 0600."""
    db = tmp_path / "state.db"
    with StateStore.open(db) as store:
        store.record(Decision([], [], now=datetime.now(UTC), flags={"kept": "1"}))
    conn = sqlite3.connect(db)
    seen: set[int] = set()

    def look() -> int:
        seen.update(stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("state.db.orphaned-*"))
        return 0

    conn.set_progress_handler(look, 1)
    old_umask = os.umask(0o022)
    try:
        saved = files.rescue(conn, db, restore=False)
    finally:
        os.umask(old_umask)
        conn.close()

    assert seen, "the progress handler never saw the copy being written"
    assert {0o600} == seen
    assert 0o600 == stat.S_IMODE(saved.stat().st_mode)
    with StateStore.open(saved) as copy:
        assert "1" == copy.flag("kept")
