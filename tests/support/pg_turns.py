"""One PostgreSQL server serves both test workers, and the chaos run restarts it: a restart
waits until the other worker's test in progress has ended, and no test starts during one.

File locks (`flock`), so the turns hold across the workers' processes. Every test holds the
shared turn while it runs (`tests/conftest.py`); a restart takes it alone. The intent lock in
front of it keeps a restart from waiting forever behind one test starting after another.
Outside pytest (`python -m tests.support.chaos`) nobody else holds the locks.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_FOLDER = Path(tempfile.gettempdir())
_INTENT = _FOLDER / f"fireworks-watcher-tests-{os.getuid()}.intent.lock"
_TURN = _FOLDER / f"fireworks-watcher-tests-{os.getuid()}.turn.lock"


@contextmanager
def _held(path: Path, mode: int) -> Iterator[None]:
    with path.open("a") as file:
        fcntl.flock(file, mode)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


@contextmanager
def shared_turn() -> Iterator[None]:
    """Held while one test runs: shared with the other worker's tests, never with a restart."""
    with _held(_INTENT, fcntl.LOCK_SH):
        turn = _held(_TURN, fcntl.LOCK_SH)
        turn.__enter__()
    try:
        yield
    finally:
        turn.__exit__(None, None, None)


@contextmanager
def server_restart() -> Iterator[None]:
    """Held while PostgreSQL restarts: no other test is running or starts meanwhile."""
    with _held(_INTENT, fcntl.LOCK_EX), _held(_TURN, fcntl.LOCK_EX):
        yield
