"""`python -m fireworks_sim`: serve the simulator alone (see `fireworks_sim.cli.main`)."""

from __future__ import annotations

from fireworks_sim.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
