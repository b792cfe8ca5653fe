"""The timeline's bands and marks (core.timeline), table-tested over plain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watcher.core.kinds import JobKind, Meaning
from watcher.core.timeline import MAX_MARKS, WINDOW, Move, timeline, window_start

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
meaning = JobKind.DPO.spec.meaning


def bands(moves: list[Move], state: str, start: datetime) -> list[tuple[str, float, float]]:
    drawn = timeline(moves, state=state, start=start, now=NOW, meaning=meaning)
    return [(b.state, round(b.x, 4), round(b.width, 4)) for b in drawn.bands]


@pytest.mark.parametrize(
    ("moves", "state", "expected"),
    [
        # No move in the window: one band of the current state.
        ([], "RUNNING", [("RUNNING", 0.0, 1.0)]),
        # One move half-way: the old state before it, the current after.
        ([Move(NOW - 2 * H, "RUNNING", "COMPLETED")], "COMPLETED",
         [("RUNNING", 0.0, 0.5), ("COMPLETED", 0.5, 0.5)]),
        # Out of order, and one before the window (clipped away).
        ([Move(NOW - 1 * H, "RUNNING", "COMPLETED"), Move(NOW - 3 * H, "PENDING", "RUNNING"),
          Move(NOW - 9 * H, "X", "PENDING")], "COMPLETED",
         [("PENDING", 0.0, 0.25), ("RUNNING", 0.25, 0.5), ("COMPLETED", 0.75, 0.25)]),
        # The last move disagrees with the snapshot (a move was lost): the snapshot wins.
        ([Move(NOW - 2 * H, "PENDING", "RUNNING")], "FAILED",
         [("PENDING", 0.0, 0.5), ("FAILED", 0.5, 0.5)]),
        # Two moves at one instant: no empty band between them.
        ([Move(NOW - 2 * H, "PENDING", "RUNNING"), Move(NOW - 2 * H, "RUNNING", "FAILED")],
         "FAILED", [("PENDING", 0.0, 0.5), ("FAILED", 0.5, 0.5)]),
        # A move in the future (a skewed clock) is not drawn.
        ([Move(NOW + H, "RUNNING", "COMPLETED")], "RUNNING", [("RUNNING", 0.0, 1.0)]),
    ],
)  # fmt: skip
def test_bands(moves: list[Move], state: str, expected: list[tuple[str, float, float]]) -> None:
    assert expected == bands(moves, state, NOW - 4 * H)


def test_bands_cover_the_window_and_marks_sit_on_their_edges() -> None:
    moves = [Move(NOW - 3 * H, "PENDING", "RUNNING"), Move(NOW - H, "RUNNING", "FAILED")]
    drawn = timeline(moves, state="FAILED", start=NOW - 4 * H, now=NOW, meaning=meaning)

    assert 1.0 == pytest.approx(sum(b.width for b in drawn.bands))
    assert [0.25, 0.75] == [m.x for m in drawn.marks]
    assert [Meaning.ACTIVE, Meaning.ACTIVE, Meaning.FAILURE] == [b.meaning for b in drawn.bands]
    assert (0.0, NOW - 4 * H) == drawn.ticks[0]
    assert (1.0, NOW) == drawn.ticks[-1]


def test_a_flapping_job_draws_at_most_max_marks() -> None:
    moves = [
        Move(NOW - timedelta(seconds=10 * i), *(("A", "B") if i % 2 else ("B", "A")))
        for i in range(1, 2000)
    ]
    drawn = timeline(moves, state="A", start=NOW - WINDOW, now=NOW, meaning=meaning)

    assert MAX_MARKS == len(drawn.marks)
    assert MAX_MARKS == len(drawn.bands)  # the window starts at the first mark kept
    assert 0.0 == drawn.marks[0].x


@pytest.mark.parametrize(
    ("created", "first_seen", "expected"),
    [
        (None, None, NOW - WINDOW),
        (NOW - 2 * H, None, NOW - 2 * H),  # younger than a day
        (NOW - 48 * H, None, NOW - WINDOW),  # older: the last day only
        (NOW + H, NOW - H, NOW - H),  # a creation time in the future is not believed
        (None, NOW - 3 * H, NOW - 3 * H),
    ],
)
def test_window_start(
    created: datetime | None, first_seen: datetime | None, expected: datetime
) -> None:
    assert expected == window_start(NOW, created=created, first_seen=first_seen)


def test_an_empty_window_still_draws() -> None:
    drawn = timeline([], state="RUNNING", start=NOW, now=NOW, meaning=meaning)

    assert [("RUNNING", 0.0, 1.0)] == [(b.state, b.x, b.width) for b in drawn.bands]
