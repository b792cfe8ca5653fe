"""`fireworks-watcher run` as a real subprocess, its JSON log lines collected; waits on its
/metrics."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.waiting import DEADLINE, wait_until

LAST_CYCLE = "fireworks_watcher_last_cycle_timestamp_seconds"


def write_config(
    folder: Path,
    urls: Sequence[str],
    *,
    watch: str = 'jobs = ["job-a"]',
    poll: float = 0.3,
    budget: int | None = 6000,
    state: str | None = "state.db",
    health: bool = False,
    watcher: str = "",
    channel: str = "",
    name: str = "team",
) -> Path:
    """`folder`/watcher.toml for a daemon: one `[[watch]]` table made of `watch` (TOML lines;
    more tables may follow them), one channel `name` on `urls` (plus the `channel` lines),
    polled every `poll` s, its state in `folder`/`state` (None: none, the environment names
    it), the health endpoint on a free port with `health`, and `watcher` lines added.

    `budget` is `max_requests_per_minute` (None: the default): fast polls for a test, which the
    default 60/min budget would pace.
    """
    path = folder / "watcher.toml"
    lines = [f"poll_interval = {poll:g}"]
    if budget is not None:
        lines.append(f"max_requests_per_minute = {budget}")
    if state is not None:
        lines.append(f'state_path = "{folder / state}"')
    lines.append(f'health_listen = "{"127.0.0.1:0" if health else ""}"')
    url_list = ", ".join(f'"{url}"' for url in urls)
    path.write_text(
        "[watcher]\n"
        + "\n".join([*lines, watcher])
        + f'\n\n[[watch]]\n{watch}\n\n[[channel]]\nname = "{name}"\nurls = [{url_list}]\n'
        + channel
        + "\n"
    )
    return path


def serve_health(config: Path, listen: str = "127.0.0.1:0") -> None:
    """Turn on the daemon's health endpoint on `listen` (by default a free port, given by
    `health.listening`)."""
    config.write_text(
        config.read_text().replace('health_listen = ""', f'health_listen = "{listen}"')
    )


def run_watcher(
    *argv: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`fireworks-watcher ARGV` as a person runs it, in a subprocess: exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "watcher", *argv],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
        check=False,
    )


def last_cycle(base: str) -> float:
    """When the daemon's last poll cycle finished, from its /metrics (0 before the first)."""
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(f"{LAST_CYCLE} "):
            return float(line.split()[1])
    pytest.fail(f"no {LAST_CYCLE} in /metrics")


def wait_cycles(base: str, count: int) -> None:
    """Wait (with the deadline) until the daemon has finished `count` more poll cycles."""
    stamps = [last_cycle(base)]

    def advanced() -> bool:
        if (stamp := last_cycle(base)) != stamps[-1]:
            stamps.append(stamp)
        return len(stamps) > count

    wait_until(advanced, f"{count} more poll cycles")


class Daemon:
    """`fireworks-watcher run` in a subprocess, with its JSON log lines collected."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.env = env
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watcher", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                continue

    def wait_event(
        self, event: str, count: int = 1, timeout: float = DEADLINE
    ) -> list[dict[str, Any]]:
        """Block until `count` log events named `event` were seen (since the last call)."""
        seen: list[dict[str, Any]] = []
        end = time.monotonic() + timeout
        while len(seen) < count:
            try:
                item = self.events.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                pytest.fail(
                    f"no {count} x {event} in {timeout:g} s; log:\n{''.join(self.lines[-20:])}"
                )
            if item.get("event") == event:
                seen.append(item)
        return seen

    def close(self) -> None:
        """Kill the process if it still runs, and release its pipe."""
        if self.proc.poll() is None:
            self.kill()
        self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)

    def health_url(self) -> str:
        """Its health endpoint's base URL, once it logged `health.listening`."""
        return f"http://127.0.0.1:{self.wait_event('health.listening')[0]['port']}"
