"""Shared fixtures: the simulator served over loopback and a receiver of apprise posts."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fireworks_sim import Simulator
from tests.servers import JsonReceiver, ServedApp

KEY = "test-api-key-0123456789"
ACCOUNT = "acme"


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio, the backend the daemon runs on."""
    return "asyncio"


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


@pytest.fixture
def daemon_env(server: ServedApp) -> dict[str, str]:
    """The environment a deployed daemon gets: key, account and base URL from variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_")}
    env |= {
        "FIREWORKS_API_KEY": KEY,
        "FIREWORKS_ACCOUNT_ID": ACCOUNT,
        "FIREWORKS_BASE_URL": server.url,
        "FIREWORKS_WATCHER_LOG_FORMAT": "json",
    }
    return env
