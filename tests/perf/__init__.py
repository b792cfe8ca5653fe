"""Performance measurements of the watcher against the simulator (`python -m tests.perf.bench`)."""
