"""The unreadable-resource ledger, table-tested: when "cannot read" and "readable again" are
owed, and which targets a reload leaves watched."""

from __future__ import annotations

import pytest

from watcher.core.kinds import JobKind
from watcher.core.model import JobRef
from watcher.core.schedule import PollSchedule
from watcher.core.unreadable import UnreadableLedger
from watcher.ports import NullObserver
from watcher.runtime.fetcher import Fetcher
from watcher.runtime.plan import WatchPlan

ERROR = "HTTP 400 INVALID_ARGUMENT: bad"


def run(events: list[str], threshold: int = 3) -> list[dict[str, str]]:
    """Feed polls ("fail", "ok") of one target, announcing whatever is due after each; return
    the announcements made."""
    ledger = UnreadableLedger()
    made: list[dict[str, str]] = []
    for event in events:
        if event == "fail":
            ledger.failed("sft/x", ERROR)
        else:
            ledger.succeeded("sft/x")
        due = ledger.notices(threshold)
        if due:
            ledger.announced_now(due)
            made.append(due)
    return made


@pytest.mark.parametrize(
    ("events", "threshold", "expected"),
    [
        pytest.param(["fail"] * 2, 3, [], id="two failures: nothing yet"),
        pytest.param(["fail"] * 3, 3, [{"sft/x": ERROR}], id="the third: cannot read"),
        pytest.param(["fail"] * 6, 3, [{"sft/x": ERROR}], id="announced once"),
        pytest.param(["fail", "fail", "ok", "fail", "fail"], 3, [], id="a good poll resets"),
        pytest.param(["fail"] * 3 + ["ok"], 3, [{"sft/x": ERROR}, {"sft/x": ""}], id="recovery"),
        pytest.param(
            ["fail"] * 3 + ["ok", "ok"], 3, [{"sft/x": ERROR}, {"sft/x": ""}], id="recovered once"
        ),
        pytest.param(
            ["fail"] * 3 + ["ok"] + ["fail"] * 3,
            3,
            [{"sft/x": ERROR}, {"sft/x": ""}, {"sft/x": ERROR}],
            id="unreadable again",
        ),
        pytest.param(["fail"] * 9, 0, [], id="0 never tells"),
        pytest.param(["ok"], 3, [], id="never unreadable: nothing"),
    ],
)
def test_announcements(events: list[str], threshold: int, expected: list[dict[str, str]]) -> None:
    """Consecutive unreadable polls announce once; the first good poll after announces once."""
    assert expected == run(events, threshold)


def test_a_failure_before_the_recovery_is_sent_cancels_it() -> None:
    """Readable, then unreadable again before anything was announced: no "readable again"."""
    ledger = UnreadableLedger(announced={"sft/x": ERROR})
    ledger.succeeded("sft/x")
    ledger.failed("sft/x", ERROR)

    assert {} == ledger.notices(3)


def test_stale_targets_are_forgotten() -> None:
    """After a reload, targets no longer watched leave no trace."""
    ledger = UnreadableLedger(announced={"sft/x": ERROR, "dpo/y": ERROR})
    ledger.failed("rft/z", ERROR)

    stale = ledger.stale(lambda target: target == "dpo/y")
    ledger.forget(stale)

    assert ({"rft/z", "sft/x"}, {"dpo/y": ERROR}, {}) == (set(stale), ledger.announced, ledger.runs)


@pytest.mark.parametrize(
    ("target", "watched"),
    [
        ("dpo/a", True),  # named in the config
        ("dpo/zzz", False),  # a dpo job neither named nor discovered
        ("sft/anything", True),  # sft is discovered
        ("list:sft", True),
        ("list:dpo", False),  # dpo is not discovered...
        ("list:dpo:explicit", True),  # ...but its named jobs may be LISTed
        ("list:rft:explicit", False),
        ("rft/x", False),
    ],
)
def test_which_targets_are_still_watched(target: str, watched: bool) -> None:
    """After a reload, a target is still watched when the new plan still polls it."""

    fetcher = Fetcher(
        source=None,  # type: ignore[arg-type]  # never called here
        schedule=PollSchedule(1.0, 10.0),
        observer=NullObserver(),
        unreadable=UnreadableLedger(),
        last=dict,
        budget=None,
    )
    fetcher.index(WatchPlan(refs=(JobRef(JobKind.DPO, "a"),), channels=(), discover=(JobKind.SFT,)))

    assert watched == fetcher.watches(target)
