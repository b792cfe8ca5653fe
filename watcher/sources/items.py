"""LIST items into snapshots: reusing what did not change, and dropping what is not a job.

A bad item costs only itself. An item that is not a job of this account and kind (no name, a
name of another account or collection, an id such as `.`, `v0 ` or `a/b`: see
`watcher.core.names`), or that repeats a name already on its page, is dropped with a warning,
and the rest of the page is read. The first of two items of one name stands, so a page means
the same thing on every poll (two answers for one name flapped forever).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

import orjson
import structlog

from watcher.core.errors import PayloadError
from watcher.core.kinds import JobKind
from watcher.core.model import JobSnapshot
from watcher.core.names import shown_name
from watcher.sources.pages import COMPARED, Seen
from watcher.sources.parse import parse_job

log = structlog.get_logger("watcher")

#: Distinct dropped items remembered, so each is warned of once rather than on every poll.
REJECTS_REMEMBERED: Final = 1024
#: Dropped items warned of one by one on a page; the rest are counted in one more line.
WARNINGS_PER_PAGE: Final = 5


def fingerprint(fields: tuple[object, ...]) -> int:
    """What is remembered of a job's compared fields until the next LIST: a hash of their
    JSON, never the values (a page of long status messages stayed in memory for good: eleven
    30 MB pages held 330 MB) nor the JSON (orjson's bytes keep a 1 KiB buffer each: 30 MB for
    10,000 jobs). The hash is keyed per process, so a job's change goes unseen for one LIST
    with odds of 2**-64. 0 (never trusted) for fields that are not JSON."""
    try:
        return hash(orjson.dumps(fields)) or 1
    except TypeError:  # orjson.JSONEncodeError too; values from JSON always encode
        return 0


class ItemReader:
    """Reads the items of LIST pages for one account.

    Args:
        account_id: The account whose jobs are listed.
        redact: Masks secrets in text that goes into a log line.
    """

    def __init__(self, account_id: str, redact: Callable[[str], str]) -> None:
        self._account_id = account_id
        self._redact = redact
        self._rejected: set[str] = set()
        self._page_warnings = 0

    def read(
        self,
        item: object,
        kind: JobKind,
        known: Mapping[str, Seen],
        fresh: dict[str, Seen],
        where: str,
    ) -> JobSnapshot | None:
        """The item's snapshot, or None when it is dropped; reused from the last LIST when
        the fields it reads are unchanged (most jobs do not move between two LISTs, and parsing
        is most of a cycle's CPU).

        Args:
            item: One element of the page's list.
            kind: The kind listed.
            known: What the last LIST said of each job, by name.
            fresh: What this page says so far, by name; the item is added when kept.
            where: The request and item position, for the warning.
        """
        if type(item) is not dict:
            name: object = None
            raw = 0
        else:
            name = item.get("name")
            raw = fingerprint(tuple(map(item.get, COMPARED[kind])))
        if type(name) is str and name in fresh:
            self._reject(where, f"{kind} job {shown_name(name)} is listed twice on a page")
            return None
        seen = known.get(name) if type(name) is str else None
        if seen is not None and raw and seen[0] == raw:
            snapshot = seen[1]  # its name was checked when it was first parsed
        else:
            try:
                snapshot = parse_job(item, kind=kind, account_id=self._account_id)
            except PayloadError as exc:
                self._reject(where, str(exc))
                return None
        if type(name) is str:
            fresh[name] = (raw, snapshot)
        return snapshot

    def _reject(self, where: str, problem: str) -> None:
        """Warn of a dropped item once per distinct problem (its position is left out: a page
        shifts); past the bound the memory starts over, so a flood costs bounded log lines."""
        problem = self._redact(problem)
        if problem in self._rejected:
            return
        if len(self._rejected) >= REJECTS_REMEMBERED:
            self._rejected.clear()
        self._rejected.add(problem)
        self._page_warnings += 1
        if self._page_warnings <= WARNINGS_PER_PAGE:
            # The README's `api.bad_answer`; `where` (request and item) tells it from a whole
            # answer.
            log.warning("api.bad_answer", where=where, error=problem)

    def page_done(self, where: str) -> None:
        """End a page: one line counts the dropped items past `WARNINGS_PER_PAGE`, so a page
        of 200 impostors costs 6 log lines, not 200."""
        unsaid = self._page_warnings - WARNINGS_PER_PAGE
        self._page_warnings = 0
        if unsaid > 0:
            log.warning("api.bad_answer", where=where, error=f"{unsaid} more items dropped")
