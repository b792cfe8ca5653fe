"""Shared fixtures: the simulator served over loopback and a receiver of apprise posts."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from psycopg import sql

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.pg_turns import shared_turn
from tests.support.servers import JsonReceiver, ServedApp

#: Where the tests find a real PostgreSQL server (`.ci/postgres` starts one and prints it).
PG_DSN_ENV = "FIREWORKS_WATCHER_TEST_PG_DSN"


#: The layer whose every test is left out of the everyday run.
SLOW_LAYER = Path(__file__).parent / "system"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of `tests/system` `slow`: the everyday run is `python -m pytest -m "not
    slow"`, under 90 s on 2 cores; `python -m pytest` (CI, `.ci/run`) runs everything.

    The layers decide it, not a duration measured on one machine: a system test (crash, chaos,
    hostile, HA, the browser, schemathesis, the perf smoke test) kills processes or runs for
    seconds to minutes, so the whole layer is slow. Unit and contract tests run every day (the
    few contract tests that wait out a real deadline carry their own mark). An integration file
    whose tests each take seconds (daemons, real backoff, real deadlines) says so at its top,
    with `pytestmark = pytest.mark.slow`; the quick ones run every day. Find the costly ones
    with `python -m pytest --durations=60`.
    """
    for item in items:
        if SLOW_LAYER in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio, the backend the daemon runs on."""
    return "asyncio"


@pytest.fixture(autouse=True)
def postgres_turn(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test shares one turn on the PostgreSQL server but the one that restarts it, which
    takes the server alone for the restart (`tests/support/pg_turns.py`): two workers run."""
    if request.node.get_closest_marker("restarts_postgres") is not None:
        yield
        return
    with shared_turn():
        yield


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any blocking call made on an event loop thread from our code (the test's loop, or
    uvicorn's loop serving the simulator), as anyio's own suite does.

    BlockBuster only looks at threads running an event loop, so worker threads (sqlite3 and
    apprise run via `anyio.to_thread`) may block as designed. Each exception below is narrow:
    one function on one call path, with the reason it is not the loop blocking by mistake.
    """
    with blockbuster_ctx(["watcher", "fireworks_sim", "tests"]) as bb:
        # apprise scans its plugin folder once, lazily, when the first notifier is built.
        bb.functions["os.listdir"].can_block_in("apprise/manager.py", "load_modules")
        # Every `apprise.Apprise()` looks for its gettext catalogue (a few stats, no reads).
        for func in ("os.stat", "os.path.abspath"):
            bb.functions[func].can_block_in("apprise/locale.py", "add")
        # /metrics: prometheus_client's ProcessCollector reads /proc/self (memory, not disk).
        for func in ("io.BufferedReader.read", "os.listdir"):
            bb.functions[func].can_block_in("prometheus_client/process_collector.py", "collect")
        yield bb


@pytest.fixture(scope="module")
def server() -> Iterator[ServedApp]:
    """One uvicorn server per module; each test swaps in a fresh simulator."""
    with ServedApp(Simulator(api_key=KEY, account_id=ACCOUNT)) as served:
        yield served


@pytest.fixture
def sim(server: ServedApp) -> Simulator:
    """A fresh simulator behind the shared server."""
    fresh = Simulator(api_key=KEY, account_id=ACCOUNT)
    server.app = fresh
    return fresh


@pytest.fixture
def receiver() -> Iterator[JsonReceiver]:
    """A real HTTP endpoint for apprise `json://` posts."""
    with JsonReceiver() as rx:
        yield rx


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """The DSN of a real PostgreSQL server. Without one the test skips, with one line saying
    how to get one; under CI (`CI` set) a missing server fails the run instead."""
    dsn = os.environ.get(PG_DSN_ENV, "")
    if not dsn:
        if os.environ.get("CI"):
            pytest.fail(f"CI: no PostgreSQL: {PG_DSN_ENV} is not set (.ci/run sets it)")
        pytest.skip(f"no PostgreSQL: as root, export {PG_DSN_ENV}=$(bash .ci/postgres)")
    return dsn


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, server: ServedApp) -> None:
    """Point the CLI, run in this process, at the simulator through the documented
    environment variables (and nothing else of the caller's)."""
    for name in list(os.environ):
        if name.startswith(("FIREWORKS_", "STATE_DIRECTORY")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FIREWORKS_API_KEY", KEY)
    monkeypatch.setenv("FIREWORKS_ACCOUNT_ID", ACCOUNT)
    monkeypatch.setenv("FIREWORKS_BASE_URL", server.url)
    monkeypatch.setenv("FIREWORKS_WATCHER_LOG_FORMAT", "json")


def deployed_env(base_url: str) -> dict[str, str]:
    """The environment a deployed daemon gets: key, account and base URL from variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_")}
    env |= {
        "FIREWORKS_API_KEY": KEY,
        "FIREWORKS_ACCOUNT_ID": ACCOUNT,
        "FIREWORKS_BASE_URL": base_url,
        "FIREWORKS_WATCHER_LOG_FORMAT": "json",
    }
    return env


@pytest.fixture
def daemon_env(server: ServedApp) -> dict[str, str]:
    """`deployed_env` for the simulator behind `server`."""
    return deployed_env(server.url)


@pytest.fixture(scope="module")
def module_env(server: ServedApp) -> dict[str, str]:
    """`daemon_env` for a daemon shared by a module's tests."""
    return deployed_env(server.url)


@pytest.fixture
def state_url(pg_dsn: str) -> Iterator[str]:
    """A PostgreSQL schema of this test's own, as a `state_url` (dropped afterwards)."""
    schema = f"ha_{secrets.token_hex(4)}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            sep = "&" if "?" in pg_dsn else "?"
            yield f"{pg_dsn}{sep}options=-csearch_path%3D{schema}"
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# The contract suite's fixtures: every store test there runs on SQLite and PostgreSQL.
from tests.support.backends import any_store, backend, stores
from tests.support.browser import browser, chromium_path, page, playwright_turn  # noqa: F401

__all__ = ["any_store", "backend", "stores"]
