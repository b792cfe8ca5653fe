"""One daemon per state file: an exclusive lock held for the daemon's life."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from watcher.core.errors import StateLocked, StoreError


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold `<path>.lock` for the block: one daemon per state file.

    An advisory `flock`, released by the kernel when the process dies however it dies, so a
    SIGKILL leaves no stale lock. The holder's pid is written into the file for the error
    message of the next one.

    Raises:
        StateLocked: another process holds it.
        StoreError: the lock file cannot be created.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot create lock file {lock_path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            msg = f"state file {path} is in use by another fireworks-watcher (pid {holder})"
            raise StateLocked(msg) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the lock
