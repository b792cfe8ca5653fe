"""The commands but `watch`: run, once, check, status, test-notify, healthcheck, demo, simulate."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from watcher.core.errors import ConfigError, StoreError
from watcher.core.kinds import JobKind
from watcher.core.text import for_terminal, one_line, without_userinfo
from watcher.core.urls import host_port, short_url

if TYPE_CHECKING:
    from watcher.config import Settings
    from watcher.runtime.plan import WatchPlan

from watcher.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    _error,
    _load,
    _run_async,
    state_where,
)


def _cmd_run(args: argparse.Namespace) -> int:
    from watcher import app

    settings = _load(args)
    settings.require_watches()
    app.api_key(settings)
    notifier = app.build_notifier(settings)
    _run_async(
        lambda: app.run_daemon(settings, notifier, reload=lambda: _load(args), migrate=args.migrate)
    )
    return EXIT_OK


def _cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the schema migrations the state database lacks; say from which version."""
    from watcher import backends, config

    settings = config.load_watcher(args.config, os.environ)

    async def migrate() -> str:
        async with backends.open_state(settings) as store:
            now, was = store.schema_version, store.migrated_from
            verb = f"schema {now} (was {was})" if was != now else f"schema {now}, up to date"
            return f"state database {store.display}: {verb}\n"

    sys.stdout.write(_run_async(migrate))
    return EXIT_OK


def _cmd_once(args: argparse.Namespace) -> int:
    from watcher import app
    from watcher.runtime.plan import CycleReport

    settings = _load(args)
    settings.require_watches()
    app.api_key(settings)
    notifier = app.build_notifier(settings)

    async def once() -> CycleReport:
        async with app.open_runtime(settings, notifier=notifier) as runtime:
            # Replicas may share the database: poll only while holding the poller lease,
            # under its fence, and hand it back after.
            lead = runtime.leadership
            await lead.check()
            if not lead.leader:
                holder = lead.lease.holder if lead.lease else "nobody (the database is unreachable)"
                raise StoreError(f"the poller lease is held by {holder}: a running replica polls")
            try:
                return await runtime.watcher.run_once()
            finally:
                await lead.release()

    report = _run_async(once)
    failed = report.api_errors or report.failed or report.dead
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from watcher import app

    settings = _load(args)
    settings.require_watches()
    app.api_key(settings)
    state_note = _check_state_path(settings)
    plan = app.build_plan(settings, app.build_notifier(settings))
    out = sys.stdout
    out.write(f"config {settings.source}: ok\n")
    base_url = without_userinfo(settings.fireworks.base_url)
    out.write(f"  account: {settings.fireworks.account_id} at {base_url}\n")
    jobs = [ref for ref in plan.refs if ref.kind.spec.listable]
    out.write(f"  jobs: {len(jobs)} listed")
    out.write(f", discover: {', '.join(plan.discover)}\n" if plan.discover else "\n")
    out.write(f"  poll every {plan.poll_interval:g} s, ")
    out.write(f"outcome states every {plan.terminal_poll_interval:g} s\n")
    if len(jobs) < len(plan.refs):  # the account's own health (suspended, spend limit...)
        out.write(f"  account health: every {plan.terminal_poll_interval:g} s (1 request)\n")
    out.write(f"  state: {state_where(settings.watcher)}{state_note}\n")
    for channel in plan.channels:
        out.write(f"  channel {channel.name}:\n")
        out.writelines(f"    {short_url(target.url_display)}\n" for target in channel.targets)
    if not plan.channels:
        out.write("  no [[channel]]: transitions will be recorded but not announced\n")
    if args.probe:
        return _probe(settings, plan)
    _write_budget(settings, plan, pages={})
    return EXIT_OK


def _check_state_path(settings: Settings) -> str:
    """Refuse a `state_path` that `run` could not open (one line, exit 2); say when its folder
    will be created. Nothing is created here."""
    from watcher.stores import files

    path = settings.watcher.state_path
    if settings.watcher.state_url is not None:
        return ""
    if problem := files.unusable(path):
        raise ConfigError(one_line(f"{settings.source}: watcher.state_path: {problem}"))
    return "" if path.parent.is_dir() else f" (folder {path.parent} will be created)"


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
    from watcher.core.kinds import NOT_FOUND

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
                    sys.stdout.write(f"  probe {ref.key}: {for_terminal(snapshot.state, 200)}\n")
                    if snapshot.state == NOT_FOUND:
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
                if target.fields:  # its URL takes them from each message: none to test with
                    fields = ", ".join(f"{{{name}}}" for name in target.fields)
                    shown = short_url(target.url_display)
                    sys.stdout.write(f"{channel.name} {shown}: skipped (its URL uses {fields})\n")
                    continue
                result = await notifier.send(
                    target.url_key,
                    title="fireworks-watcher test",
                    body=f"Test message for channel **{channel.name}**: it works.",
                    notify_type="info",
                )
                ok = result.outcome is SendOutcome.DELIVERED
                failures += not ok
                verdict = "delivered" if ok else f"{result.outcome}: {for_terminal(result.detail)}"
                sys.stdout.write(f"{channel.name} {short_url(target.url_display)}: {verdict}\n")
        return EXIT_FAILED if failures else EXIT_OK

    return _run_async(send_all)


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
    url = f"http://{host_port(host, port)}/healthz"
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

    return run_demo(duration=args.duration, stay=args.stay)


def _cmd_simulate(args: argparse.Namespace) -> int:
    import fireworks_sim as simulator

    argv = ["--host", args.host, "--port", str(args.port), "--jobs", str(args.jobs)]
    argv += ["--scenario", args.scenario]
    if args.api_key is not None:
        argv += ["--api-key", args.api_key]
    return simulator.main(argv)
