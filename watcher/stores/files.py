"""The state file itself: created with safe modes, known by its identity, rescued when lost.

SQLite keeps writing through its open descriptors when the path is deleted or another file is
renamed over it; the store compares the path's (st_dev, st_ino) with the file it opened before
each write, and on a mismatch saves what it holds with `rescue` and stops.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from watcher.core.errors import StoreError

Identity = tuple[int, int]


def prepare(path: Path) -> None:
    """Create the parent directory (0700) and the file (0600) if missing; check it is writable."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
            path.parent.chmod(0o700)  # mkdir's mode is filtered by the umask
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = os.open(path, os.O_RDWR)  # fails on a directory or a read-only file
        else:
            os.fchmod(fd, 0o600)  # os.open's mode is filtered by the umask too
        os.close(fd)
    except OSError as exc:
        raise StoreError(f"cannot open state database {path}: {reason(exc)}") from exc


def identity(path: Path) -> Identity | None:
    """The (st_dev, st_ino) of the file at `path`, or None when there is none.

    Raises:
        OSError: it cannot be told (EIO, EACCES on a directory, ...).
    """
    try:
        found = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return found.st_dev, found.st_ino


def rescue(conn: sqlite3.Connection, path: Path, *, restore: bool) -> Path:
    """Write everything `conn` holds to a new file: back at `path` when `restore` and the path
    is still free, else beside it as `<name>.orphaned-<UTC time>`. Returns where.

    Raises:
        sqlite3.Error, OSError: the copy could not be written.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    copy = path.with_name(f"{path.name}.orphaned-{stamp}")
    # VACUUM INTO reads through the connection, so the copy has what its WAL holds too.
    conn.execute("VACUUM INTO ?", (str(copy),))
    os.chmod(copy, 0o600)
    if not restore:
        return copy
    try:
        os.link(copy, path)  # never over a file someone put there meanwhile
    except OSError:
        return copy
    os.unlink(copy)
    return path


def lose(conn: sqlite3.Connection, path: Path, *, deleted: bool) -> str:
    """Save what `conn` holds (see `rescue`), close it, and say so in one line.

    SQLite would go on writing into a deleted or replaced file, and the next start would
    silently begin from nothing (or from someone else's state): the store stops instead.
    """
    how = "deleted" if deleted else "replaced by another file"
    try:
        saved = rescue(conn, path, restore=deleted)
        with contextlib.suppress(sqlite3.Error):
            # Empty the WAL into the old file, so that no stale frame can ever be replayed
            # onto whatever now has the path.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        kept = "written back to it" if saved == path else f"saved to {saved}"
    except (sqlite3.Error, OSError) as exc:
        kept = f"not saved ({reason(exc)})"
    conn.close()
    return (
        f"state file {path} was {how} while running; what it held was {kept}; "
        "nothing more is recorded or sent until a restart"
    )


def reason(exc: Exception) -> str:
    """An exception as one line."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(text.split()) or type(exc).__name__
