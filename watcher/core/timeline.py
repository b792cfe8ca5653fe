"""A job's timeline over a window: the state bands and the transition marks the status page
draws as SVG (pure, table-tested; the template only scales fractions to pixels).

Times come from the store and the API, so nothing here trusts them: a move outside the
window is clipped to it, moves are taken in time order whatever order they come in, and at
most `MAX_MARKS` of the latest are drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from watcher.core.kinds import Meaning
from watcher.core.transitions import move_label

#: The window drawn: the last day, or less when the job is younger.
WINDOW: Final = timedelta(hours=24)
#: Transitions drawn: a job flapping all day still gives a page of bounded size.
MAX_MARKS: Final = 200
#: Time labels along the axis.
TICKS: Final = 5


@dataclass(frozen=True, slots=True)
class Move:
    """A transition of the job: at `at`, from `old` to `new`, with the status it then had."""

    at: datetime
    old: str
    new: str
    status_code: str = ""
    status_message: str = ""

    @property
    def label(self) -> str:
        """`RUNNING → FAILED`, or `status changed: …` for a move within one state."""
        return move_label(self.old, self.new, self.status_code, self.status_message)


@dataclass(frozen=True, slots=True)
class Band:
    """The job in `state` over [start, end); `x` and `width` are fractions of the window."""

    state: str
    meaning: Meaning
    start: datetime
    end: datetime
    x: float
    width: float


@dataclass(frozen=True, slots=True)
class Mark:
    """A transition at `x` (a fraction of the window)."""

    move: Move
    x: float


@dataclass(frozen=True, slots=True)
class Timeline:
    """What the SVG shows: bands left to right, marks, and labelled ticks."""

    start: datetime
    end: datetime
    bands: tuple[Band, ...]
    marks: tuple[Mark, ...]
    ticks: tuple[tuple[float, datetime], ...]


def window_start(
    now: datetime, *, created: datetime | None, first_seen: datetime | None
) -> datetime:
    """Where the timeline begins: `WINDOW` ago, or later when the job is known to be younger
    (created, or first seen, since); a creation time in the future is not believed."""
    start = now - WINDOW
    known = created if created is not None and created <= now else first_seen
    return max(start, known) if known is not None and known <= now else start


def timeline(
    moves: Sequence[Move],
    *,
    state: str,
    start: datetime,
    now: datetime,
    meaning: Callable[[str], Meaning],
) -> Timeline:
    """The bands from `start` to `now`: before the first move the job was in that move's old
    state, after the last in `state` (its current one, which a lost move cannot contradict)."""
    if now <= start:
        start = now - timedelta(seconds=1)
    inside = sorted((m for m in moves if start < m.at <= now), key=lambda m: m.at)[-MAX_MARKS:]
    if len(inside) == MAX_MARKS:
        start = inside[0].at  # the dropped moves are not drawn over
    span = (now - start).total_seconds()

    def fraction(at: datetime) -> float:
        return min(1.0, max(0.0, (at - start).total_seconds() / span))

    # (from, state) per segment; the last is the current state, whatever the last move said.
    starts = [(start, inside[0].old if inside else state)]
    starts += [(m.at, m.new) for m in inside[:-1]]
    starts += [(inside[-1].at, state)] if inside else []
    ends = [m.at for m in inside] + [now]
    bands = tuple(
        Band(s, meaning(s), a, b, fraction(a), fraction(b) - fraction(a))
        for (a, s), b in zip(starts, ends, strict=True)
        if b > a
    )
    ticks = tuple(
        (i / (TICKS - 1), start + (now - start) * (i / (TICKS - 1))) for i in range(TICKS)
    )
    return Timeline(
        start,
        now,
        bands,
        tuple(Mark(m, fraction(m.at)) for m in inside),
        ticks,
    )
