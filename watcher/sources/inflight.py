"""One byte budget for every answer in flight (`max_inflight_bytes`).

`max_answer_bytes` bounds one answer; kinds are read side by side, so without a shared bound
eleven 30 MB pages are held at once. An answer takes bytes from `InflightBytes` as it decodes
them and holds them until it has been parsed and dropped; one that would pass the budget waits
its turn (it is never dropped).

No deadlock, and the budget is never passed: the oldest answer in flight never waits, and the
others keep room for it to grow to `max_answer_bytes`. So the others share
`max_inflight_bytes - max_answer_bytes` (32 MiB by default) while the oldest is read, and
when it is done the next oldest inherits the room. A slow answer holds only what it has read:
a dripping listing does not stop the others.

Parsing needs no share of its own: it is synchronous (`orjson.loads` and the snapshots are
built with no await between), so at most one answer is being parsed at any moment, and its
transient cost (about twice its bytes for a page of long texts) comes on top of the budget
once, not once per kind.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio


class HeldBytes:
    """The bytes one answer holds in an `InflightBytes`; from `InflightBytes.hold` only."""

    def __init__(self, budget: InflightBytes) -> None:
        self._budget = budget
        self.size = 0
        self.waited = False

    async def take(self, count: int) -> None:
        """Hold `count` more bytes, waiting while they would pass the budget."""
        await self._budget._take(self, count)

    def give_back(self, count: int | None = None) -> None:
        """Return `count` bytes, or every byte held (a try that failed: its body is gone)."""
        self._budget._give_back(self, self.size if count is None else count)


class InflightBytes:
    """The bytes held by every answer in flight, within `limit`.

    Args:
        limit: `max_inflight_bytes`.
        per_answer: `max_answer_bytes`: the room the oldest answer may still need.

    Attributes:
        used: Bytes held now.
        high_water: The most bytes ever held at once.
        waited: Answers that had to wait their turn at least once.
    """

    def __init__(self, limit: int, *, per_answer: int) -> None:
        self.limit = limit
        self.per_answer = per_answer
        self.used = 0
        self.high_water = 0
        self.waited = 0
        # Answers in flight, oldest first (a dict keeps insertion order).
        self._open: dict[int, HeldBytes] = {}
        self._changed = anyio.Event()

    def set_limits(self, limit: int, *, per_answer: int) -> None:
        """New bounds (SIGHUP): bytes held stay held; takes from now on follow the new ones."""
        self.limit, self.per_answer = limit, per_answer
        self._wake()

    @property
    def answers(self) -> int:
        """Answers in flight now."""
        return len(self._open)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[HeldBytes]:
        """One answer's bytes, all returned when the block ends (cancelled or not)."""
        held = HeldBytes(self)
        self._open[id(held)] = held
        try:
            yield held
        finally:
            del self._open[id(held)]
            self.used -= held.size
            held.size = 0
            self._wake()  # its bytes, and the room kept for it when it was the oldest

    def _fits(self, held: HeldBytes, count: int) -> bool:
        oldest = next(iter(self._open.values()))
        if held is oldest:
            return True  # it never waits: nothing can then wait for ever
        room_for_oldest = max(0, self.per_answer - oldest.size)
        return self.used + count + room_for_oldest <= self.limit

    async def _take(self, held: HeldBytes, count: int) -> None:
        if count <= 0:
            return
        while not self._fits(held, count):
            if not held.waited:
                held.waited = True
                self.waited += 1
            await self._changed.wait()
        held.size += count
        self.used += count
        self.high_water = max(self.high_water, self.used)

    def _give_back(self, held: HeldBytes, count: int) -> None:
        if count <= 0:
            return
        held.size -= count
        self.used -= count
        self._wake()

    def _wake(self) -> None:
        # Every waiter checks again; one that fits goes, the others wait for the next change.
        self._changed.set()
        self._changed = anyio.Event()


#: glibc's `mallopt` parameter for the size from which a block is mmapped.
_M_MMAP_THRESHOLD: Final = -3
#: Blocks from this size up are mmapped: an answer's buffer, its bytes, its decoded text.
MMAP_THRESHOLD: Final = 256 * 1024


def return_big_blocks() -> None:
    """Have the C allocator give every big block back to the system as soon as it is freed.

    glibc raises its mmap threshold to the size of the last big block freed (up to 32 MiB):
    after one 30 MB answer, the next ones are carved from the heap, which keeps its peak
    (11 kinds of 30 MB pages: 218 MB peak instead of 175). A fixed threshold keeps them
    mmapped. Idempotent; a no-op on C libraries without `mallopt`.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
