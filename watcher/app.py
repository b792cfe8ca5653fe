"""Composition: build the concrete adapters from settings and wire them into a Poller.

Used by the command line and the demo; the only module (with them) that knows every adapter.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import datetime

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
import structlog

from watcher import __version__, logs
from watcher.backends import StateDb, exclusive_use, open_state
from watcher.config import ChannelSettings, Settings
from watcher.core.budget import RequestBudget
from watcher.core.clock import SteadyClock
from watcher.core.conditions import Thresholds
from watcher.core.delivery import Channel, ChannelPolicy, RetryPolicy
from watcher.core.errors import ConfigError, WatcherError
from watcher.core.lease import lease_ttl
from watcher.core.model import Transition
from watcher.core.people import People, Person
from watcher.core.rules import channel_rule
from watcher.core.text import userinfo
from watcher.core.urls import host_port
from watcher.notify.apprise_sender import AppriseNotifier, register_console_scheme
from watcher.runtime.gates import batched
from watcher.runtime.host_clocks import monotonic, utcnow
from watcher.runtime.leadership import Leadership, replica_name
from watcher.runtime.plan import WatchPlan
from watcher.runtime.poller import Poller
from watcher.runtime.sdnotify import SystemdNotifier
from watcher.sources.fireworks import FireworksClient
from watcher.views import StoreStatus
from watcher.web.auth import LOCKED_REASON, MISDIRECTED_REASON, Access, is_loopback
from watcher.web.health import Health
from watcher.web.page import StatusPage
from watcher.web.serve import serve_health

log = structlog.get_logger("watcher")


def build_notifier(settings: Settings) -> AppriseNotifier:
    """An apprise notifier for every channel URL; NotifyError names a URL apprise cannot use."""
    register_console_scheme()
    urls = [
        (f"channel[{i}].urls[{j}]", url.get_secret_value())
        for i, channel in enumerate(settings.channels)
        for j, url in enumerate(channel.urls)
    ]
    hidden = [secret.get_secret_value() for secret in settings.url_secrets]
    notifier = AppriseNotifier(urls, timeout=settings.watcher.notify_timeout, hidden=hidden)
    logs.add_secrets(notifier.secrets())
    return notifier


def channel_policy(section: ChannelSettings) -> ChannelPolicy:
    """A channel's policy: each field is the key of its name, but for two that say it
    another way (`group_by`, and `digest` unset)."""
    keys = type(section).model_fields
    same = {f.name: getattr(section, f.name) for f in fields(ChannelPolicy) if f.name in keys}
    other = {"group_by_account": section.group_by == "account", "digest": section.digest or ""}
    return ChannelPolicy(**(same | other))


def build_plan(settings: Settings, notifier: AppriseNotifier) -> WatchPlan:
    """What the loop watches and whom it tells, from the settings."""
    people = People.of(Person(p.email, p.name, p.slack, p.discord) for p in settings.people)
    channels = tuple(
        Channel(
            name=c.name,
            targets=tuple(notifier.target(u.get_secret_value()) for u in c.urls),
            rule=channel_rule(c, people.emails),
            title=c.title,
            body=c.body,
            people=people,
            policy=channel_policy(c),
        )
        for c in settings.channels
    )
    for i, channel in enumerate(channels):
        templated = [j for j, t in enumerate(channel.targets) if t.fields]
        if templated and batched(channel):
            # A batched channel's lanes are claimed by the configured URL's key; a templated
            # URL has one lane per set of values.
            msg = (
                f"channel[{i}].urls[{templated[0]}]: a URL with fields cannot be used in a "
                'channel that groups or holds messages (group_wait, group_by = "account", '
                "max_per_minute, quiet_hours)"
            )
            raise ConfigError(msg)
    w = settings.watcher
    limits = {
        watch: Thresholds(
            watch.stall_after,
            watch.pending_after,
            watch.max_runtime,
            watch.flap_threshold,
            watch.flap_window,
        )
        for watch in settings.watches
    }
    # The account is one resource, never listed: watched by GET (`Settings.account_refs`).
    discover = (each.kind for each in settings.watches if each.discover and each.kind.spec.listable)
    return WatchPlan(
        refs=tuple(dict.fromkeys((*settings.refs(), *settings.account_refs()))),
        channels=channels,
        discover=tuple(dict.fromkeys(discover)),
        poll_interval=w.poll_interval,
        terminal_poll_interval=w.terminal_poll_interval or min(10 * w.poll_interval, 600.0),
        retry=RetryPolicy(max_delay=w.retry_max_delay, give_up_after=w.retry_for),
        api_down_after=w.api_down_after,
        unreadable_after=w.unreadable_after,
        api_label=settings.fireworks.base_url,
        account_id=settings.fireworks.account_id,
        notify_timeout=w.notify_timeout,
        max_new_per_cycle=w.max_new_per_cycle,
        # An explicit job takes its own watch's thresholds (the first that names it).
        job_thresholds={
            ref.key: limit
            for watch, limit in reversed(limits.items())
            for ref in settings.watch_refs(watch)
        },
        kind_thresholds={
            str(watch.kind): limit for watch, limit in reversed(limits.items()) if watch.discover
        },
        history_days=w.history_days,
    )


def api_key(settings: Settings) -> str:
    """The API key, registered for redaction; ConfigError names FIREWORKS_API_KEY when missing."""
    key = settings.require_api_key()
    # An authenticating proxy's password in base_url is as secret as the key.
    logs.add_secrets([key, *userinfo(settings.fireworks.base_url)])
    return key


class _TimedTransport(httpx.AsyncBaseTransport):
    """Reports every API request's duration and status (or "error") to the health metrics."""

    def __init__(self, inner: httpx.AsyncBaseTransport, health: Health) -> None:
        self._inner = inner
        self._health = health

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.HTTPError:
            self._health.observe_request(time.perf_counter() - started, status="error")
            raise
        self._health.observe_request(
            time.perf_counter() - started, status=str(response.status_code)
        )
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def fireworks_client(
    settings: Settings, *, health: Health | None = None, budget: RequestBudget | None = None
) -> AsyncIterator[FireworksClient]:
    """A Fireworks API client with its HTTP connection pool, closed on exit."""
    key = api_key(settings)
    timeout = httpx.Timeout(settings.watcher.request_timeout)
    transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
    if health is not None:
        transport = _TimedTransport(transport, health)
    async with httpx.AsyncClient(timeout=timeout, transport=transport) as http:
        yield FireworksClient(
            http,
            account_id=settings.fireworks.account_id,
            api_key=key,
            base_url=settings.fireworks.base_url,
            budget=budget,
            # httpx bounds each read; this bounds the whole answer, however it trickles in.
            deadline=settings.watcher.request_timeout,
            max_answer_bytes=settings.watcher.max_answer_bytes,
            # Every answer in flight together: kinds are read side by side.
            max_inflight_bytes=settings.watcher.max_inflight_bytes,
        )


@dataclass(frozen=True, slots=True)
class Runtime:
    """A watcher with the adapters whose settings a reload changes in place."""

    watcher: Poller
    client: FireworksClient
    budget: RequestBudget
    leadership: Leadership
    store: StateDb


@asynccontextmanager
async def open_watcher(
    settings: Settings,
    *,
    on_transition: Callable[[Transition], None] | None = None,
    notifier: AppriseNotifier | None = None,
    health: Health | None = None,
) -> AsyncIterator[Poller]:
    """A Poller on the real API client, state store and notifier; everything closed on exit."""
    async with open_runtime(
        settings, on_transition=on_transition, notifier=notifier, health=health
    ) as runtime:
        yield runtime.watcher


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    on_transition: Callable[[Transition], None] | None = None,
    notifier: AppriseNotifier | None = None,
    health: Health | None = None,
    clock: SteadyClock | None = None,
    migrate: bool = True,
) -> AsyncIterator[Runtime]:
    """`open_watcher`, also handing out the client and the budget (for SIGHUP).

    `clock` is the time the watcher stamps and compares stored times with (one the health
    checks share, so a step of the host clock moves neither).

    Raises:
        StateLocked: another process runs on this state file.
    """
    notifier = notifier if notifier is not None else build_notifier(settings)
    plan = build_plan(settings, notifier)
    # One budget for every request: the client pays for each, the loop plans with it.
    budget = RequestBudget(settings.watcher.max_requests_per_minute)
    async with (
        fireworks_client(settings, health=health, budget=budget) as client,
        open_state(settings.watcher, migrate=migrate, health=health) as store,
        exclusive_use(store),
    ):
        watcher = Poller(
            plan,
            source=client,
            store=store,
            sender=notifier,
            observer=health,
            on_transition=on_transition,
            budget=budget,
            clock=clock if clock is not None else SteadyClock(utcnow, monotonic),
            monotonic=monotonic,
        )
        leadership = Leadership(
            store,
            fence=store.fence,
            holder=replica_name(),
            ttl=lease_ttl(settings.watcher.poll_interval),
            started_at=utcnow(),
            observer=health,
            exclusive=store.single_process,
        )
        yield Runtime(watcher, client, budget, leadership, store)


async def run_daemon(
    settings: Settings,
    notifier: AppriseNotifier,
    *,
    reload: Callable[[], Settings],
    migrate: bool = True,
) -> None:
    """The daemon: cycles until SIGTERM/SIGINT; SIGHUP re-reads the config through `reload`.

    It upgrades the state database's schema first, unless `migrate` is False (then a schema
    that is behind is refused: `fireworks-watcher migrate` applies it).
    """
    if not settings.channels:
        log.warning("config.no_channels", source=settings.source)
    # One clock for the watcher and its health checks: a step of the host clock changes
    # neither what is due nor how old the last cycle looks.
    clock = SteadyClock(utcnow, monotonic)
    health = Health(
        poll_interval=settings.watcher.poll_interval,
        terminal_poll_interval=settings.watcher.terminal_poll_interval,
        clock=clock,
        job_state_metrics=settings.watcher.job_state_metrics,
    )
    systemd = SystemdNotifier()
    started: list[bool] = []

    def after_cycle() -> None:
        # READY once the first cycle is done: `systemctl start` returns when we really watch.
        if not started:
            started.append(True)
            systemd.ready()
        systemd.watchdog()

    stop = anyio.Event()
    running = [settings]  # the settings in force, replaced by each accepted reload
    async with (
        open_runtime(
            settings, notifier=notifier, health=health, clock=clock, migrate=migrate
        ) as runtime,
        anyio.from_thread.BlockingPortal() as portal,
        anyio.create_task_group() as tg,
    ):
        watcher = runtime.watcher
        address = settings.watcher.health_address
        if address is not None:
            page = await status_page(settings, runtime.store, health, portal, clock)
            port = await tg.start(serve_health, health.app(page), *address)
            page_url = f"http://{host_port(address[0], port)}/"
            log.info("health.listening", host=address[0], port=port, page=page_url)

        async def on_signals() -> None:
            with anyio.open_signal_receiver(
                signal.SIGTERM, signal.SIGINT, signal.SIGHUP
            ) as signals:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        systemd.reloading()
                        running[0] = _reload(runtime, health, running[0], reload)
                        systemd.ready()
                        continue
                    log.info("watcher.stopping", signal=signal.Signals(signum).name)
                    systemd.stopping()
                    stop.set()
                    return

        tg.start_soon(on_signals)
        beat = systemd.watchdog_interval
        await watcher.run_forever(
            stop,
            on_cycle=after_cycle,
            max_sleep=beat / 2 if beat is not None else None,
            leadership=runtime.leadership,
        )
        tg.cancel_scope.cancel()


async def status_page(
    settings: Settings,
    store: StateDb,
    health: Health,
    portal: anyio.from_thread.BlockingPortal,
    clock: Callable[[], datetime],
) -> StatusPage:
    """The status page on the daemon's store, behind `web_token` (required beyond loopback:
    without one there the page is off, and the health endpoints stay served)."""
    address = settings.watcher.health_address
    assert address is not None
    secret = settings.watcher.web_token
    access = Access(
        secret.get_secret_value() if secret else None,
        loopback=is_loopback(address[0]),
        hosts=frozenset(settings.watcher.web_allowed_hosts),
    )
    if access.token is None and not access.loopback:
        log.warning("web.locked", host=address[0], reason=LOCKED_REASON)

    def misdirected(host: str, refused: int) -> None:
        log.warning("web.misdirected", host=host, refused=refused, reason=MISDIRECTED_REASON)

    # Built in a thread: it reads its templates and assets from the package.
    return await anyio.to_thread.run_sync(
        functools.partial(
            StatusPage,
            StoreStatus(store, portal=portal, watcher=health.summary, clock=clock),
            access=access,
            poll_interval=settings.watcher.poll_interval,
            version=__version__,
            on_misdirected=misdirected,
        )
    )


def _reload(
    runtime: Runtime, health: Health, current: Settings, load: Callable[[], Settings]
) -> Settings:
    """Apply a re-read config and return it, or keep (and return) the running one when the
    new one is invalid.

    Everything that can change live does: intervals, the request budget and timeout, retry
    and notify timeouts, watches and channels. The rest is named, one log line per key.
    """
    try:
        new = load()
        new.require_watches()
        notifier = build_notifier(new)
        plan = build_plan(new, notifier)
    except WatcherError as exc:
        log.error("config.reload_rejected", error=str(exc))
        return current
    # The API client's account, key and URL, the state file and the health listener are
    # bound once; changing them needs a restart, and saying so beats ignoring the edit.
    for key, old_value, new_value in (
        ("fireworks.account_id", current.fireworks.account_id, new.fireworks.account_id),
        ("fireworks.base_url", current.fireworks.base_url, new.fireworks.base_url),
        ("fireworks.api_key", current.fireworks.api_key, new.fireworks.api_key),
        ("watcher.state_path", current.watcher.state_path, new.watcher.state_path),
        ("watcher.state_url", current.watcher.state_url, new.watcher.state_url),
        ("watcher.health_listen", current.watcher.health_listen, new.watcher.health_listen),
        (
            "watcher.web_allowed_hosts",
            current.watcher.web_allowed_hosts,
            new.watcher.web_allowed_hosts,
        ),
    ):
        if old_value != new_value:
            log.warning("config.reload_needs_restart", key=key)
    runtime.budget.set_rate(new.watcher.max_requests_per_minute)
    runtime.client.set_request_timeout(new.watcher.request_timeout)
    runtime.client.set_answer_limits(
        max_answer_bytes=new.watcher.max_answer_bytes,
        max_inflight_bytes=new.watcher.max_inflight_bytes,
    )
    runtime.watcher.reload(plan, notifier)
    health.set_poll_interval(
        new.watcher.poll_interval, terminal_poll_interval=new.watcher.terminal_poll_interval
    )
    return new
