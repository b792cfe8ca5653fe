"""`watch ID`: follow one resource to an outcome; the exit code tells which."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from watcher.core.errors import ConfigError, NotifyError

if TYPE_CHECKING:
    from watcher.config import Settings
    from watcher.core.model import JobRef, JobSnapshot, Transition
    from watcher.runtime.poller import Watcher

from watcher.cli.common import EXIT_TIMEOUT, EXIT_USAGE, _error, _run_async

#: `watch` gives up on an API rejection (a 4xx other than 404/408/409/429) after this many polls.
WATCH_REJECTIONS = 3


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
    from watcher.cli import live

    if not 0 < args.interval < math.inf:
        _error("--interval must be > 0")
        return EXIT_USAGE
    if args.timeout is not None and not 0 < args.timeout < math.inf:
        _error("--timeout must be > 0")
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="fireworks-watcher-") as tmp:
        settings = _watch_settings(args, os.environ, Path(tmp) / "state.db")
        (ref,) = settings.refs()

        job = live.LiveJob(ref)
        # A live line on a terminal only: piped output stays one plain line per transition.
        on_tty = sys.stdout.isatty() and not args.no_live

        async def follow() -> int:
            import anyio

            try:
                notifier = app.build_notifier(settings)
            except NotifyError as exc:
                raise NotifyError(_flag_error(str(exc))) from None
            with live.display(job, transition_line, live=on_tty) as show:
                async with app.open_watcher(settings, on_transition=show, notifier=notifier) as w:
                    with anyio.move_on_after(
                        args.timeout if args.timeout is not None else math.inf
                    ):
                        return await _follow(
                            w, ref, account=settings.fireworks.account_id, polled=job.polled
                        )
                    last = w.last(ref)
            state = last.state if last is not None else "not seen yet"
            _error(f"--timeout: {ref.kind}/{ref.job_id} is still {state} after {args.timeout:g} s")
            return EXIT_TIMEOUT

        return _run_async(follow)


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
    watcher: Watcher,
    ref: JobRef,
    *,
    account: str,
    polled: Callable[[JobSnapshot | None], None] = lambda _: None,
) -> int:
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
        polled(last)
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
