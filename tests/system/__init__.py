"""Whole-system runs: crash, chaos, hostile, HA, the browser, schemathesis, the perf smoke test."""
