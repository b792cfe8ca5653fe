"""`python -m fireworks_sim`: serve the simulator alone, with a scenario or generated jobs."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from fireworks_sim.api import Simulator
from fireworks_sim.scenarios import SCENARIOS, populate, scenario
from fireworks_sim.serve import serve


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator alone: `python -m fireworks_sim [--port P] [--jobs N] [--scenario S]`.

    `--scenario` loads `demo` (the default), `busy`, `chaos` (faults drawn from `--seed`) or `hostile`;
    `--jobs N` adds N generated DPO jobs instead of the demo, or beside busy and chaos.
    """
    parser = argparse.ArgumentParser(
        prog="python -m fireworks_sim", description="Serve a Fireworks API look-alike."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument(
        "--jobs", type=int, default=0, metavar="N", help="populate N DPO jobs (0: none)"
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default=None,
        help="demo (default; replaced by --jobs N), busy (every kind, forever), chaos or hostile",
    )
    parser.add_argument("--seed", type=int, default=0, help="the chaos scenario's fault seed")
    env_key = os.environ.get("FIREWORKS_API_KEY")
    parser.add_argument("--api-key", default=env_key or "sim-key")
    parser.add_argument("--account", default=os.environ.get("FIREWORKS_ACCOUNT_ID", "sim-account"))
    args = parser.parse_args(argv)

    sim = Simulator(api_key=args.api_key, account_id=args.account)
    loaded: list[str] = []
    if args.jobs > 0:
        loaded += populate(sim, args.jobs)
    # Generated jobs replace the demo (the default scenario); busy and chaos add to them.
    name = args.scenario or "demo"
    if args.jobs > 0 and name == "demo":
        name = None
    if name is not None:
        loaded += scenario(sim, name, seed=args.seed)
    what = f"scenario {name}" if name else "generated"
    # A key taken from the environment may be a real one: never print it.
    shown_key = "(as already set)" if args.api_key == env_key else args.api_key

    def announce(url: str) -> None:
        print(
            f"Fireworks simulator listening on {url} with {len(loaded)} resources ({what});"
            f" point the watcher at it: FIREWORKS_BASE_URL={url}"
            f" FIREWORKS_ACCOUNT_ID={args.account} FIREWORKS_API_KEY={shown_key}",
            flush=True,
        )

    previous = None
    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the SIGTERM it caught once it has shut down; make that exit 0.
        previous = signal.signal(signal.SIGTERM, _exit_zero)
    try:
        serve(sim, args.host, args.port, ready=announce)
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _exit_zero(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)
