"""The ledgers behind the watcher's own conditions that runs of polls decide: resources it
cannot read (`unreadable_after` polls), and the API key the API rejects, by account
(`api_down_after` cycles). Each is an `UnreadableLedger`: announced once when the run is long
enough, once more at the first good poll after it.

The poller feeds them each call (the fetcher, for resources) and each cycle (`judge_key`), asks
what is `due` with the cycle's last write, and says what that write `recorded`. What is
announced is loaded from the open conditions at the start of each term, so a restart or a
new leader neither repeats nor forgets an announcement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from watcher.core.conditions import (
    FORBIDDEN,
    UNAUTHORIZED,
    ConditionName,
    account_subject,
    key_verdict,
)
from watcher.core.unreadable import UnreadableLedger
from watcher.runtime.plan import CycleReport, WatchPlan

log = structlog.get_logger("watcher")

#: Per condition, the subjects to announce now, each with its error ("" when it is over).
Due = Mapping[ConditionName, Mapping[str, str]]


class Troubles:
    """The unreadable ledger (shared with the fetcher) and the key ledger."""

    def __init__(self) -> None:
        self.unreadable = UnreadableLedger()
        self.keys = UnreadableLedger()
        self._ledgers = {
            ConditionName.UNREADABLE: self.unreadable,
            ConditionName.KEY_REJECTED: self.keys,
        }

    def load(self, announced: Callable[[ConditionName], dict[str, str]]) -> None:
        """Take what the open conditions say is announced (at the start of a term)."""
        for name, ledger in self._ledgers.items():
            ledger.announced = announced(name)

    def new_term(self) -> None:
        """Runs counted under another term do not count: another replica polled meanwhile."""
        for ledger in self._ledgers.values():
            ledger.runs.clear()
            ledger.recovered.clear()

    def judge_key(self, report: CycleReport, account_id: str) -> None:
        """Count a cycle in which the API rejected the key (a 401, or a 403 on every call)
        toward its account's announcement, or end the run at a cycle it accepted the key."""
        statuses = [status for _, status, _ in report.rejected]
        verdict = key_verdict(report.calls, report.answered, statuses)
        subject = account_subject(account_id)
        if verdict:
            refused = (UNAUTHORIZED, FORBIDDEN)
            error = next(e for _, status, e in report.rejected if status in refused)
            self.keys.failed(subject, error)
        elif verdict is not None:
            # An account announced before (another one, before a restart) is read again too.
            for announced in {subject, *self.keys.announced}:
                self.keys.succeeded(announced)

    def due(self, plan: WatchPlan) -> dict[ConditionName, dict[str, str]]:
        """What to announce with this cycle's last write."""
        return {
            ConditionName.UNREADABLE: self.unreadable.notices(plan.unreadable_after),
            ConditionName.KEY_REJECTED: self.keys.notices(plan.api_down_after),
        }

    def recorded(self, due: Due) -> None:
        """`due` was written with its notices: remember it, and log each announcement."""
        for name, subjects in due.items():
            self._ledgers[name].announced_now(subjects)
            for target, error in subjects.items():
                if error:
                    log.error(_event(name, opened=True), target=target, error=error)
                else:
                    log.info(_event(name, opened=False), target=target)


def _event(name: ConditionName, *, opened: bool) -> str:
    """The log event of an announcement (literal names: the README lists them all)."""
    if name is ConditionName.KEY_REJECTED:
        event = "api.key_rejected" if opened else "api.key_accepted"
    else:
        event = "resource.unreadable" if opened else "resource.readable"
    return event
