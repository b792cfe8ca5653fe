"""`watch` on a terminal: one live line for the watched resource below the transitions.

`live_segments` lays the line out from a frozen `LiveView` (pure, table-tested); `LiveJob`
keeps what the polls said and lets the elapsed time and ETA tick between them without asking
the API again; `display` prints each transition once, above a rich `Live` line that is
cleared at exit. Everything from the API passes `for_terminal` and reaches rich as `Text`,
never as markup, so a `[bold red]` in a status message is shown as written.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from watcher.core.conditions import Since
from watcher.core.kinds import Meaning
from watcher.core.messages import format_duration
from watcher.core.model import JobRef, JobSnapshot, Transition
from watcher.core.progress import eta_seconds, percent
from watcher.core.text import cap, for_terminal

#: The colour of a state by what it means: outcomes green or red, on-the-way blue, halted yellow.
MEANING_COLOURS: Final = {
    Meaning.SUCCESS: "green",
    Meaning.FAILURE: "red",
    Meaning.TOMBSTONE: "red",
    Meaning.ACTIVE: "blue",
    Meaning.ATTENTION: "yellow",
}
#: Cells of the progress bar.
BAR_WIDTH = 20
#: A display name is dropped rather than cut shorter than this.
MIN_NAME = 8
#: A state name from the API is cut to this many characters in the badge.
MAX_STATE = 24

#: One piece of the line: its text and a rich style ("" for none).
Segment = tuple[str, str]


@dataclass(frozen=True, slots=True)
class LiveView:
    """What the live line shows, at one moment.

    `progress` is None when the kind reports none (or not yet); `entered` is False when the
    resource was already in its state at first sight (then `in_state` counts from there).
    """

    kind: str
    job_id: str
    display_name: str
    state: str
    meaning: Meaning
    in_state: float
    entered: bool = True
    progress: float | None = None
    eta: float | None = None


def live_segments(view: LiveView, width: int) -> tuple[Segment, ...]:
    """The live line of `view` in at most `width` cells: the display name is cut first, then
    dropped, then the progress bar; the resource and its state always stay."""
    colour = MEANING_COLOURS.get(view.meaning, "blue")
    subject = for_terminal(f"{view.kind}/{view.job_id}", 80)
    badge = f" {for_terminal(view.state, MAX_STATE)} "
    head: list[Segment] = [(subject, "bold")]
    state: list[Segment] = [(" ", ""), (badge, f"bold white on {colour}")]
    bar: list[Segment] = []
    if view.progress is not None:
        done = round(min(100.0, max(0.0, view.progress)) * BAR_WIDTH / 100)
        bar = [(" ", ""), ("━" * done, colour), ("─" * (BAR_WIDTH - done), "dim")]
        bar.append((f" {view.progress:3.0f}%", ""))
    at_least = "" if view.entered else "≥"
    tail: list[Segment] = [(f"  for {at_least}{format_duration(view.in_state)}", "")]
    if view.eta is not None:
        tail.append((f"  ETA {format_duration(view.eta)}", "cyan"))

    def cells(parts: list[Segment]) -> int:
        return sum(len(text) for text, _ in parts)

    fixed = cells(head) + cells(state) + cells(tail) + 2  # the spaces around the name
    room = width - fixed - cells(bar)
    if room < MIN_NAME and bar:
        bar = []
        room = width - fixed
    name = for_terminal(view.display_name)
    middle: list[Segment] = [("  ", ""), (cap(name, room), "")] if name and room >= MIN_NAME else []
    return (*head, *middle, *state, *bar, *tail)


def live_text(view: LiveView, width: int) -> Text:
    """`live_segments` as one rich `Text` that never wraps (a wrapped live line leaves debris)."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    for part, style in live_segments(view, width):
        text.append(part, style or None)
    return text


def transition_text(line: str, meaning: Meaning) -> Text:
    """A transition line (`transition_line`'s, already safe) with its time dimmed and the
    rest in the colour of what the new state means."""
    stamp, _, rest = line.partition(" ")
    text = Text()
    text.append(stamp, style="dim")
    text.append(" ")
    text.append(rest, style=MEANING_COLOURS.get(meaning, ""))
    return text


class LiveJob:
    """The watched resource as the live line needs it: the last snapshot, when its state began
    (on the monotonic clock, so the time in state ticks between polls), and the ETA as of the
    last poll, counted down locally."""

    def __init__(
        self,
        ref: JobRef,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ref = ref
        self._monotonic = monotonic
        self._clock = clock
        self._snapshot: JobSnapshot | None = None
        self._since: Since | None = None
        self._began = monotonic()
        self._eta: tuple[float, float] | None = None  # (seconds left, monotonic reading then)
        self._start_percent: float | None = None  # the first progress read in this state

    def saw(self, transition: Transition) -> None:
        """A transition: a new state restarts the time in state."""
        if transition.old is None or transition.old_state != transition.new_state:
            at = transition.observed_at
            self._since = Since(at, at, entered=transition.old is not None)
            self._began = self._monotonic()
            self._start_percent = None
        self.polled(transition.new)

    def polled(self, snapshot: JobSnapshot | None) -> None:
        """The snapshot after a poll (progress moves without a transition)."""
        if snapshot is None:
            return
        self._snapshot = snapshot
        done = percent(snapshot.progress) if snapshot.ref.kind.spec.has_progress else None
        self._eta = None
        if self._start_percent is None:
            self._start_percent = done
        # An ETA once progress has moved in this state: one reading is no rate (1 % seen at
        # once after a state began reads as "done in 0 s").
        since = self._since
        active = snapshot.meaning is Meaning.ACTIVE
        if done is not None and done != self._start_percent and since is not None and active:
            left = eta_seconds(snapshot, since, done, self._clock())
            if left is not None and done < 100:
                self._eta = (left, self._monotonic())

    def view(self) -> LiveView:
        """The line's values now."""
        now = self._monotonic()
        snap = self._snapshot
        if snap is None:
            return LiveView(
                kind=str(self._ref.kind),
                job_id=self._ref.job_id,
                display_name="",
                state="…",
                meaning=Meaning.ACTIVE,
                in_state=now - self._began,
            )
        has_progress = snap.ref.kind.spec.has_progress
        eta = None if self._eta is None else max(0.0, self._eta[0] - (now - self._eta[1]))
        return LiveView(
            kind=str(snap.ref.kind),
            job_id=snap.ref.job_id,
            display_name=snap.display_name,
            state=snap.state,
            meaning=snap.meaning,
            in_state=now - self._began,
            entered=self._since.entered if self._since is not None else False,
            progress=percent(snap.progress) if has_progress else None,
            eta=eta,
        )


def terminal_console(out: TextIO) -> Console:
    """A rich console for `out`, with markup, emoji codes and highlighting off (API text).

    Soft wrap: what is printed above the live line (transitions, and `console://`
    notifications written to stdout meanwhile) is wrapped by the terminal, not cut into lines
    by rich, so a long URL stays one URL.
    """
    return Console(file=out, highlight=False, markup=False, emoji=False, soft_wrap=True)


@contextmanager
def display(
    job: LiveJob, line: Callable[[Transition], str], *, live: bool, out: TextIO | None = None
) -> Iterator[Callable[[Transition], None]]:
    """Yield the function that shows one transition. With `live`, it is printed (styled) above
    a live line refreshed every second and cleared at exit; without, as a plain line."""
    stream = out if out is not None else sys.stdout
    if not live:

        def plain(transition: Transition) -> None:
            job.saw(transition)
            stream.write(line(transition) + "\n")
            stream.flush()

        yield plain
        return
    console = terminal_console(stream)
    with Live(
        get_renderable=lambda: live_text(job.view(), console.width),
        console=console,
        refresh_per_second=1,
        transient=True,
    ) as shown:

        def styled(transition: Transition) -> None:
            job.saw(transition)
            shown.console.print(
                transition_text(line(transition), transition.new.meaning), soft_wrap=True
            )
            shown.refresh()

        yield styled
