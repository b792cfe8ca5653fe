"""LIST pages as the client reads them: what a page holds, and what it remembers of the last
one to skip decoding and parsing what did not change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from watcher.core.kinds import KINDS, JobKind
from watcher.core.model import JobSnapshot

#: A job's raw fields that a transition or a message depends on at the last LIST, and the
#: snapshot parsed from them (a plain tuple: one is made per job per LIST page).
Seen = tuple[tuple[object, ...], JobSnapshot]
# `wandbConfig` carries the W&B API key: it is never kept, so a change of its URL alone waits
# for the next change of anything else.
_UNCOMPARED: Final = frozenset({"wandbConfig"})
COMPARED: Final[Mapping[JobKind, tuple[str, ...]]] = {
    kind: tuple(k for k in spec.read_mask.split(",") if k not in _UNCOMPARED and k != "name")
    for kind, spec in KINDS.items()
}


@dataclass(frozen=True, slots=True)
class PageMemo:
    """A LIST page as decoded: its raw body, its jobs and what the page says about paging."""

    content: bytes
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


# --- client --------------------------------------------------------------------------------
