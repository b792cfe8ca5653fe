"""The watcher's durable state: each job's last seen snapshot and an outbox of notifications.

A poll writes a job's new snapshot and the notifications its transition causes in ONE SQLite
transaction, before anything is sent; the notifier then works through the outbox and marks each
row delivered, retried later, or dead. So a crash can repeat a send that was in flight but never
loses one, and a restart never repeats a delivered notification.

Only this package imports `sqlite3`. `StateStore` is synchronous: the daemon calls it through
`stores.aio.AsyncStore`, in a worker thread behind a `CapacityLimiter(1)`. Every `sqlite3`
error leaves it as a one-line `StoreError` naming the database path. `StateStore` opens the
connection (`stores.tables.Db`), migrates the schema (`stores.rows`) and composes the tables
over it, one object each (`stores.state_table`, `alert_table`, `outbox_table`,
`silence_table`, `history_table`, `digest_table`, `lease_table`); a table that needs another
(a write under the lease's fence, the silences the outbox announces after) is given it. The
file's identity and rescue are in `stores.files`, the one-daemon lock in `stores.lock`.

Hostile contents cost only their row: a cell that does not decode makes its outbox row dead
(quarantined, with the reason), its job row unknown (re-baselined), its flag unset; each is
told to `on_unreadable`. A state file deleted or replaced while open is told once to `on_lost`,
after which every call raises `StoreError`: nothing is written as if it were still durable.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self, TypedDict, Unpack

from watcher.core.errors import StoreError
from watcher.stores.alert_table import AlertTable
from watcher.stores.digest_table import DigestTable
from watcher.stores.forward import Forward
from watcher.stores.history_table import HistoryTable
from watcher.stores.lease_table import Fence, LeaseTable
from watcher.stores.outbox_table import OutboxTable
from watcher.stores.rows import MIGRATIONS
from watcher.stores.silence_table import SilenceTable
from watcher.stores.state_table import StateTable
from watcher.stores.tables import Db, OnLost, OnUnreadable, ignore


class Options(TypedDict, total=False):
    """`StateStore.open`'s keywords (see `StateStore.__init__`)."""

    on_unreadable: OnUnreadable
    on_lost: OnLost
    migrate: bool


class StateStore:
    """Last seen job snapshots and the notification outbox in one SQLite file: one `Db` and
    the tables over it, each method of the store one of a table's (`Forward`).

    Use as a context manager, or call `close()`. Methods raise `StoreError` when the database
    cannot be read or written.
    """

    SCHEMA_VERSION: ClassVar[int] = len(MIGRATIONS)

    def __init__(
        self,
        path: Path,
        *,
        on_unreadable: OnUnreadable = ignore,
        on_lost: OnLost = ignore,
        migrate: bool = True,
    ) -> None:
        """Open (creating if needed, mode 0600) the database at `path` and bring its schema up
        to date (with `migrate=False`, refuse one that is behind instead).

        Raises:
            StoreError: the file cannot be created or opened, is not a database, was written
                by a newer fireworks-watcher, or (`migrate=False`) needs a migration.
        """
        self.db = Db(path, on_unreadable=on_unreadable, on_lost=on_lost)
        try:
            self.migrated_from = self._migrate(apply=migrate)
        except BaseException:
            self.db.close()
            raise
        self.write_fence = Fence()
        self.lease_table = LeaseTable(self.db, self.write_fence)
        self.state_table = StateTable(self.db, self.lease_table)
        self.alert_table = AlertTable(self.db)
        self.silence_table = SilenceTable(self.db)
        self.outbox_table = OutboxTable(self.db, self.silence_table)
        self.history_table = HistoryTable(self.db, self.lease_table)
        self.digest_table = DigestTable(self.db)

    @classmethod
    def open(cls, path: Path, **options: Unpack[Options]) -> StateStore:
        """Open the database at `path`; the same as `StateStore(path, ...)`."""
        return cls(path, **options)

    @property
    def path(self) -> Path:
        """The database file."""
        return self.db.path

    @property
    def lost(self) -> str | None:
        """Why the store stopped (its file was deleted or replaced while open), or None."""
        return self.db.lost

    def close(self) -> None:
        """Close the database; further calls raise `StoreError`. Closing twice is harmless."""
        self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the tables' methods ----------------------------------------------------------------

    last = Forward("state_table", StateTable.last)
    last_all = Forward("state_table", StateTable.last_all)
    record = Forward("state_table", StateTable.record)
    flag = Forward("state_table", StateTable.flag)
    flags = Forward("state_table", StateTable.flags)
    forget = Forward("state_table", StateTable.forget)

    since_all = Forward("alert_table", AlertTable.since_all)
    polled_all = Forward("alert_table", AlertTable.polled_all)
    open_conditions = Forward("alert_table", AlertTable.open_conditions)
    reminder_times = Forward("alert_table", AlertTable.reminder_times)

    due = Forward("outbox_table", OutboxTable.due)
    claim = Forward("outbox_table", OutboxTable.claim)
    claim_target = Forward("outbox_table", OutboxTable.claim_target)
    release_claims = Forward("outbox_table", OutboxTable.release_claims)
    release = Forward("outbox_table", OutboxTable.release)
    next_due_at = Forward("outbox_table", OutboxTable.next_due_at)
    outbox_stats = Forward("outbox_table", OutboxTable.outbox_stats)
    undelivered = Forward("outbox_table", OutboxTable.undelivered)
    mark_delivered = Forward("outbox_table", OutboxTable.mark_delivered)
    mark_retry = Forward("outbox_table", OutboxTable.mark_retry)
    mark_dead = Forward("outbox_table", OutboxTable.mark_dead)
    mark_silenced = Forward("outbox_table", OutboxTable.mark_silenced)
    hold = Forward("outbox_table", OutboxTable.hold)
    settle_many = Forward("outbox_table", OutboxTable.settle_many)
    announce_after_silences = Forward("outbox_table", OutboxTable.announce_after_silences)
    prune = Forward("outbox_table", OutboxTable.prune)

    add_silence = Forward("silence_table", SilenceTable.add_silence)
    expire_silence = Forward("silence_table", SilenceTable.expire_silence)
    silences = Forward("silence_table", SilenceTable.silences)

    history = Forward("history_table", HistoryTable.history)
    silenced = Forward("history_table", HistoryTable.silenced)
    prune_history = Forward("history_table", HistoryTable.prune_history)

    digest_events = Forward("digest_table", DigestTable.digest_events)

    fence = Forward("write_fence", Fence.fence)
    acquire_lease = Forward("lease_table", LeaseTable.acquire_lease)
    release_lease = Forward("lease_table", LeaseTable.release_lease)
    lease = Forward("lease_table", LeaseTable.lease)
    beat = Forward("lease_table", LeaseTable.beat)
    replicas = Forward("lease_table", LeaseTable.replicas)

    # -- helpers ----------------------------------------------------------------------------

    def _migrate(self, *, apply: bool = True) -> int:
        """Create or upgrade the schema; refuse a database from a newer version (and, unless
        `apply`, one that needs upgrading). Returns the version found."""
        with self.db.write("open") as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            try:
                version = 0 if row is None else int(row[0])
            except (TypeError, ValueError):
                raise StoreError(
                    f"cannot open state database {self.db.path}: unreadable schema version"
                ) from None
            if version > self.SCHEMA_VERSION:
                raise StoreError(
                    f"cannot open state database {self.db.path}: written by a newer "
                    f"fireworks-watcher (schema {version}, this one knows {self.SCHEMA_VERSION})"
                )
            if not apply and version < self.SCHEMA_VERSION:
                raise StoreError(
                    f"state database {self.db.path} is at schema {version}, this "
                    f"fireworks-watcher needs {self.SCHEMA_VERSION}: run `fireworks-watcher migrate`"
                )
            for script in MIGRATIONS[version : self.SCHEMA_VERSION]:
                # executescript() would COMMIT our transaction; run the statements one by one.
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(self.SCHEMA_VERSION),),
            )
        return version
