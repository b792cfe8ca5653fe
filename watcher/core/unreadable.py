"""Which resources the watcher cannot read: the bookkeeping behind "cannot read" and
"readable again". Pure: no clock, no I/O; the poller feeds it each poll's outcome.

A target (a job key, or `list:KIND`) is unreadable after `threshold` consecutive polls that the
API refused (a 4xx other than 404) or answered unparsably; it is announced once, and once more
at the first good poll after that. The poller keeps a second ledger of the same kind for the
API key, by account (`account:ID`): a cycle whose key the API rejected is a failed poll of its
account, a cycle it accepted the key a good one (`conditions.key_verdict`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class UnreadableLedger:
    """Announced targets (with the error), runs of unreadable polls, and recoveries owed."""

    announced: dict[str, str] = field(default_factory=dict)
    runs: dict[str, tuple[int, str]] = field(default_factory=dict)
    recovered: set[str] = field(default_factory=set)

    def failed(self, target: str, error: str) -> None:
        """One more unreadable poll of `target`."""
        count, _ = self.runs.get(target, (0, ""))
        self.runs[target] = (count + 1, error)
        self.recovered.discard(target)

    def succeeded(self, target: str) -> None:
        """`target` was read: its run ends, and if it was announced, recovery is owed."""
        self.runs.pop(target, None)
        if target in self.announced:
            self.recovered.add(target)

    def notices(self, threshold: int) -> dict[str, str]:
        """Targets to announce now: unreadable for `threshold` polls -> the error; readable
        again after an announcement -> "". A threshold of 0 announces nothing new."""
        due = dict.fromkeys(self.recovered, "")
        if threshold > 0:
            due |= {
                target: error
                for target, (count, error) in self.runs.items()
                if count >= threshold and target not in self.announced
            }
        return due

    def announced_now(self, notices: Mapping[str, str]) -> None:
        """The notices were recorded: remember what is announced."""
        for target, error in notices.items():
            self.recovered.discard(target)
            if error:
                self.announced[target] = error
            else:
                self.announced.pop(target, None)

    def stale(self, watched: Callable[[str], bool]) -> list[str]:
        """Targets no longer watched (after a reload), announced or counting."""
        return [t for t in {*self.announced, *self.runs} if not watched(t)]

    def forget(self, targets: list[str]) -> None:
        """Drop every trace of these targets (they were cleared silently)."""
        for target in targets:
            self.announced.pop(target, None)
            self.runs.pop(target, None)
            self.recovered.discard(target)
