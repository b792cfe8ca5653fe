"""What the tables of `StateStore` share: `Db`, the one SQLite connection with its lock, its
transactions, the one translation of errors to `StoreError`, the watch on the file (deleted or
replaced while open) and the hook for unreadable rows. Each table takes the `Db` it works over.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from watcher.core.errors import StoreError
from watcher.stores import files

#: Told of each row that cannot be read: (`table row`, reason). The row costs only itself: an
#: outbox row is quarantined (dead, the reason as its error), a job row is treated as never
#: seen (re-baselined), a flag as unset.
OnUnreadable = Callable[[str, str], None]
#: Told once, with the reason, when the state file is deleted or replaced while open.
OnLost = Callable[[str], None]


def ignore(*_: str) -> None:
    """The default hook: tell no one."""


class Db:
    """The connection to one SQLite file, opened (created if needed, mode 0600) with WAL and
    FULL sync; its schema is `StateStore`'s business."""

    def __init__(self, path: Path, *, on_unreadable: OnUnreadable, on_lost: OnLost) -> None:
        self.path = path
        self.on_unreadable = on_unreadable
        self._on_lost = on_lost
        self._lost: str | None = None
        # The connection is shared across worker threads; the lock keeps one transaction at a
        # time even if a caller forgets the capacity limiter.
        self._lock = threading.Lock()
        files.prepare(path)
        try:
            self._identity = files.identity(path)
        except OSError as exc:
            raise StoreError(f"cannot open state database {path}: {files.reason(exc)}") from exc
        try:
            self._conn = sqlite3.connect(
                path, timeout=5.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {path}: {files.reason(exc)}") from exc
        try:
            with self.errors("open"):
                self._conn.execute("PRAGMA journal_mode=WAL")
                # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss,
                # and a committed transition must survive.
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA busy_timeout=5000")
        except BaseException:
            self._conn.close()
            raise

    @property
    def lost(self) -> str | None:
        """Why the store stopped (its file was deleted or replaced while open), or None."""
        return self._lost

    def close(self) -> None:
        """Close the connection; further calls raise `StoreError`. Closing twice is harmless."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def write(self, action: str = "write") -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._lock, self.errors(action):
            conn = self._conn
            # IMMEDIATE takes the write lock now, so a busy database fails here, not mid-way.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # The original error matters; a failed rollback (no transaction left) does not.
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for the reads of one block, under the lock."""
        with self._lock, self.errors("read"):
            yield self._conn

    def read(self, query: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of one read."""
        with self.reading() as conn:
            return conn.execute(query, params).fetchall()

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """The one translation to the error tree: nothing but StoreError leaves the store, so
        a bad value in one row is a skipped write, never a crashed delivery batch."""
        if self._lost is not None:
            raise StoreError(self._lost)
        # Every call looks (one stat): the dispatcher's calls every few seconds find a lost file
        # within them, however quiet the jobs are.
        self._check_file()
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot {action} state database {self.path}: {files.reason(exc)}"
            ) from exc
        except (TypeError, ValueError, KeyError) as exc:
            raise StoreError(f"cannot {action} state database {self.path}: {exc}") from exc

    def _check_file(self) -> None:
        """Stop once the path no longer names the file opened (see `files.lose`)."""
        try:
            now = files.identity(self.path)
        except OSError:  # cannot tell (a flaky mount): not a loss; the next call looks again
            return
        if now != self._identity:
            self._lost = files.lose(self._conn, self.path, deleted=now is None)
            self._on_lost(self._lost)
            raise StoreError(self._lost)
