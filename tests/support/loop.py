"""The settings of a poller test against the simulator and one receiver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.account import ACCOUNT, KEY
from tests.support.servers import ServedApp
from watcher import config


def settings_for(
    server: ServedApp,
    state: Path,
    jobs: list[str],
    channels: list[dict[str, Any]],
    **watcher: Any,
) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {"poll_interval": 0.2, "state_path": str(state), **watcher},
            "watch": [{"kind": "dpo", "jobs": jobs}],
            "channel": channels,
        },
        {"FIREWORKS_API_KEY": KEY},
    )
