"""What every command shares: exit codes, the one-line error, loading the config, and running
async code with a lone WatcherError unwrapped from its task group."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from watcher.core.errors import ConfigError, WatcherError

if TYPE_CHECKING:
    from watcher.backends import StateDb
    from watcher.config import Settings, WatcherSettings
    from watcher.stores.tables import OnUnreadable

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3

#: Forces the log format (`json` or `console`); see `watcher.logs.configure`.
LOG_FORMAT_ENV = "FIREWORKS_WATCHER_LOG_FORMAT"


def _error(message: str) -> None:
    _say(f"error: {message}")


def _note(message: str) -> None:
    """One line on stderr about the command's own progress (`API unreachable ...`)."""
    _say(message)


def _say(message: str) -> None:
    from watcher.core.text import for_terminal
    from watcher.logs import redact

    # An error may quote the API (a rejection's message): no control of it reaches the terminal.
    sys.stderr.write(f"fireworks-watcher: {for_terminal(redact(message), 2000)}\n")


def lower(text: str) -> str:
    """An argument's value as its choices are spelled (`--kind SFT`, `--log-level DEBUG`)."""
    return text.strip().lower()


def duration_flag(flag: str, text: str) -> float:
    """A duration flag's value (`--interval 90s`, `--timeout 2h`, `--timeout 600`) in seconds.

    Raises:
        ConfigError: not a duration, or not more than 0; the message names `flag`.
    """
    from watcher.core.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None
    if seconds <= 0:
        raise ConfigError(f"{flag}: must be more than 0")
    return seconds


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


def has_state(settings: WatcherSettings) -> bool:
    """Whether there is a state database to read (a PostgreSQL URL, or an existing file)."""
    return settings.state_url is not None or settings.state_path.exists()


def state_where(settings: WatcherSettings) -> str:
    """The state database as a person reads it: its file, or its URL without the password."""
    from watcher.stores.pg.url import display_url

    url = settings.state_url
    return display_url(url.get_secret_value()) if url else str(settings.state_path)


def with_state(
    settings: WatcherSettings,
    use: Callable[[StateDb], Awaitable[T]],
    *,
    on_unreadable: OnUnreadable | None = None,
) -> T:
    """Open the state database the settings name, run `use` on it, close it."""
    from watcher import backends

    async def run() -> T:
        async with backends.open_state(settings, on_unreadable=on_unreadable) as store:
            return await use(store)

    return _run_async(run)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            found += _leaves(error)
        else:
            found.append(error)
    return found


# -- commands --------------------------------------------------------------------------------
