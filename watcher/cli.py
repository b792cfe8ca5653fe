"""The `fireworks-watcher` command: the only place where adapters are built and wired together.

Heavy libraries (httpx, apprise, pydantic, uvicorn) are imported inside the commands that use
them, so `--help` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from watcher import __version__
from watcher.core.errors import ConfigError, ListenError, NotifyError, StoreError, WatcherError
from watcher.core.kinds import JobKind

if TYPE_CHECKING:
    from watcher.config import Settings
    from watcher.core.model import JobRef, Transition
    from watcher.runtime.plan import WatchPlan
    from watcher.runtime.poller import Watcher

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
#: `watch` gives up on an API rejection (a 4xx other than 404/408/409/429) after this many polls.
WATCH_REJECTIONS = 3


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from watcher import logs

    logs.configure(level=args.log_level)
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


def _error(message: str) -> None:
    from watcher.logs import redact

    sys.stderr.write(f"fireworks-watcher: error: {redact(message)}\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fireworks-watcher",
        description="Watch Fireworks AI jobs and announce every state change through apprise.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
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

    with_config(command("run", _cmd_run, "run the daemon"))
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
        "--kind", default="dpo", choices=kinds, metavar="KIND", help=" | ".join(kinds)
    )
    watch.add_argument("--account", help="account id (default: $FIREWORKS_ACCOUNT_ID)")
    watch.add_argument(
        "--notify", action="append", default=[], metavar="URL", help="apprise URL (repeatable)"
    )
    watch.add_argument("--interval", type=float, default=15.0, help="seconds between polls")
    watch.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up after this long (exit 3)"
    )
    status = command("status", _cmd_status, "last known state of every job, undelivered messages")
    with_config(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
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


# -- composition -----------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> Settings:
    from watcher import config

    return config.load(args.config, os.environ)


def _run_async(func: Callable[[], Awaitable[T]]) -> T:
    """Run `func` on asyncio; a task group's failure that is one WatcherError (a port in use,
    a locked state file) is raised as that error, so it gets its one line and exit code."""
    import anyio

    try:
        return anyio.run(func)
    except BaseExceptionGroup as group:
        errors = _leaves(group)
        if len(errors) == 1 and isinstance(errors[0], WatcherError):
            raise errors[0] from None
        raise


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            found += _leaves(error)
        else:
            found.append(error)
    return found


# -- commands --------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    from watcher import app

    settings = _load(args)
    settings.require_watches()
    app.api_key(settings)
    notifier = app.build_notifier(settings)
    _run_async(lambda: app.run_daemon(settings, notifier, reload=lambda: _load(args)))
    return EXIT_OK


def _cmd_once(args: argparse.Namespace) -> int:
    from watcher import app
    from watcher.runtime.plan import CycleReport

    settings = _load(args)
    settings.require_watches()
    app.api_key(settings)
    notifier = app.build_notifier(settings)

    async def once() -> CycleReport:
        async with app.open_watcher(settings, notifier=notifier) as watcher:
            return await watcher.run_once()

    report = _run_async(once)
    failed = report.api_errors or report.failed or report.dead
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from watcher import app

    settings = _load(args)
    settings.require_watches()
    app.api_key(settings)
    plan = app.build_plan(settings, app.build_notifier(settings))
    out = sys.stdout
    out.write(f"config {settings.source}: ok\n")
    out.write(f"  account: {settings.fireworks.account_id} at {settings.fireworks.base_url}\n")
    out.write(f"  jobs: {len(plan.refs)} listed")
    out.write(f", discover: {', '.join(plan.discover)}\n" if plan.discover else "\n")
    out.write(f"  poll every {plan.poll_interval:g} s, ")
    out.write(f"outcome states every {plan.terminal_poll_interval:g} s\n")
    out.write(f"  state: {settings.watcher.state_path}\n")
    for channel in plan.channels:
        out.write(f"  channel {channel.name}:\n")
        out.writelines(f"    {target.url_display}\n" for target in channel.targets)
    if not plan.channels:
        out.write("  no [[channel]]: transitions will be recorded but not announced\n")
    if args.probe:
        return _probe(settings, plan)
    _write_budget(settings, plan, pages={})
    return EXIT_OK


def _write_budget(settings: Settings, plan: WatchPlan, *, pages: dict[JobKind, int]) -> None:
    """Say what a full cycle costs against the request budget, and the interval it allows."""
    from watcher.core.budget import effective_interval, requests_per_cycle

    cost = requests_per_cycle(plan.refs, plan.discover, pages)
    per_minute = settings.watcher.max_requests_per_minute
    unknown = [kind for kind in plan.discover if kind not in pages]
    out = sys.stdout
    out.write(f"  API budget: {per_minute} requests/min; a full cycle costs {cost} request(s)")
    out.write(
        " (+1 per 200 jobs of each discovered kind; --probe counts them)\n" if unknown else "\n"
    )
    interval = effective_interval(cost, per_minute, plan.poll_interval)
    if interval > plan.poll_interval:
        out.write(
            f"  warning: the budget cannot poll every {plan.poll_interval:g} s; "
            f"the effective interval is {interval:g} s\n"
        )


def _probe(settings: Settings, plan: WatchPlan) -> int:
    from watcher import app
    from watcher.core.budget import RequestBudget
    from watcher.core.errors import ApiError
    from watcher.core.model import JobState

    async def probe() -> int:
        problems = 0
        pages: dict[JobKind, int] = {}
        budget = RequestBudget(settings.watcher.max_requests_per_minute)
        async with app.fireworks_client(settings, budget=budget) as client:
            try:
                for kind in plan.discover:
                    listing = await client.listing(kind)
                    pages[kind] = listing.pages
                    sys.stdout.write(
                        f"  probe {kind}: {len(listing.jobs)} jobs listed "
                        f"in {listing.pages} page(s)\n"
                    )
                for ref in plan.refs:
                    snapshot = await client.get_job(ref)
                    sys.stdout.write(f"  probe {ref.key}: {snapshot.state}\n")
                    if snapshot.state == JobState.NOT_FOUND:
                        problems += 1
            except ApiError as exc:
                _error(f"probe failed: {exc}")
                return EXIT_USAGE
        _write_budget(settings, plan, pages=pages)
        if problems:
            _error(f"{problems} watched job(s) not found")
            return EXIT_USAGE
        return EXIT_OK

    return _run_async(probe)


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from watcher import config
    from watcher.stores.sqlite import StateStore

    # The state file only: no channel secret (`${VAR}`), account or key is needed to read it.
    path = config.load_watcher(args.config, os.environ).state_path
    if not path.exists():
        if args.json:
            empty = {"state_path": str(path), "jobs": [], "unreadable": [], "undelivered": []}
            sys.stdout.write(json.dumps(empty))
            sys.stdout.write("\n")
        else:
            sys.stdout.write(f"no state yet at {path}\n")
        return EXIT_OK
    from watcher.core.decide import UNREADABLE_FLAG

    with StateStore.open(path) as store:
        jobs = sorted(store.last_all().values(), key=lambda s: s.ref.key)
        undelivered = store.undelivered()
        unreadable = sorted((t, e) for t, e in store.flags(UNREADABLE_FLAG).items() if e)
    if args.json:
        document = {
            "state_path": str(path),
            "jobs": [
                {
                    "job": s.ref.key,
                    "kind": str(s.ref.kind),
                    "job_id": s.ref.job_id,
                    "display_name": s.display_name,
                    "state": s.state,
                    "status_code": s.status_code,
                    "status_message": s.status_message,
                    "reason": s.reason,
                    "progress": s.progress,
                    "update_time": s.update_time,
                }
                for s in jobs
            ],
            "unreadable": [{"target": target, "error": error} for target, error in unreadable],
            "undelivered": [
                {
                    "id": d.id,
                    "status": d.status,
                    "job": d.entry.job_key,
                    "channel": d.entry.channel,
                    "url": d.entry.url_display,
                    "old_state": d.entry.old_state,
                    "new_state": d.entry.new_state,
                    "created_at": d.entry.created_at.isoformat(),
                    "attempts": d.attempts,
                    "next_attempt_at": d.next_attempt_at.isoformat(),
                    "last_error": d.last_error,
                }
                for d in undelivered
            ],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return EXIT_OK
    out = sys.stdout
    out.write(f"state: {path}\n")
    width = max([len(s.ref.key) for s in jobs] + [3])
    out.write(f"{'JOB':<{width}}  {'STATE':<16}  STATUS\n")
    for s in jobs:
        status = f"{s.status_code}: {s.status_message}" if s.status_message else s.status_code
        out.write(f"{s.ref.key:<{width}}  {s.state:<16}  {status}\n")
    if unreadable:
        out.write(f"\n{len(unreadable)} resource(s) the watcher cannot read:\n")
        for target, error in unreadable:
            out.write(f"  {target}: {error}\n")
    if not undelivered:
        out.write("\nevery notification delivered\n")
        return EXIT_OK
    out.write(f"\n{len(undelivered)} undelivered notification(s):\n")
    for d in undelivered:
        e = d.entry
        when = "dead" if d.status == "dead" else f"next try {d.next_attempt_at:%Y-%m-%d %H:%M:%S}Z"
        out.write(
            f"  {e.job_key} {e.old_state or '-'} → {e.new_state} to {e.channel} ({e.url_display}): "
            f"{d.attempts} attempt(s), {when}; {d.last_error}\n"
        )
    return EXIT_OK


def _cmd_test_notify(args: argparse.Namespace) -> int:
    from watcher import app
    from watcher.core.delivery import SendOutcome

    settings = _load(args)
    notifier = app.build_notifier(settings)
    plan = app.build_plan(settings, notifier)
    channels = [c for c in plan.channels if args.channel in (None, c.name)]
    if not channels:
        known = ", ".join(c.name for c in plan.channels) or "none"
        _error(f"no channel named {args.channel!r} (channels: {known})")
        return EXIT_USAGE

    async def send_all() -> int:
        failures = 0
        for channel in channels:
            for target in channel.targets:
                result = await notifier.send(
                    target.url_key,
                    title="fireworks-watcher test",
                    body=f"Test message for channel **{channel.name}**: it works.",
                    notify_type="info",
                )
                ok = result.outcome is SendOutcome.DELIVERED
                failures += not ok
                verdict = "delivered" if ok else f"{result.outcome}: {result.detail}"
                sys.stdout.write(f"{channel.name} {target.url_display}: {verdict}\n")
        return EXIT_FAILED if failures else EXIT_OK

    return _run_async(send_all)


#: Config key paths `watch` builds, by the flag a user typed them with.
_WATCH_FLAGS: Final = (
    ("fireworks.account_id", "--account"),
    ("fireworks.api_key_file", "FIREWORKS_API_KEY"),
    ("watch[0].jobs[0]", "JOB"),
    ("watch[0].kind", "--kind"),
    ("watcher.terminal_poll_interval", "--interval"),
    ("watcher.poll_interval", "--interval"),
    ("channel[0].urls", "--notify"),
)


def _flag_error(message: str) -> str:
    """A config error of `watch`, naming the flag instead of the config key it became."""
    text = message.removeprefix("watch: ")
    for path, flag in _WATCH_FLAGS:
        text = text.replace(path, flag)
    # `--notify[0]` -> `--notify #1`: people count the flags they typed from one.
    return re.sub(r"--notify\[(\d+)\]", lambda m: f"--notify #{int(m[1]) + 1}", text)


def _watch_settings(args: argparse.Namespace, env: Mapping[str, str], state: Path) -> Settings:
    from watcher import config

    fireworks: dict[str, Any] = {}
    if args.account:
        fireworks["account_id"] = args.account
    data: dict[str, Any] = {
        "fireworks": fireworks,
        "watcher": {
            "poll_interval": args.interval,
            "terminal_poll_interval": args.interval,
            # One job: its poll interval is the budget (twice over, for retries).
            "max_requests_per_minute": max(60, math.ceil(120 / args.interval)),
            "state_path": str(state),
            "health_listen": "",
        },
        "watch": [{"kind": args.kind, "jobs": [args.job]}],
        "channel": [{"name": "watch", "urls": args.notify}] if args.notify else [],
    }
    try:
        settings = config.parse(data, env, source="watch")
        settings.require_api_key()
    except ConfigError as exc:
        raise ConfigError(_flag_error(str(exc))) from None
    return settings


def _cmd_watch(args: argparse.Namespace) -> int:
    import tempfile

    from watcher import app

    if not 0 < args.interval < math.inf:
        _error("--interval must be > 0")
        return EXIT_USAGE
    if args.timeout is not None and not 0 < args.timeout < math.inf:
        _error("--timeout must be > 0")
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="fireworks-watcher-") as tmp:
        settings = _watch_settings(args, os.environ, Path(tmp) / "state.db")
        (ref,) = settings.refs()

        def show(transition: Transition) -> None:
            new = transition.new
            move = f"{transition.old_state} → {new.state}" if transition.old else new.state
            reason = f" ({new.status_code}: {new.status_message})" if new.status_message else ""
            progress = f" {new.progress}%" if new.progress else ""
            stamp = f"{transition.observed_at:%Y-%m-%dT%H:%M:%SZ}"
            sys.stdout.write(f"{stamp} {ref.kind}/{ref.job_id}: {move}{progress}{reason}\n")
            sys.stdout.flush()

        async def follow() -> int:
            import anyio

            try:
                notifier = app.build_notifier(settings)
            except NotifyError as exc:
                raise NotifyError(_flag_error(str(exc))) from None
            async with app.open_watcher(settings, on_transition=show, notifier=notifier) as w:
                with anyio.move_on_after(args.timeout if args.timeout is not None else math.inf):
                    return await _follow(w, ref, account=settings.fireworks.account_id)
                last = w.last(ref)
                state = last.state if last is not None else "not seen yet"
                _error(
                    f"--timeout: {ref.kind}/{ref.job_id} is still {state} after {args.timeout:g} s"
                )
                return EXIT_TIMEOUT

        return _run_async(follow)


async def _follow(watcher: Watcher, ref: JobRef, *, account: str) -> int:
    """Poll until the resource reaches an outcome; returns the exit code it means."""
    import anyio

    from watcher.core.kinds import watch_exit

    rejections = 0
    while True:
        report = await watcher.run_once()
        for target, status, error in report.rejected:
            if status == 401:
                msg = "the API rejected the key (HTTP 401): check FIREWORKS_API_KEY"
                raise ConfigError(msg)
            if status == 403:
                raise ConfigError(f"permission denied for account {account} (HTTP 403): {error}")
            if target == ref.key:
                rejections += 1
                if rejections >= WATCH_REJECTIONS:
                    raise ConfigError(f"{ref.kind}/{ref.job_id}: {error}")
        last = watcher.last(ref)
        code = watch_exit(ref.kind, last.state) if last is not None else None
        if code is not None:
            # Give the last notifications a fair chance before exiting.
            with anyio.move_on_after(30):
                pending = (await watcher.dispatch_once()).failed
                while pending:
                    await anyio.sleep(await watcher.next_wake())
                    pending = (await watcher.dispatch_once()).failed
            return code
        await anyio.sleep(await watcher.next_wake())


def _cmd_healthcheck(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from watcher import config

    try:
        address = _load(args).watcher.health_address
    except ConfigError:
        # No usable config: the daemon's own default (or the image's variable) still applies.
        listen = os.environ.get(config.HEALTH_LISTEN_ENV, "127.0.0.1:9464")
        address = config.parse_listen(listen) if listen else None
    if address is None:
        _error("the health server is disabled (watcher.health_listen is empty)")
        return EXIT_FAILED
    host, port = address
    # A wildcard listen address is reached through loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    url = f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    try:
        with opener.open(url, timeout=args.timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        _error(f"{url}: {getattr(exc, 'reason', exc)}")
        return EXIT_FAILED
    sys.stdout.write(f"{url}: {status}\n")
    return EXIT_OK if status == 200 else EXIT_FAILED


def _cmd_demo(args: argparse.Namespace) -> int:
    from watcher.demo import run_demo

    return run_demo(duration=args.duration)


def _cmd_simulate(args: argparse.Namespace) -> int:
    import fireworks_sim as simulator

    argv = ["--host", args.host, "--port", str(args.port), "--jobs", str(args.jobs)]
    argv += ["--scenario", args.scenario]
    if args.api_key is not None:
        argv += ["--api-key", args.api_key]
    return simulator.main(argv)
