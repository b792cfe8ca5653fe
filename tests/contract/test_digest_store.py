"""The store's side of digests on a real SQLite file: a period's transition events, and the
per-channel bookkeeping as flags."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from watcher.core.decision import Decision
from watcher.core.delivery import Event
from watcher.stores.digest_table import MAX_FIELDS_CHARS
from watcher.stores.sqlite import StateStore

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def transition(job: str, minutes: float, *, notice: bool = False, kind: str = "") -> Event:
    at = T0 + timedelta(minutes=minutes)
    return Event(f"dpo/{job}", "RUNNING", "COMPLETED", at, (("job_id", job),), notice, kind)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """The state file of one test."""
    return tmp_path / "state.db"


@pytest.fixture
def store(path: Path) -> Iterator[StateStore]:
    """A store on it."""
    with StateStore.open(path) as opened:
        yield opened


def test_a_period_holds_its_transitions_newest_first(store: StateStore) -> None:
    """Events observed in [start, end) come back newest first; the end is excluded, notices
    and other kinds of event are not transitions."""
    store.record(
        Decision(
            [],
            [],
            now=T0,
            events=[
                transition("before", -0.001),
                transition("start", 0),
                transition("middle", 60),
                transition("last", 24 * 60 - 0.001),
                transition("end", 24 * 60),
                transition("notice", 30, notice=True),
                transition("condition", 30, kind="condition"),
            ],
        )
    )

    got = store.digest_events(T0, T0 + timedelta(days=1))

    assert ["dpo/last", "dpo/middle", "dpo/start"] == [e.job_key for e in got]
    assert (("job_id", "middle"),) == got[1].fields


def test_a_period_is_bounded_to_its_newest_events(store: StateStore) -> None:
    """With more events than the limit, the newest are returned."""
    store.record(Decision([], [], now=T0, events=[transition(f"j{n}", n) for n in range(25)]))

    got = store.digest_events(T0, T0 + timedelta(hours=1), limit=10)

    assert [f"dpo/j{n}" for n in range(24, 14, -1)] == [e.job_key for e in got]


def test_a_bad_row_costs_only_itself(path: Path) -> None:
    """A row that does not decode, or is absurdly large, is skipped and told; the rest stay."""
    told: list[tuple[str, str]] = []
    with StateStore.open(path, on_unreadable=lambda row, why: told.append((row, why))) as store:
        store.record(Decision([], [], now=T0, events=[transition("good", 1), transition("bad", 2)]))
        store.record(Decision([], [], now=T0, events=[transition("huge", 3)]))
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("UPDATE events SET fields = '[1' WHERE job_key = 'dpo/bad'")
            conn.execute(
                "UPDATE events SET fields = ? WHERE job_key = 'dpo/huge'",
                ('{"x": "' + "y" * MAX_FIELDS_CHARS + '"}',),
            )

        got = store.digest_events(T0, T0 + timedelta(hours=1))

    assert ["dpo/good"] == [e.job_key for e in got]
    assert 2 == len(told)
    assert all(row.startswith("events ") for row, _ in told)
    assert "more than a digest reads" in told[0][1]


def test_the_last_period_is_a_flag_that_survives_a_reopen(path: Path) -> None:
    """`digest:<channel>` is written with `record(flags=...)` and read back after a restart."""
    with StateStore.open(path) as store:
        assert store.flag("digest:team") is None
        store.record(Decision([], [], now=T0, flags={"digest:team": "2026-12-02T09:00+01:00"}))

    with StateStore.open(path) as again:
        assert "2026-12-02T09:00+01:00" == again.flag("digest:team")
        assert {"team": "2026-12-02T09:00+01:00"} == again.flags("digest:")
