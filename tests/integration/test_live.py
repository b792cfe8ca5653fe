"""`watch`'s live line: the pure layout, the ticking tracker, and a real run on a pseudo-terminal."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from fireworks_sim import Simulator
from tests.support.servers import ServedApp
from tests.support.terminal import watch_on_a_terminal
from watcher.cli.live import (
    BAR_WIDTH,
    LiveJob,
    LiveView,
    display,
    live_segments,
    live_text,
    transition_text,
)
from watcher.cli.watch import transition_line
from watcher.core.kinds import JobKind, Meaning
from watcher.core.model import JobRef, JobSnapshot, Transition

HOSTILE = "[bold red]x[/] \x1b[2J\u202eevil\n"


def view(**changes: object) -> LiveView:
    fields: dict[str, object] = {
        "kind": "sft",
        "job_id": "job-1",
        "display_name": "My run",
        "state": "RUNNING",
        "meaning": Meaning.ACTIVE,
        "in_state": 75.0,
    }
    return LiveView(**(fields | changes))  # type: ignore[arg-type]


def plain(v: LiveView, width: int = 120) -> str:
    return "".join(text for text, _ in live_segments(v, width))


class TestLiveSegments:
    @pytest.mark.parametrize(
        ("v", "expected"),
        [
            pytest.param(
                view(), "sft/job-1  My run  RUNNING   for 1m 15s", id="no progress, no ETA"
            ),
            pytest.param(
                view(progress=50.0, eta=130.0),
                "sft/job-1  My run  RUNNING  " + "━" * 10 + "─" * 10 + "  50%  for 1m 15s"
                "  ETA 2m 10s",
                id="progress and ETA",
            ),
            pytest.param(
                view(progress=0.0),
                "sft/job-1  My run  RUNNING  " + "─" * BAR_WIDTH + "   0%  for 1m 15s",
                id="progress, no ETA",
            ),
            pytest.param(
                view(entered=False, in_state=5.0),
                "sft/job-1  My run  RUNNING   for ≥5s",
                id="state begun before the watch",
            ),
            pytest.param(
                view(display_name=""), "sft/job-1  RUNNING   for 1m 15s", id="no display name"
            ),
            pytest.param(
                view(display_name=HOSTILE),
                "sft/job-1  [bold red]x[/] \\x1b[2J\\u202eevil   RUNNING   for 1m 15s",
                id="hostile name shown as written",
            ),
            pytest.param(
                view(state="[red]X\x07"),
                "sft/job-1  My run  [red]X\\x07   for 1m 15s",
                id="hostile state",
            ),
        ],
    )
    def test_layout(self, v: LiveView, expected: str) -> None:
        """The line reads resource, name, state badge, bar and percent, time in state, ETA."""
        assert expected == plain(v)

    def test_a_long_name_is_cut_to_the_width(self) -> None:
        """A name too long for the terminal is cut with "…"; the rest of the line stays."""
        shown = plain(view(display_name="n" * 300, progress=10.0, eta=60.0), width=100)

        assert 100 == len(shown)
        assert "n…  RUNNING" in shown
        assert shown.endswith("ETA 1m 00s")

    def test_a_narrow_terminal_drops_the_name_then_the_bar(self) -> None:
        """Below a few cells of name, the name goes; if still too narrow, the bar goes too."""
        assert "sft/job-1  RUNNING   for 1m 15s" == plain(view(progress=10.0), width=40)

    @pytest.mark.parametrize(
        ("meaning", "colour"),
        [
            pytest.param(Meaning.SUCCESS, "green", id="success"),
            pytest.param(Meaning.FAILURE, "red", id="failure"),
            pytest.param(Meaning.TOMBSTONE, "red", id="gone"),
            pytest.param(Meaning.ACTIVE, "blue", id="active"),
            pytest.param(Meaning.ATTENTION, "yellow", id="attention"),
        ],
    )
    def test_the_badge_colour_follows_the_outcome(self, meaning: Meaning, colour: str) -> None:
        """The state badge is green for success, red for failure, blue or yellow on the way."""
        styles = {text.strip(): style for text, style in live_segments(view(meaning=meaning), 120)}

        assert f"bold white on {colour}" == styles["RUNNING"]

    def test_markup_stays_text(self) -> None:
        """Rich renders the hostile name literally: no markup is parsed, no style leaks in."""
        text = live_text(view(display_name="[bold red]x[/]"), 120)

        assert "[bold red]x[/]" in text.plain
        assert all("red" not in str(span.style) for span in text.spans)


def snapshot(state: str, progress: str = "") -> JobSnapshot:
    ref = JobRef(JobKind.SFT, "job-1")
    return JobSnapshot(ref, "acme", state, display_name="My run", progress=progress)


def moved(old: JobSnapshot | None, new: JobSnapshot, at: datetime) -> Transition:
    return Transition(old=old, new=new, observed_at=at)


class TestLiveJob:
    def test_time_in_state_and_eta_tick_between_polls(self) -> None:
        """Between polls the time in state grows and the ETA shrinks, from the local clock."""
        ticks = [100.0]
        wall = [datetime(2026, 1, 1, 12, 0, tzinfo=UTC)]
        job = LiveJob(
            JobRef(JobKind.SFT, "job-1"), monotonic=lambda: ticks[0], clock=lambda: wall[0]
        )
        first = snapshot("PENDING")
        job.saw(moved(None, first, wall[0]))
        running = snapshot("RUNNING", "0")
        job.saw(moved(first, running, wall[0]))
        ticks[0], wall[0] = 160.0, datetime(2026, 1, 1, 12, 1, tzinfo=UTC)
        job.polled(snapshot("RUNNING", "25"))  # 25 % in 60 s: 180 s to go
        ticks[0] = 170.0

        shown = job.view()

        assert (70.0, 170.0, 25.0, True) == (
            shown.in_state,
            shown.eta,
            shown.progress,
            shown.entered,
        )

    def test_no_eta_from_one_reading(self) -> None:
        """Progress read once in a state is no rate yet: no ETA until it moves."""
        job = LiveJob(JobRef(JobKind.SFT, "job-1"), monotonic=lambda: 5.0)
        first = snapshot("PENDING")
        at = datetime(2026, 1, 1, tzinfo=UTC)
        job.saw(moved(None, first, at))
        job.saw(moved(first, snapshot("RUNNING", "1"), at))

        assert (1.0, None) == (job.view().progress, job.view().eta)

    def test_a_state_found_at_first_sight_is_marked(self) -> None:
        """The watcher did not see the state begin: the line says "at least"."""
        job = LiveJob(JobRef(JobKind.SFT, "job-1"), monotonic=lambda: 5.0)
        job.saw(moved(None, snapshot("RUNNING"), datetime(2026, 1, 1, tzinfo=UTC)))

        assert (False, None) == (job.view().entered, job.view().eta)


class TestDisplay:
    def test_piped_output_is_one_plain_line_per_transition(self) -> None:
        """Without a live line, each transition is `transition_line`'s text, no ANSI."""
        out = io.StringIO()
        first = snapshot("PENDING")
        with display(LiveJob(first.ref), transition_line, live=False, out=out) as show:
            show(moved(None, first, datetime(2026, 1, 1, tzinfo=UTC)))

        assert "2026-01-01T00:00:00Z sft/job-1: PENDING\n" == out.getvalue()

    def test_a_transition_line_is_dim_then_coloured(self) -> None:
        """On a terminal the time is dim and the rest takes the new state's colour."""
        text = transition_text("2026-01-01T00:00:00Z sft/job-1: RUNNING → FAILED", Meaning.FAILURE)

        assert [(0, 20, "dim"), (21, len(text.plain), "red")] == [
            (s.start, s.end, str(s.style)) for s in text.spans
        ]


def test_watch_on_a_terminal_shows_a_live_line_and_each_transition_once(
    sim: Simulator, server: ServedApp
) -> None:
    """On a TTY the live line is styled (ANSI) and carries the bar; every transition is printed
    once; API text with markup and escapes is shown as written and cannot steer the terminal."""
    sim.add_job(
        "job-p",
        collection="supervisedFineTuningJobs",
        state="RUNNING",
        display_name="[bold red]name[/] \x1b[2J",
        progress=0,
        progress_rate=40.0,
    )
    sim.script("job-p", [(2.0, "COMPLETED", "OK", "[bold red]done[/]")], "supervisedFineTuningJobs")

    code, shown = watch_on_a_terminal(server.url, ["job-p", "--kind", "sft", "--interval", "0.5"])

    assert 0 == code
    assert 1 == shown.count("RUNNING → COMPLETED")
    assert 2 == shown.count("sft/job-p: RUNNING")  # the first sight, and the move
    assert "(OK: [bold red]done[/])" in shown
    assert "[bold red]name[/] \\x1b[2J" in shown  # the live line, escaped
    assert "\x1b[2J" not in shown
    assert "\x1b[34m" in shown or "\x1b[44m" in shown  # blue: the running badge
    assert "━" in shown
