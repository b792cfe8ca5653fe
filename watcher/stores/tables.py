"""What every table mixin of `StateStore` works over: the connection, its lock, the hook for
unreadable rows, and the store's transactions (`StateStore` provides them)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

#: Told of each row that cannot be read: (`table row`, reason). The row costs only itself: an
#: outbox row is quarantined (dead, the reason as its error), a job row is treated as never
#: seen (re-baselined), a flag as unset.
OnUnreadable = Callable[[str, str], None]


def ignore(*_: str) -> None:
    """The default hook: tell no one."""


class Tables:
    """The base of the table mixins: declarations only, filled in by `StateStore`."""

    _lock: threading.Lock
    _conn: sqlite3.Connection
    _on_unreadable: OnUnreadable

    def _write(self, action: str = "write") -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _errors(self, action: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _check_fence(self, conn: sqlite3.Connection) -> None:
        raise NotImplementedError

    def _read(self, query: str, params: Sequence[object] = ()) -> list[Any]:
        """The rows of one read."""
        with self._lock, self._errors("read"):
            return self._conn.execute(query, params).fetchall()
