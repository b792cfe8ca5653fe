"""The `fireworks-watcher` command: the only place where adapters are built and wired together.

Heavy libraries (httpx, apprise, pydantic, uvicorn) are imported inside the commands that use
them, so `--help` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from watcher import __version__
from watcher.cli.commands import (
    _cmd_check,
    _cmd_demo,
    _cmd_healthcheck,
    _cmd_migrate,
    _cmd_once,
    _cmd_run,
    _cmd_simulate,
    _cmd_test_notify,
)
from watcher.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    LOG_FORMAT_ENV,
    _error,
    lower,
)
from watcher.cli.history import _cmd_history
from watcher.cli.silence import _cmd_silence_add, _cmd_silence_expire, _cmd_silence_list
from watcher.cli.status import _cmd_status
from watcher.cli.watch import _cmd_watch
from watcher.core.errors import ConfigError, ListenError, NotifyError, StoreError, WatcherError
from watcher.core.kinds import JobKind


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from watcher import logs

    watch = args.command == "watch"
    # `watch` prints each transition itself: its logs stay on stderr, at warning unless asked,
    # and are lines for the person who runs it, piped or not (JSON only when asked for).
    logs.configure(
        level=args.log_level or ("warning" if watch else "info"),
        json=False if watch and not os.environ.get(LOG_FORMAT_ENV) else None,
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (ConfigError, NotifyError, StoreError, ListenError) as exc:
        _error(str(exc))
        return EXIT_USAGE
    except WatcherError as exc:
        _error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fireworks-watcher",
        description="Watch Fireworks AI jobs and announce every state change through apprise.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level",
        type=lower,
        choices=["debug", "info", "warning", "error"],
        help="default: info (warning for watch)",
    )
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_: str) -> Any:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.set_defaults(command=name, handler=handler)
        return sub

    def with_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "-c",
            "--config",
            type=Path,
            help="config file (default: $FIREWORKS_WATCHER_CONFIG, ./watcher.toml, "
            "/etc/fireworks-watcher/watcher.toml)",
        )

    run = command("run", _cmd_run, "run the daemon")
    with_config(run)
    run.add_argument(
        "--no-migrate",
        dest="migrate",
        action="store_false",
        help="refuse a state database whose schema is behind instead of upgrading it",
    )
    with_config(command("migrate", _cmd_migrate, "bring the state database's schema up to date"))
    check = command("check", _cmd_check, "validate the config")
    with_config(check)
    check.add_argument(
        "--probe", action="store_true", help="also call the API once per watch (sends nothing)"
    )
    with_config(command("once", _cmd_once, "one poll cycle and delivery, then exit"))
    watch = command(
        "watch",
        _cmd_watch,
        "follow one resource to an outcome: exit 0 success, 1 failure or gone, 2 usage or "
        "rejected, 3 timeout",
    )
    watch.add_argument("job", help="resource id or full resource name")
    kinds = [kind.value for kind in JobKind]
    watch.add_argument(
        "--kind", default="dpo", type=lower, choices=kinds, metavar="KIND", help=" | ".join(kinds)
    )
    watch.add_argument("--account", help="account id (default: $FIREWORKS_ACCOUNT_ID)")
    watch.add_argument(
        "--notify", action="append", default=[], metavar="URL", help="apprise URL (repeatable)"
    )
    watch.add_argument(
        "--interval",
        default="15",
        metavar="DURATION",
        help="time between polls: 90s, 30m, 2h or seconds (default 15)",
    )
    watch.add_argument(
        "--timeout",
        metavar="DURATION",
        help="give up after this long (exit 3): 90s, 30m, 2h or seconds",
    )
    watch.add_argument(
        "--no-live",
        action="store_true",
        help="no live status line on a terminal: one plain line per transition, as when piped",
    )
    status = command("status", _cmd_status, "last known state of every job, undelivered messages")
    with_config(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    _silence_commands(command("silence", _silence_usage, "mute matching messages for a while"))
    history = command("history", _cmd_history, "the timeline of transitions, notices, deliveries")
    with_config(history)
    history.add_argument("job", nargs="?", help="a job id, a key (dpo/my-job) or a glob")
    history.add_argument(
        "--since", default="24h", metavar="DURATION", help="how far back (default 24h)"
    )
    history.add_argument("--json", action="store_true", help="machine-readable output")
    test_notify = command("test-notify", _cmd_test_notify, "send a test message to each channel")
    with_config(test_notify)
    test_notify.add_argument("channel", nargs="?", help="only this channel")
    healthcheck = command(
        "healthcheck", _cmd_healthcheck, "query the local /healthz (for container health checks)"
    )
    with_config(healthcheck)
    healthcheck.add_argument("--timeout", type=float, default=3.0, help="seconds to wait")
    demo = command("demo", _cmd_demo, "simulated jobs moving, announced on the console (~20 s)")
    demo.add_argument("--duration", type=float, default=40.0, help=argparse.SUPPRESS)
    demo.add_argument(
        "--stay", action="store_true", help="keep watching and serving the page until Ctrl-C"
    )
    simulate = command("simulate", _cmd_simulate, "run the Fireworks API simulator alone")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8080)
    simulate.add_argument(
        "--jobs", type=int, default=0, help="N generated DPO jobs (0: a scenario)"
    )
    simulate.add_argument(
        "--scenario",
        default="demo",
        metavar="NAME",
        help="demo (a few jobs moving once), busy (every kind, moving forever), chaos (busy "
        "with faults)",
    )
    simulate.add_argument(
        "--api-key", help="the key clients must send (default: $FIREWORKS_API_KEY or sim-key)"
    )
    return parser


def _silence_usage(args: argparse.Namespace) -> int:
    _error("silence: name an action: add, list or expire (see `silence --help`)")
    return EXIT_USAGE


def _silence_commands(silence: argparse.ArgumentParser) -> None:
    actions = silence.add_subparsers(title="actions", metavar="ACTION")

    def action(name: str, handler: Callable[[argparse.Namespace], int], help_: str) -> Any:
        sub = actions.add_parser(name, help=help_, description=help_)
        sub.set_defaults(handler=handler)
        sub.add_argument("-c", "--config", type=Path, help="config file (as for `run`)")
        return sub

    add = action("add", _cmd_silence_add, "add a silence; prints its id and when it ends")
    add.add_argument("--job", required=True, metavar="GLOB", help="glob on job id or display name")
    add.add_argument("--kind", metavar="GLOB", help="only these kinds (dpo, sft, dpo*, ...)")
    add.add_argument("--owner", metavar="GLOB", help="only jobs their creator matches (alice@*)")
    add.add_argument("--state", metavar="STATE", help="only messages about this state (FAILED)")
    add.add_argument("--channel", metavar="NAME", help="only this channel")
    add.add_argument(
        "--for", dest="duration", required=True, metavar="DURATION", help="2h, 30m, 1d (<= 90d)"
    )
    add.add_argument("--comment", required=True, metavar="TEXT", help="why (shown in list)")
    listing = action("list", _cmd_silence_list, "the silences in force")
    listing.add_argument("--all", action="store_true", help="ended and expired ones too")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    expire = action("expire", _cmd_silence_expire, "end a silence now")
    expire.add_argument("id", metavar="ID", help="the silence id (see `silence list`)")


# -- composition -----------------------------------------------------------------------------
