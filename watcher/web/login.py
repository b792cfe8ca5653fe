"""Logging in to the status page: the posted form, the session cookie it earns, where the
browser goes back to, and the reports of requests refused for their `Host` header."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode

import anyio

from watcher.core.text import for_terminal
from watcher.web.auth import COOKIE, SESSION_SECONDS, Access

#: The largest login form read, and how long its sender may take.
MAX_FORM_BYTES: Final = 4096
FORM_SECONDS: Final = 5.0
#: At most one report of refused `Host` headers this often (a flood is one line a minute).
MISDIRECTED_REPORT_SECONDS: Final = 60.0

Receive = Callable[[], Any]
#: Told of refused `Host` headers: the last one (cut, printable) and how many were refused
#: since the last report.
MisdirectedReport = Callable[[str, int], None]


class FormError(ValueError):
    """The login form could not be read: a 400 saying why."""


def session_cookie(access: Access, *, secure: bool) -> tuple[bytes, bytes]:
    """The `set-cookie` header of a login: expiring with the value it holds, never shown to
    scripts or sent from other sites, and kept to HTTPS when the page is served over it."""
    cookie = (
        f"{COOKIE}={access.cookie_value()}; Path=/; Max-Age={SESSION_SECONDS}; "
        f"HttpOnly; SameSite=Strict{'; Secure' if secure else ''}"
    )
    return b"set-cookie", cookie.encode()


def here(raw_path: bytes, query: Mapping[str, str]) -> str:
    """The address asked for without `token`: a path on this server whatever was asked
    (`//host` would leave it), in printable ASCII."""
    path = "/" + quote(raw_path.decode("latin-1").lstrip("/"), safe="/%:@!$&'()*+,;=-._~")
    rest = urlencode({k: v for k, v in query.items() if k != "token"})
    return path + (f"?{rest}" if rest else "")


def is_secure(scope: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    """Whether the browser reached the page over HTTPS: directly, or through a proxy that says
    so (`X-Forwarded-Proto`). The header is believed as it comes: a client that lies only gets
    a cookie its own browser keeps to HTTPS, and a proxy that ends TLS sets it."""
    forwarded = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return scope.get("scheme") == "https" or forwarded == "https"


async def read_form(receive: Receive) -> dict[str, str]:
    """A posted `application/x-www-form-urlencoded` body (at most `MAX_FORM_BYTES`, within
    `FORM_SECONDS`) as a mapping; the first of a repeated name wins.

    Raises:
        FormError: too large, too slow, or the client left.
    """
    body = b""
    with anyio.move_on_after(FORM_SECONDS) as waited:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise FormError("the form was not sent")
            body += message.get("body", b"")
            if len(body) > MAX_FORM_BYTES:
                raise FormError(f"the form is larger than {MAX_FORM_BYTES} bytes")
            if not message.get("more_body", False):
                break
    if waited.cancelled_caught:
        raise FormError(f"the form took longer than {FORM_SECONDS:g} s to arrive")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


class MisdirectedReports:
    """Passes refused `Host` headers on to `report`, at most once per `every` seconds (the
    first at once), with how many were refused since the last report."""

    def __init__(
        self,
        report: MisdirectedReport | None,
        monotonic: Callable[[], float],
        every: float = MISDIRECTED_REPORT_SECONDS,
    ) -> None:
        self._report = report
        self._monotonic = monotonic
        self._every = every
        self._refused = 0
        self._reported_at: float | None = None

    def __call__(self, host: str) -> None:
        self._refused += 1
        now = self._monotonic()
        if self._reported_at is not None and now - self._reported_at < self._every:
            return
        if self._report is not None:
            self._report(for_terminal(host, 100), self._refused)
        self._reported_at, self._refused = now, 0
