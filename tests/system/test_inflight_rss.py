"""Eleven kinds answering ~30 MB LIST pages at once, at the default settings (slow).

Runs the figures script (`python -m tests.perf.inflight`) in a subprocess: the client lists
every kind side by side against a loopback server. It prints the peak RSS (the target is under
200 MB; it is a figure, never asserted here) and checks what is not timing: every kind's page
was read, none dropped, and the bytes held at once never passed `max_inflight_bytes`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from watcher.sources.stream import DEFAULT_MAX_INFLIGHT_BYTES

KINDS = 11
JOBS_PER_PAGE = 200


@pytest.mark.slow
def test_eleven_kinds_of_30_mb_pages_are_read_within_the_default_budget() -> None:
    command = [sys.executable, "-m", "tests.perf.inflight", "--kinds", str(KINDS)]
    command += ["--rounds", "1", "--shape", "text"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    print(done.stdout)  # the figures, peak RSS among them

    assert 0 == done.returncode, done.stderr[-2000:]
    fields = dict(part.split("=", 1) for part in done.stdout.strip().splitlines()[-1].split(" | "))
    assert "[]" == fields["failed"]
    assert str(KINDS * JOBS_PER_PAGE) == fields["jobs_listed"]
    assert float(fields["budget_high_water_mb"]) <= DEFAULT_MAX_INFLIGHT_BYTES / 1_000_000
    assert int(fields["answers_that_waited"]) >= 1
