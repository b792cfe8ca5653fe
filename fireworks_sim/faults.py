"""Fault injection: queued faults (`Simulator.add_fault`) and the `chaos` scenario's random ones.

`CHAOS_SLOW_SECONDS` is read here when a chaos fault is drawn: patch it on this module.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: How long the `chaos` scenario's slow answers take, in (real) seconds.
CHAOS_SLOW_SECONDS = 2.0


@dataclass(slots=True)
class _Fault:
    """A pending injected fault; `remaining` counts down per matching request."""

    remaining: int
    status: int | None
    path_contains: str
    retry_after: str | None
    body: str | None
    content_type: str
    delay: float
    malformed: bool
    truncated: bool


@dataclass(slots=True)
class _Chaos:
    """Seeded random faults mixed into API answers (the `chaos` scenario)."""

    rng: random.Random
    rate: float


def _take_fault(faults: list[_Fault], chaos: _Chaos | None, target: str) -> _Fault | None:
    """The first queued fault matching `target` (counted down), else maybe a chaos one.

    Expects the simulator's lock to be held: `faults` is its queue.
    """
    for index, fault in enumerate(faults):
        if fault.path_contains in target:
            fault.remaining -= 1
            if fault.remaining == 0:
                del faults[index]
            return fault
    return None if chaos is None else _chaos_fault(chaos)


def _chaos_fault(chaos: _Chaos) -> _Fault | None:
    """Maybe a one-off fault for this request, drawn from the seeded generator."""
    rng = chaos.rng
    if rng.random() >= chaos.rate:
        return None
    kind = rng.choice(("500", "503", "429", "slow", "malformed"))
    return _Fault(
        remaining=1,
        status={"500": 500, "503": 503, "429": 429}.get(kind),
        path_contains="",
        retry_after="1" if kind == "429" else None,
        body=None,
        content_type="application/json",
        delay=CHAOS_SLOW_SECONDS if kind == "slow" else 0.0,
        malformed=kind == "malformed",
        truncated=False,
    )
