"""The state file itself: created with safe modes, known by its identity, rescued when lost.

SQLite keeps writing through its open descriptors when the path is deleted or another file is
renamed over it; the store compares the path's (st_dev, st_ino) with the file it opened before
each write, and on a mismatch saves what it holds with `rescue` and stops.

The state holds job names, people and channel hosts: it is the owner's alone (0600), and so
are its WAL and shared-memory files, which SQLite creates with the database's mode.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

from watcher.core.errors import StoreError

Identity = tuple[int, int]

log = logging.getLogger(__name__)

#: The files SQLite keeps beside the database in WAL mode.
COMPANIONS = ("-wal", "-shm")


def prepare(path: Path) -> None:
    """Create the parent directory (0700) and the file (0600) if missing; check it is writable.

    An existing database, WAL or shared-memory file that others may read is made 0600, with
    one warning naming it: they hold what the database holds.
    """
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
        try:
            _owner_only(path, os.fstat(fd).st_mode, fd)
        finally:
            os.close(fd)
        for suffix in COMPANIONS:
            companion = path.with_name(path.name + suffix)
            try:
                found = os.lstat(companion)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(found.st_mode):
                _owner_only(companion, found.st_mode, companion)
    except OSError as exc:
        raise StoreError(f"cannot open state database {path}: {reason(exc)}") from exc


def _owner_only(path: Path, mode: int, file: int | Path) -> None:
    """Make a file (its descriptor, or its path) others may use 0600, and say so once."""
    if mode & 0o077:
        was = f"{stat.S_IMODE(mode):04o}"
        try:
            os.chmod(file, 0o600)
        except PermissionError:  # another user's file, shared on purpose: theirs to change
            log.warning("store.file_mode_open", extra={"path": str(path), "mode": was})
            return
        log.warning("store.file_mode_tightened", extra={"path": str(path), "was": was})


def unusable(path: Path) -> str | None:
    """Why a state database could not be opened or created at `path`, or None when it can as
    far as the file system tells (nothing is created: `check` asks this).
    """
    folder = path.parent
    try:
        if path.exists() or path.is_symlink():
            if path.is_dir():
                return f"{path} is a folder, not a file"
            if path.is_symlink() and not path.exists():
                return f"{path} is a symbolic link to nothing"
            if not path.is_file():
                return f"{path} is not a regular file"
            if not _may(path, os.R_OK | os.W_OK):
                return f"{path} is not writable"
        ancestor = folder
        while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            if ancestor == folder:
                return f"{folder} is not a folder"
            return f"folder {folder} cannot be created: {ancestor} is not a folder"
        if not _may(ancestor, os.W_OK | os.X_OK):
            if ancestor == folder:
                return f"folder {folder} is not writable"
            return f"folder {folder} does not exist and cannot be created in {ancestor}"
    except OSError as exc:
        return f"{path}: {reason(exc)}"
    return None


def _may(path: Path, mode: int) -> bool:
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


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
    # Created empty and 0600 first (VACUUM INTO fills an empty file): never readable by
    # others, not even between the copy and a chmod.
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # os.open's mode is filtered by the umask
    finally:
        os.close(fd)
    try:
        # VACUUM INTO reads through the connection, so the copy has what its WAL holds too.
        conn.execute("VACUUM INTO ?", (str(copy),))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(copy)
        raise
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
