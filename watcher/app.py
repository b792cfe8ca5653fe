"""Composition: build the concrete adapters from settings and wire them into a Watcher.

Used by the command line and the demo; the only module (with them) that knows every adapter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx

from watcher import logs
from watcher.config import Settings
from watcher.delivery import Channel, RetryPolicy
from watcher.fireworks import FireworksClient
from watcher.loop import Watcher, WatchPlan
from watcher.model import Transition
from watcher.notify import AppriseNotifier, register_console_scheme
from watcher.store import StateStore
from watcher.transitions import ChannelRules


def build_notifier(settings: Settings) -> AppriseNotifier:
    """An apprise notifier for every channel URL; NotifyError names a URL apprise cannot use."""
    register_console_scheme()
    urls = [
        (f"channel[{i}].urls[{j}]", url.get_secret_value())
        for i, channel in enumerate(settings.channels)
        for j, url in enumerate(channel.urls)
    ]
    notifier = AppriseNotifier(urls)
    logs.add_secrets(notifier.secrets())
    return notifier


def build_plan(settings: Settings, notifier: AppriseNotifier) -> WatchPlan:
    """What the loop watches and whom it tells, from the settings."""
    channels = tuple(
        Channel(
            name=c.name,
            targets=tuple(notifier.target(u.get_secret_value()) for u in c.urls),
            rules=ChannelRules(
                to_states=c.to_states, job_globs=c.jobs, notify_initial=c.notify_initial
            ),
            title=c.title,
            body=c.body,
        )
        for c in settings.channels
    )
    w = settings.watcher
    return WatchPlan(
        refs=settings.refs(),
        channels=channels,
        discover=tuple(dict.fromkeys(watch.kind for watch in settings.watches if watch.discover)),
        poll_interval=w.poll_interval,
        terminal_poll_interval=w.terminal_poll_interval or min(10 * w.poll_interval, 600.0),
        retry=RetryPolicy(max_delay=w.retry_max_delay, give_up_after=w.retry_for),
    )


def api_key(settings: Settings) -> str:
    """The API key, registered for redaction; ConfigError names FIREWORKS_API_KEY when missing."""
    key = settings.require_api_key()
    logs.add_secrets([key])
    return key


@asynccontextmanager
async def fireworks_client(settings: Settings) -> AsyncIterator[FireworksClient]:
    """A Fireworks API client with its HTTP connection pool, closed on exit."""
    key = api_key(settings)
    timeout = httpx.Timeout(settings.watcher.request_timeout)
    async with httpx.AsyncClient(timeout=timeout) as http:
        yield FireworksClient(
            http,
            account_id=settings.fireworks.account_id,
            api_key=key,
            base_url=settings.fireworks.base_url,
        )


@asynccontextmanager
async def open_watcher(
    settings: Settings,
    *,
    on_transition: Callable[[Transition], None] | None = None,
    notifier: AppriseNotifier | None = None,
) -> AsyncIterator[Watcher]:
    """A Watcher on the real API client, state store and notifier; everything closed on exit."""
    notifier = notifier if notifier is not None else build_notifier(settings)
    plan = build_plan(settings, notifier)
    async with fireworks_client(settings) as client:
        with StateStore.open(settings.watcher.state_path) as store:
            yield Watcher(
                plan, source=client, store=store, sender=notifier, on_transition=on_transition
            )
