"""Two replicas on one store: taking the lease over, the titles a receiver heard."""

from __future__ import annotations

import anyio
import anyio.to_thread

from tests.support.servers import JsonReceiver
from watcher import app

#: How long a takeover may take: the lease (1 s at poll_interval 1) and a check, with room.
TAKEOVER_DEADLINE = 10.0


def titles(receiver: JsonReceiver) -> list[str]:
    return [str(m["title"]) for m in receiver.messages]


async def take_over(runtime: app.Runtime) -> None:
    """Check the lease until this replica holds it (the other stopped renewing)."""
    with anyio.fail_after(TAKEOVER_DEADLINE):
        while True:
            await runtime.leadership.check()
            if runtime.leadership.leader:
                return
            await anyio.sleep(runtime.leadership.check_every)
