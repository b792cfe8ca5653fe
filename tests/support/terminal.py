"""A command run with its stdout on a pseudo-terminal, as a person at a terminal sees it."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tests.support.account import ACCOUNT, KEY


@dataclass(frozen=True, slots=True)
class Screen:
    """How the command ended, all the terminal received, and its stderr."""

    code: int
    text: str
    errors: str


def run_on_a_terminal(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    when: str = "",
    then: Callable[[], object] | None = None,
    timeout: float = 60,
) -> Screen:
    """Run `argv` with its stdout on a pseudo-terminal until it closes it; `then()` once the
    terminal shows `when`. Stderr goes to a file: a full pipe could stall the command."""
    leader, follower = pty.openpty()
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=follower, stderr=errors, env=dict(env)
        ) as proc,
    ):
        os.close(follower)
        received = b""
        done = then is None
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            received += chunk
            if not done and when.encode() in received and then is not None:
                then()
                done = True
        code = proc.wait(timeout=timeout)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    os.close(leader)
    return Screen(code, received.decode(), stderr)


def watch_on_a_terminal(
    server_url: str,
    argv: Sequence[str],
    *,
    when: str = "",
    then: Callable[[], object] | None = None,
) -> tuple[int, str]:
    """`fireworks-watcher watch ARGV` on a terminal (xterm, 120 columns) against the simulator
    at `server_url`: its exit code and all the terminal received."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIREWORKS_", "NO_COLOR"))}
    env |= {
        "FIREWORKS_API_KEY": KEY,
        "FIREWORKS_ACCOUNT_ID": ACCOUNT,
        "FIREWORKS_BASE_URL": server_url,
        "TERM": "xterm-256color",
        "COLUMNS": "120",
    }
    screen = run_on_a_terminal(
        [sys.executable, "-m", "watcher", "watch", *argv], env, when=when, then=then
    )
    return screen.code, screen.text
