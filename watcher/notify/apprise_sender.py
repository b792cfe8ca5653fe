"""Send notifications through apprise, one target URL at a time, and report each result.

The only module that imports apprise. The configured URLs are secrets: they stay in this
module; the rest of the program names a URL by its `url_key` and shows its privacy form.
A URL with message fields (`json://h/hook?:owner={owner}`, `core.url_fields`) is checked
with sample values when loaded and rendered again for each send from the row's values; the
rendered URL lives only for that send.

Timing: a send may take `notify_timeout` seconds, and each URL's socket timeouts follow it
(apprise's own defaults, 4 s for most plugins, would give up on a receiver that answers in
5 s: a message that arrived, logged as failed and sent again). Past `notify_timeout` the send
is maybe-delivered. Each send runs in a daemon thread of its own, so a send that is given up
(timed out, or still running when a stop's grace ends) never holds up the process's exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import re
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import anyio
import apprise
from apprise import AppriseResultStatus, NotifyFormat, OverflowMode
from apprise.decorators import notify

from watcher.core.delivery import SendOutcome, SendResult, Target
from watcher.core.errors import NotifyError
from watcher.core.markdown import console_layout
from watcher.core.text import (
    NTFY_SCHEMES,
    WEBHOOK_SCHEMES,
    escape_markdown,
    for_terminal,
    mask_url,
    one_line,
    scrub,
)
from watcher.core.url_fields import placeholders as url_placeholders
from watcher.core.url_fields import render, template_key, unknown
from watcher.notify import console

T = TypeVar("T")

CONSOLE_SCHEME = "console"
_console_registered = False


def register_console_scheme() -> None:
    """Teach apprise `console://`: print notifications to stdout (used by `demo` and for trials)."""
    global _console_registered  # apprise keeps its plugin registry global too
    if _console_registered:
        return

    @notify(on=CONSOLE_SCHEME, name="Console")  # type: ignore[untyped-decorator,no-untyped-call]
    def _print(body: str, title: str, notify_type: str, *args: Any, **kwargs: Any) -> bool:
        # The text holds what the API said: no escape sequence of it may reach the terminal.
        lines = "\n".join(for_terminal(line) for line in body.splitlines())
        shown = console_layout(for_terminal(title), lines, for_terminal(notify_type))
        console.write(shown, sys.stdout)
        return True

    _console_registered = True


def url_key(url: str) -> str:
    """A stable, non-reversible name for a URL: what the store keeps instead of the URL."""
    return hashlib.sha256(url.encode()).hexdigest()[:24]


def _silence_apprise_logger() -> None:
    # apprise logs a rejected URL whole, token included. Its per-send messages still reach
    # us through `NotifyResult.logs()` (captured at WARNING), so nothing of use is lost.
    logger = logging.getLogger("apprise")
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    logger.handlers[:] = [logging.NullHandler()]


_OVERFLOW = re.compile(r"[?&]overflow=", re.IGNORECASE)
#: apprise's URL arguments for a plugin's socket timeouts (connect, read).
_CONNECT_TIMEOUT = re.compile(r"[?&]cto=", re.IGNORECASE)
_READ_TIMEOUT = re.compile(r"[?&]rto=", re.IGNORECASE)
#: A socket read waits this much longer than the send: an answer later than `notify_timeout`
#: then reads as maybe-delivered (the deadline), never as a connection error (failed).
READ_MARGIN = 1.0


def _load(url: str, where: str) -> apprise.Apprise:
    _silence_apprise_logger()
    # No service limit of apprise's own (60 s by default): the send's deadline is ours
    # (`notify_timeout`), and without one apprise calls the plugin in the calling thread.
    app = apprise.Apprise(asset=apprise.AppriseAsset(service_timeout=0))
    # apprise answers False for a URL it cannot parse; it never raises for one.
    if not app.add(url):
        # Never echo the URL: it may hold a token.
        msg = f"{where}: apprise cannot use this URL (unknown scheme or malformed)"
        raise NotifyError(msg)
    if not _OVERFLOW.search(url):
        # apprise's default ("upstream") sends a message whole, and a service with a smaller
        # limit (Discord: 2,000) refuses it on every retry; cut it to the service's size instead.
        # `?overflow=split` (or `upstream`) in the URL still wins.
        for server in app:
            server.overflow_mode = OverflowMode.TRUNCATE
    return app


#: A path segment that reads as a name, not a token: no digit, at most 16 characters.
_NAME_LIKE = re.compile(r"[A-Za-z_.-]{1,16}")


def secret_parts(url: str, display: str, hidden: Iterable[str] = ()) -> frozenset[str]:
    """Pieces of `url` that its display form hides (tokens, passwords, header values, a
    webhook's path), raw and percent-decoded, and the `hidden` values `${VAR}` put there: to
    scrub from any text. A webhook's path segment or an ntfy topic that reads as a name
    (`hooks`, `notify`: letters, at most 16) is scrubbed as `/hooks`, as a request line or an
    error names it: bare, it would mask words of every log line (`notify.sent`)."""
    hidden = tuple(hidden)
    decoded = urllib.parse.unquote(url)
    pieces = [*re.split(r"[/:@?&=#,+]", url), *re.split(r"[/:@?&=#,+\s]", decoded)]
    split = urllib.parse.urlsplit(url)
    pieces += [value for _, value in urllib.parse.parse_qsl(split.query)]
    names = (
        {
            segment
            for segment in [*split.path.split("/"), *urllib.parse.unquote(split.path).split("/")]
            if _NAME_LIKE.fullmatch(segment)
        }
        if split.scheme.lower() in WEBHOOK_SCHEMES | NTFY_SCHEMES
        else set()
    )
    return frozenset(
        f"/{piece}" if piece in names and piece not in hidden else piece
        for piece in [*pieces, *hidden]
        if len(piece) >= 4 and piece not in display
    )


def _sample(name: str, at: int) -> str:
    """A value standing for field `name` when a templated URL is checked: an e-mail address
    for the owner (`mailtos://...?to={owner}` wants one), a plain word for the rest."""
    return f"fwsample{at}@example.com" if name in ("owner", "owner_mention") else f"fwsample{at}x"


def _display(app: apprise.Apprise) -> str:
    return "".join(server.url(privacy=True) for server in app)  # type: ignore[no-untyped-call]


def _follow_timeout(app: apprise.Apprise, url: str, timeout: float) -> None:
    """Set each plugin's socket timeouts from `timeout`, unless the URL sets its own
    (`?cto=`, `?rto=`). Done after the display form is taken: it would show them."""
    for server in app:
        if not _CONNECT_TIMEOUT.search(url):
            server.socket_connect_timeout = timeout
        if not _READ_TIMEOUT.search(url):
            server.socket_read_timeout = timeout + READ_MARGIN


class AppriseNotifier:
    """Delivers rendered messages to apprise URLs.

    Args:
        urls: every configured URL, each with a label for error messages (e.g. `channel[0].urls[1]`).
        timeout: seconds one send may take before it counts as maybe-delivered; each URL's
            socket timeouts follow it unless the URL sets `cto`/`rto`.
        max_parallel: sends running at once (apprise blocks, so each runs in a thread).
        hidden: values `${VAR}` put into the URLs: masked in every display form, even in a
            query value apprise would show.
    """

    def __init__(
        self,
        urls: Iterable[tuple[str, str]],
        *,
        timeout: float = 30.0,
        max_parallel: int = 8,
        hidden: Iterable[str] = (),
    ) -> None:
        hidden = tuple(hidden)
        self._apps: dict[str, apprise.Apprise] = {}
        self._targets: dict[str, Target] = {}
        self._secrets: dict[str, frozenset[str]] = {}
        #: Templated URLs (`{owner}`...) by key, with a label: rendered again for each send.
        self._templates: dict[str, tuple[str, str]] = {}
        self._hidden = hidden
        for where, url in urls:
            key = url_key(url)
            if key in self._apps:
                continue
            names = url_placeholders(url)
            if names:
                self._add_template(key, url, names, where)
                continue
            app = _load(url, where)
            self._apps[key] = app
            display = mask_url(_display(app), hidden)
            _follow_timeout(app, url, timeout)
            self._targets[key] = Target(url_key=key, url_display=display)
            self._secrets[key] = secret_parts(url, display, (h for h in hidden if h in url))
        self._timeout = timeout
        self._limiter = anyio.CapacityLimiter(max_parallel)

    def _add_template(self, key: str, url: str, names: tuple[str, ...], where: str) -> None:
        """A URL with fields, proved usable by loading it with sample values; its display
        form shows each field as `{name}`."""
        wrong = unknown(url)
        if wrong is not None:
            raise NotifyError(f"{where}: unknown field {{{wrong}}}")
        samples = {name: _sample(name, at) for at, name in enumerate(names)}
        sample_url = render(url, samples)
        app = _load(sample_url, where)
        shown = mask_url(_display(app), self._hidden)
        display = shown
        for name, value in samples.items():
            for form in (value, urllib.parse.quote(value, safe="")):
                display = display.replace(form, f"{{{name}}}")
        self._apps[key] = app
        self._templates[key] = (url, where)
        self._targets[key] = Target(url_key=key, url_display=display, fields=names)
        in_url = (h for h in self._hidden if h in url)
        self._secrets[key] = frozenset(
            piece
            for piece in secret_parts(sample_url, shown, in_url)
            if not any(piece.strip("/") in value for value in samples.values())
        )

    def _rendered(
        self, key: str, fields: Mapping[str, str]
    ) -> tuple[apprise.Apprise, frozenset[str]]:
        """The app of a templated target for one message's values, and the secrets to scrub
        from its errors (the template's, and the rendered URL's)."""
        url, where = self._templates[key]
        rendered = render(url, fields)
        app = _load(rendered, where)
        display = mask_url(_display(app), self._hidden)
        _follow_timeout(app, rendered, self._timeout)
        in_url = (h for h in self._hidden if h in url)
        return app, self._secrets[key] | secret_parts(rendered, display, in_url)

    def target(self, url: str) -> Target:
        """The target for a configured URL."""
        return self._targets[url_key(url)]

    @property
    def targets(self) -> Mapping[str, Target]:
        """Every target by its url_key."""
        return self._targets

    async def send(
        self,
        key: str,
        *,
        title: str,
        body: str,
        notify_type: str,
        fields: Mapping[str, str] | None = None,
    ) -> SendResult:
        """Send one message to the target `key`; never raises for a delivery failure. A
        templated target's key is `<template key>#<values>`: its URL is rendered from the
        template with `fields` (the message's `url_fields.url_values`)."""
        base = template_key(key)
        app = self._apps.get(base)
        if app is None:
            return SendResult(SendOutcome.UNKNOWN_TARGET, "channel URL is no longer configured")
        values = fields or {}
        template = self._templates.get(base)
        if template is not None:
            empty = [name for name in url_placeholders(template[0]) if not values.get(name)]
            if empty:
                why = ", ".join(f"{{{name}}}" for name in empty)
                return SendResult(SendOutcome.UNKNOWN_TARGET, f"{why} empty for this message")
        # A templated target's sample app has the plugin its rendered URL has.
        if _title_read_as_markdown(app):
            title = escape_markdown(title)

        def call() -> SendResult:
            sender, secrets = app, self._secrets[base]
            if template is not None:
                try:
                    sender, secrets = self._rendered(base, values)
                except NotifyError as exc:
                    return SendResult(SendOutcome.UNKNOWN_TARGET, scrub(str(exc), secrets))
            result = sender.notify(
                body, title=title, notify_type=notify_type, body_format=NotifyFormat.MARKDOWN
            )
            return _outcome(result, secrets)

        # Cancelled (a stop whose grace ended), the wait ends at once and the send is left
        # to finish in its thread: the row stays pending, to be sent again by the next start.
        async with self._limiter:
            with anyio.move_on_after(self._timeout):
                return await _in_own_thread(call)
        return SendResult(SendOutcome.MAYBE_DELIVERED, "timed out; it may have arrived")

    def secrets(self) -> frozenset[str]:
        """Every secret piece of every configured URL, for log redaction."""
        return frozenset().union(*self._secrets.values())


async def _in_own_thread(call: Callable[[], T]) -> T:
    """Run `call` in a daemon thread of its own and wait for it; a cancelled wait leaves the
    thread running. anyio's worker threads are not daemons: the interpreter would wait for an
    abandoned send at exit, as long as its socket timeouts allow."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def work() -> None:
        if not future.set_running_or_notify_cancel():
            return  # given up before it began: nothing was sent
        try:
            future.set_result(call())
        except Exception as exc:  # noqa: BLE001 (handed to the waiter, if one is left)
            future.set_exception(exc)

    threading.Thread(target=work, name="apprise-send", daemon=True).start()
    # asyncio's bridge, not anyio's: it drops the result if the loop is gone by then.
    return await asyncio.wrap_future(future)


def _title_read_as_markdown(app: apprise.Apprise) -> bool:
    """Whether a service puts the title into its Markdown (or HTML) body (Telegram...): the
    title is plain text, so there it is escaped like the API's text in a body."""
    return any(
        server.title_maxlen <= 0
        and server.resolve_format(NotifyFormat.MARKDOWN) != NotifyFormat.TEXT
        for server in app
    )


def _outcome(result: apprise.AppriseResult, secrets: frozenset[str]) -> SendResult:
    if result.status == AppriseResultStatus.SUCCESS:
        return SendResult(SendOutcome.DELIVERED)
    if result.status == AppriseResultStatus.TIMEOUT:
        return SendResult(SendOutcome.MAYBE_DELIVERED, "timed out; it may have arrived")
    return SendResult(SendOutcome.FAILED, scrub(_last_problem(result), secrets))


def _last_problem(result: apprise.AppriseResult) -> str:
    """apprise's last warning for this send, e.g. 'Failed to send JSON notification: 503'."""
    problem = f"apprise reported {result.status.name}"
    for per_url in result:
        for entry in per_url.logs():
            if entry.level in ("WARNING", "ERROR"):
                problem = entry.message
    return one_line(problem, 200)
