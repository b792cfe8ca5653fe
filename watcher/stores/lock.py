"""One daemon per state file: an exclusive lock held for the daemon's life."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
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

    The lock file is never a symbolic link or another name of some file: the pid written
    into it would overwrite that file.

    Raises:
        StateLocked: another process holds it.
        StoreError: the lock file cannot be created, or is a link.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            msg = f"lock file {lock_path} is a symbolic link: refused (remove it)"
            raise StoreError(msg) from None
        raise StoreError(f"cannot create lock file {lock_path}: {exc.strerror}") from None
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or found.st_nlink > 1:
            what = "has other names (hard links)" if found.st_nlink > 1 else "is not a file"
            raise StoreError(f"lock file {lock_path} {what}: refused (remove it)")
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
