"""Waiting on a condition against a deadline: the one loop every test and harness uses.

The conditions are other threads' or processes' state (a receiver, a daemon's log, a store)
with no event of ours to wait on, so they are looked at often until a generous deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest

#: How long a test waits for something that takes milliseconds when all is well.
DEADLINE = 20.0
#: How often the condition is looked at.
INTERVAL = 0.01


def holds_within(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition` holds within `timeout` seconds (for harnesses that count misses)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(INTERVAL)
    return True


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Block until `condition` holds; fail the test naming `what` after `timeout` seconds."""
    if not holds_within(condition, timeout):
        pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


async def wait_until_async(
    condition: Callable[[], bool], what: str, deadline: float = DEADLINE
) -> None:
    """`wait_until` without blocking the event loop (`deadline`: its timeout, in seconds)."""
    with anyio.move_on_after(deadline):
        while not condition():  # noqa: ASYNC110 (no event of ours to wait on; see above)
            await anyio.sleep(INTERVAL)
        return
    pytest.fail(f"timed out after {deadline:g} s waiting for {what}")
