"""LIST pages as the client reads them: what a page holds, and what it remembers of the last
one to skip decoding and parsing what did not change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from watcher.core.errors import PayloadError
from watcher.core.kinds import KINDS, JobKind
from watcher.core.model import JobSnapshot

#: A job's raw fields that a transition or a message depends on at the last LIST (as a hash
#: of their JSON: `watcher.sources.items.fingerprint`), and the snapshot parsed from them (a
#: plain tuple: one is made per job per LIST page).
Seen = tuple[int, JobSnapshot]
# `wandbConfig` carries the W&B API key: it is never kept, so a change of its URL alone waits
# for the next change of anything else.
_UNCOMPARED: Final = frozenset({"wandbConfig"})
COMPARED: Final[Mapping[JobKind, tuple[str, ...]]] = {
    kind: tuple(k for k in spec.read_mask.split(",") if k not in _UNCOMPARED and k != "name")
    for kind, spec in KINDS.items()
}


#: A server that keeps handing out new page tokens is stopped after this many pages.
MAX_PAGES: Final = 10_000
#: Pages in a row that list no job not already listed before paging is called endless (an
#: empty page with a token is legal, three in a row are a server paging forever).
MAX_IDLE_PAGES: Final = 3


@dataclass(frozen=True, slots=True)
class PageMemo:
    """A LIST page as decoded: a digest of its body (never the body: it may be megabytes),
    its jobs and what the page says about paging."""

    digest: bytes
    jobs: list[JobSnapshot]
    seen: dict[str, Seen]
    total_size: int | None
    token: object


@dataclass(frozen=True, slots=True)
class JobPage:
    """One LIST page: its jobs, its number (from 1), the list's `totalSize` when sent, and
    whether it is the last page and the list was read in full."""

    jobs: list[JobSnapshot]
    number: int
    total_size: int | None
    last: bool
    complete: bool


@dataclass(frozen=True, slots=True)
class JobListing:
    """What a LIST returned: the jobs, whether that is all of them, and the list's size."""

    jobs: list[JobSnapshot]
    complete: bool
    total_size: int | None
    pages: int


def pages_needed(total: int | None, page_size: int, pages_so_far: int) -> int:
    """Pages the whole list takes, from `totalSize`; unknown means at least one more."""
    if total is None:
        return pages_so_far + 1
    return max(pages_so_far, -(-total // page_size))


def plausible_pages(total: int | None, page_size: int) -> int | None:
    """The most pages a list of `total` jobs plausibly takes: its pages, plus slack for jobs
    created while it is read (they push jobs on to the next page of an offset-like token)."""
    if total is None:
        return None
    pages = max(1, -(-total // page_size))
    return pages + max(2, pages // 10)


def stop_paging(number: int, *, total: int | None, page_size: int, idle: int) -> str | None:
    """Why a listing must not ask for page `number + 1`, or None to go on.

    Args:
        number: pages read so far.
        total: the largest `totalSize` any page gave (None when none did).
        page_size: the page size asked for.
        idle: pages in a row, up to this one, that listed no job not already listed.
    """
    if idle >= MAX_IDLE_PAGES:
        return f"{idle} pages in a row listed no new job"
    limit = plausible_pages(total, page_size)
    if limit is not None and number >= limit:
        return f"{number} pages, more than totalSize {total} makes plausible"
    if number >= MAX_PAGES:
        return f"more than {MAX_PAGES} pages"
    return None


class Paging:
    """What one listing has seen so far, to stop a server that pages forever: the tokens
    handed out, the largest `totalSize`, and the pages in a row that listed nothing new."""

    def __init__(self, page_size: int) -> None:
        self._size = page_size
        self._tokens: set[str] = set()
        self._keys: set[str] = set()
        self._most: int | None = None
        self._idle = 0

    def next_token(self, number: int, page: PageMemo) -> str | None:
        """The token for page `number + 1` (None: that was the last page).

        Raises:
            PayloadError: the token is not a string or was handed out before, or paging
                should stop (see `stop_paging`).
        """
        if page.total_size is not None:
            self._most = max(self._most or 0, page.total_size)
        before = len(self._keys)
        self._keys.update(s.ref.key for s in page.jobs)
        self._idle = self._idle + 1 if len(self._keys) == before else 0
        token = page.token
        if token is None or token == "":
            return None
        if not isinstance(token, str):
            msg = f"nextPageToken is not a string (got {type(token).__name__})"
            raise PayloadError(msg)
        if token in self._tokens:
            raise PayloadError("server repeated a page token; stopped paging")
        self._tokens.add(token)
        if reason := stop_paging(number, total=self._most, page_size=self._size, idle=self._idle):
            raise PayloadError(f"{reason}; stopped paging")
        return token
