"""The hostile run in CI: every hostile peer at once, while a healthy job keeps being told.

A short `all` phase of `python -m tests.support.hostile` (which prints the full per-attack matrix):
the daemon as a real process against the simulator's `hostile` scenario, a 200-client
`/metrics` flood and a corrupt outbox row, with a DPO job moved every few seconds.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.hostile import run


def test_a_healthy_job_is_told_within_two_intervals_through_every_attack(
    tmp_path: Path,
) -> None:
    report = run(poll=2.0, seconds=24.0, phases=["all"], workdir=tmp_path, progress=print)
    print(report.table())
    assert [] == report.problems
    assert report.phases[0].delays, "the probe was never moved"
    assert report.rss_mib < 256  # the Kubernetes limit in deploy/
