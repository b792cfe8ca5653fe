"""`fireworks-watcher demo`: the simulator, a watcher and a console channel, in one process.

No Fireworks account needed: a few simulated DPO jobs move within ~15 s and every transition
is printed the way a chat channel would receive it. The status page is served on a free
loopback port while it runs (with `--stay`, until Ctrl-C).
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path
from typing import TextIO

import anyio
import anyio.from_thread

import fireworks_sim as simulator
from watcher import app, config, logs
from watcher.core.clock import SteadyClock
from watcher.core.model import JobKind, JobRef, is_settled
from watcher.runtime.host_clocks import monotonic, utcnow
from watcher.web.health import Health
from watcher.web.serve import serve_health

_KEY = "demo-key"
_ACCOUNT = "demo-account"


def _serve_in_background(sim: simulator.Simulator) -> str:
    """Start the simulator on a free loopback port in a daemon thread; return its URL."""
    ready = threading.Event()
    urls: list[str] = []

    def announce(url: str) -> None:
        urls.append(url)
        ready.set()

    thread = threading.Thread(
        target=simulator.serve,
        args=(sim, "127.0.0.1", 0),
        kwargs={"ready": announce},
        daemon=True,
        name="simulator",
    )
    thread.start()
    if not ready.wait(timeout=10):
        msg = "the simulator did not start within 10 s"
        raise RuntimeError(msg)
    return urls[0]


def run_demo(*, duration: float = 40.0, stay: bool = False) -> int:
    """Show jobs moving for at most `duration` seconds (then, with `stay`, keep watching and
    serving the page until Ctrl-C); returns the exit code (0)."""
    logs.configure(level="warning")
    sim = simulator.Simulator(api_key=_KEY, account_id=_ACCOUNT)
    job_ids = simulator.demo_timeline(sim)
    base_url = _serve_in_background(sim)
    out = sys.stdout
    out.write(
        f"fireworks-watcher demo: a simulated Fireworks API at {base_url} with "
        f"{len(job_ids)} DPO jobs ({', '.join(job_ids)}).\n"
        "The watcher discovers them, records their states silently, then announces every\n"
        "transition on a console channel (in production: Slack, email, ... via apprise).\n\n"
    )
    out.flush()
    with tempfile.TemporaryDirectory(prefix="fireworks-watcher-demo-") as tmp:
        settings = config.parse(
            {
                "fireworks": {"account_id": _ACCOUNT, "base_url": base_url},
                "watcher": {
                    "poll_interval": 1,
                    "terminal_poll_interval": 5,
                    "state_path": str(Path(tmp) / "state.db"),
                    "health_listen": "127.0.0.1:0",
                },
                "watch": [{"kind": "dpo", "discover": True}],
                "channel": [{"name": "console", "urls": ["console://"]}],
            },
            {"FIREWORKS_API_KEY": _KEY},
            source="demo",
        )
        moving = [j for j in job_ids if j != "demo-steady"]
        try:
            anyio.run(_watch, settings, moving, duration, stay, out)
        except KeyboardInterrupt:
            out.write("\ndemo stopped.\n")
    return 0


async def _watch(
    settings: config.Settings, job_ids: list[str], limit: float, stay: bool, out: TextIO
) -> None:
    """Run watcher cycles, with the status page up, until every job in `job_ids` settled
    (or `limit` passed); with `stay`, go on until cancelled."""
    refs = [JobRef(JobKind.DPO, job_id) for job_id in job_ids]
    clock = SteadyClock(utcnow, monotonic)
    health = Health(poll_interval=settings.watcher.poll_interval, clock=clock)
    async with (
        app.open_runtime(settings, health=health, clock=clock) as runtime,
        anyio.from_thread.BlockingPortal() as portal,
        anyio.create_task_group() as tg,
    ):
        page = await app.status_page(settings, runtime.store, health, portal, clock)
        port = await tg.start(serve_health, health.app(page), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}/"
        out.write(f"status page: open {url} while it runs\n\n")
        out.flush()
        watcher = runtime.watcher

        def settled() -> int:
            return sum(1 for ref in refs if (s := watcher.last(ref)) and is_settled(s))

        async def cycle() -> None:
            await watcher.run_once()
            await anyio.sleep(await watcher.next_wake())

        with anyio.move_on_after(limit):
            while settled() < len(refs):
                await cycle()
        out.write(
            f"\ndemo finished: {settled()} of {len(refs)} moving jobs reached an outcome; "
            '"fireworks-watcher status" shows the same for a real daemon.\n'
        )
        if stay:
            out.write(f"the status page stays up at {url} until Ctrl-C\n")
            out.flush()
            while True:
                await cycle()
        else:
            out.write(f"(fireworks-watcher demo --stay keeps the page at {url} up)\n")
        tg.cancel_scope.cancel()
