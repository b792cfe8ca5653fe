"""`watch ID`: follow one resource to an outcome; the exit code tells which."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from watcher.core.errors import ConfigError, NotifyError
from watcher.core.kinds import NOT_FOUND

if TYPE_CHECKING:
    from watcher.cli.lookup import Elsewhere
    from watcher.config import Settings
    from watcher.core.model import JobRef, JobSnapshot, Transition
    from watcher.runtime.plan import CycleReport
    from watcher.runtime.poller import Poller

from watcher.cli.common import EXIT_TIMEOUT, _error, _note, _run_async, duration_flag

#: `watch` gives up on an API rejection (a 4xx other than 404/408/409/429) after this many polls.
WATCH_REJECTIONS = 3
#: Log events `watch` says itself, as its own lines: dropped unless `--log-level` asks for
#: logs (a rejected key ends as one error line; an unreachable API is one note per outage).
SAID_BY_WATCH: Final = frozenset(
    {"api.error", "api.auth_failed", "api.unreachable", "api.reachable"}
)


#: Config key paths `watch` builds, by the flag a user typed them with.
_WATCH_FLAGS: Final = (
    ("fireworks.account_id", "--account"),
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


def _watch_settings(
    args: argparse.Namespace, interval: float, env: Mapping[str, str], state: Path
) -> Settings:
    from watcher import config

    fireworks: dict[str, Any] = {}
    if args.account:
        fireworks["account_id"] = args.account
    data: dict[str, Any] = {
        "fireworks": fireworks,
        "watcher": {
            "poll_interval": interval,
            "terminal_poll_interval": interval,
            # One job: its poll interval is the budget (twice over, for retries).
            "max_requests_per_minute": max(60, math.ceil(120 / interval)),
            "state_path": str(state),
            "health_listen": "",
            "watch_account": False,  # one resource is followed, not the account beside it
        },
        "watch": [{"kind": args.kind, "jobs": [args.job]}],
        "channel": [{"name": "watch", "urls": args.notify}] if args.notify else [],
    }
    try:
        settings = config.parse(data, env, source="watch")
    except ConfigError as exc:
        raise ConfigError(_flag_error(str(exc))) from None
    if settings.fireworks.api_key is None:
        # `watch` reads no config file: no `api_key_file` to point at.
        raise ConfigError(f"missing API key: set {config.API_KEY_ENV} (watch reads no config file)")
    return settings


def _drop_said_by_watch(_: Any, __: str, event: MutableMapping[str, Any]) -> Any:
    import structlog

    if event.get("event") in SAID_BY_WATCH:
        raise structlog.DropEvent
    return event


@contextmanager
def _api_errors_left_to_watch(leave: bool) -> Iterator[None]:
    """With `leave`, drop the log events `watch` turns into its own lines (`SAID_BY_WATCH`)
    until it ends."""
    import structlog

    processors = list(structlog.get_config()["processors"])
    if leave:
        structlog.configure(processors=[_drop_said_by_watch, *processors])
    try:
        yield
    finally:
        structlog.configure(processors=processors)


def api_authority(base_url: str) -> str:
    """`host:port` of the API, as connection errors name it (no user, no path)."""
    import httpx

    from watcher.core.urls import host_port

    url = httpx.URL(base_url)
    return host_port(url.host, url.port or (443 if url.scheme == "https" else 80))


def _cmd_watch(args: argparse.Namespace) -> int:
    import tempfile

    from watcher import app
    from watcher.cli import live, lookup

    interval = duration_flag("--interval", args.interval)
    timeout = math.inf if args.timeout is None else duration_flag("--timeout", args.timeout)
    with (
        _api_errors_left_to_watch(args.log_level is None),
        tempfile.TemporaryDirectory(prefix="fireworks-watcher-") as tmp,
    ):
        settings = _watch_settings(args, interval, os.environ, Path(tmp) / "state.db")
        (ref,) = settings.refs()

        job = live.LiveJob(ref)
        # A live line on a terminal only: piped output stays one plain line per transition.
        on_tty = sys.stdout.isatty() and not args.no_live
        followed = Followed(api=api_authority(settings.fireworks.base_url))

        async def follow() -> int:
            import anyio

            try:
                notifier = app.build_notifier(settings)
            except NotifyError as exc:
                raise NotifyError(_flag_error(str(exc))) from None
            with live.display(job, transition_line, live=on_tty) as show:

                def shown(transition: Transition) -> None:
                    # A first sight that is a 404 is not a line: it ends as the typo's error.
                    if transition.old is not None or transition.new.state != NOT_FOUND:
                        show(transition)

                async with app.open_runtime(
                    settings, on_transition=shown, notifier=notifier
                ) as runtime:

                    async def elsewhere(missing: JobRef) -> Elsewhere:
                        return await lookup.ask_other_kinds(settings, missing, runtime.budget)

                    with anyio.move_on_after(timeout):
                        return await _follow(
                            runtime.watcher,
                            ref,
                            account=settings.fireworks.account_id,
                            polled=job.polled,
                            elsewhere=elsewhere,
                            followed=followed,
                        )
                    last = runtime.watcher.last(ref)
            _error(f"--timeout: {_timeout_message(ref, last, followed, timeout)}")
            return EXIT_TIMEOUT

        return _run_async(follow)


@dataclass(slots=True)
class Followed:
    """What `watch` learned of the resource and the API so far (for its last words).

    Attributes:
        api: the API's `host:port`.
        seen: the resource existed at some poll (a 404 after that is its end, not a typo).
        unreachable: the error of the last cycle in which the API answered nothing, until
            a cycle gets an answer ("" while it answers).
    """

    api: str
    seen: bool = False
    unreachable: str = ""

    def cycle(self, report: CycleReport) -> None:
        """Note a cycle's reachability; say when the API stops and starts answering."""
        if report.unavailable and not report.answered:
            if not self.unreachable:
                _note(f"API unreachable ({self.api}): {report.unreachable}; trying again")
            self.unreachable = report.unreachable
        elif report.answered and self.unreachable:
            _note(f"API reachable again ({self.api})")
            self.unreachable = ""


def _timeout_message(
    ref: JobRef, last: JobSnapshot | None, followed: Followed, timeout: float
) -> str:
    subject = f"{ref.kind}/{ref.job_id}"
    where = f"is still {last.state}" if last is not None else "not seen"
    text = f"{subject} {where} after {timeout:g} s"
    if followed.unreachable:
        return f"API unreachable ({followed.api}): {followed.unreachable}; {text}"
    return text


#: A `watch` line shows this much of the status message (the API's text, of any size).
SHOWN_MESSAGE = 500


def transition_line(transition: Transition) -> str:
    """One line of `watch` output; what the API said is escaped, so it cannot steer the terminal."""
    from watcher.core.text import for_terminal

    new = transition.new
    move = f"{transition.old_state} → {new.state}" if transition.old else new.state
    reason = f" ({new.status_code}: {new.status_message})" if new.status_message else ""
    progress = f" {new.progress}%" if new.progress else ""
    stamp = f"{transition.observed_at:%Y-%m-%dT%H:%M:%SZ}"
    line = f"{stamp} {new.ref.kind}/{new.ref.job_id}: {move}{progress}{reason}"
    return for_terminal(line, SHOWN_MESSAGE)


async def _follow(
    watcher: Poller,
    ref: JobRef,
    *,
    account: str,
    polled: Callable[[JobSnapshot | None], None] = lambda _: None,
    elsewhere: Callable[[JobRef], Awaitable[Elsewhere]] | None = None,
    followed: Followed | None = None,
) -> int:
    """Poll until the resource reaches an outcome; returns the exit code it means.

    A resource whose first answer is a 404 is a usage error (a typo of the id or the kind):
    `elsewhere` says which other kinds have the id.
    """
    import anyio

    from watcher.cli.lookup import Elsewhere, typo_message
    from watcher.core.kinds import watch_exit

    followed = followed if followed is not None else Followed(api="the API")
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
        followed.cycle(report)
        last = watcher.last(ref)
        polled(last)
        if last is not None and last.state != NOT_FOUND:
            followed.seen = True
        elif last is not None and not followed.seen:
            found = await elsewhere(ref) if elsewhere is not None else Elsewhere()
            raise ConfigError(typo_message(ref, account, found))
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
