"""Metric label values from a bounded set, whatever the API answers.

Every distinct label value is a new time series kept for the life of the process, and a state
string comes from the API: 200 jobs in random states, or 2,000-character ones, would grow
`/metrics` (and memory) without end. Each label is mapped onto the values it is documented to
take, and anything else onto `other`.
"""

from __future__ import annotations

from typing import Final

from watcher.core.kinds import KINDS, NOT_FOUND, UNSPECIFIED

OTHER: Final = "other"
#: What an API call can end as (`watcher.ports.Observer.api_call`).
API_OUTCOMES: Final = frozenset({"ok", "unavailable", "rejected", "auth", "payload"})
#: What a send can end as (`watcher.ports.Observer.notification`).
SEND_OUTCOMES: Final = frozenset({"sent", "failed", "dead"})
#: HTTP statuses worth a series of their own; the rest are counted by class (`4xx`).
KNOWN_STATUSES: Final = frozenset({200, 400, 401, 403, 404, 408, 409, 429, 500, 502, 503, 504})
#: A request that got no HTTP answer (a timeout, a refused connection).
NO_ANSWER: Final = "error"

_KIND_STATES: Final = {
    str(kind): frozenset({*spec.states, NOT_FOUND, UNSPECIFIED}) for kind, spec in KINDS.items()
}


def kind_label(kind: str) -> str:
    """A job kind as a label: one of `JobKind`, else `other`."""
    return kind if kind in _KIND_STATES else OTHER


def state_label(kind: str, state: str) -> str:
    """A state as a label: one the kind documents (or NOT_FOUND, UNSPECIFIED), else `other`."""
    return state if state in _KIND_STATES.get(kind, frozenset()) else OTHER


def one_of(value: str, known: frozenset[str]) -> str:
    """`value` when it is `known`, else `other`."""
    return value if value in known else OTHER


def status_label(status: str) -> str:
    """An HTTP status as a label: a known code, else its class (`3xx`); `error` for no answer,
    `other` for anything that is no status at all."""
    if status == NO_ANSWER:
        return NO_ANSWER
    if not (status.isascii() and status.isdigit() and len(status) == 3):
        return OTHER
    code = int(status)
    if code in KNOWN_STATUSES:
        return status
    return f"{code // 100}xx" if 100 <= code <= 599 else OTHER
