"""Who may see the status page and its API: anyone on loopback without a token; with
`watcher.web_token`, only who presents it (a bearer header, or the cookie that logging in
sets); beyond loopback without a token, nobody (the health endpoints stay open either way).

On loopback without a token the `Host` header is checked too, or a page of any site could
read the API through DNS rebinding (its name pointed at 127.0.0.1): only loopback names and
addresses, and `watcher.web_allowed_hosts`, are answered. With `web_allowed_hosts` set the
check holds for every listener.

The cookie holds an expiry and a digest of the token and that expiry, never the token;
every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from watcher.core.hosts import host_of, is_loopback_name

COOKIE: Final = "fireworks_watcher"
#: How long a login lasts: the cookie's `Max-Age`, and the life of the value it holds.
SESSION_SECONDS: Final = 12 * 3600
LOCKED_REASON: Final = (
    "the status page needs watcher.web_token (or FIREWORKS_WATCHER_WEB_TOKEN) when "
    "health_listen is beyond loopback"
)
MISDIRECTED_REASON: Final = (
    "this server answers to loopback names (localhost, 127.0.0.1, [::1]) and the names in "
    "watcher.web_allowed_hosts only"
)


class Verdict(StrEnum):
    """What one request may do."""

    ALLOWED = "allowed"
    LOCKED = "locked"  # beyond loopback without a token: the page is off
    UNAUTHORIZED = "unauthorized"
    MISDIRECTED = "misdirected"  # a Host this server does not answer to


def is_loopback(host: str) -> bool:
    """Whether `host` (an address to bind) only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


@dataclass(frozen=True, slots=True)
class Access:
    """The rule for one server: its token (None for none), whether it is loopback only, the
    host names it answers to beyond loopback ones, and the wall clock cookies expire by."""

    token: str | None
    loopback: bool
    hosts: frozenset[str] = frozenset()
    clock: Callable[[], float] = field(default=time.time, compare=False)

    @property
    def checks_host(self) -> bool:
        """Whether the `Host` header must be a loopback name or one of `hosts`."""
        return bool(self.hosts) or (self.loopback and self.token is None)

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request with this `Host` header (None: none) is answered."""
        if not self.checks_host:
            return True
        host = host_of(header) if header is not None else None
        return host is not None and (is_loopback_name(host) or host in self.hosts)

    def accepts(self, given: str) -> bool:
        """Whether `given` is the token (always False without one)."""
        return self.token is not None and _same(given, self.token)

    def cookie_value(self) -> str:
        """What the session cookie holds: when it expires, and a digest of that and the token
        (so the cookie is not the token, and stops working after `SESSION_SECONDS`)."""
        expires = int(self.clock()) + SESSION_SECONDS
        return f"{expires}.{self._signature(expires)}"

    def _signature(self, expires: int) -> str:
        assert self.token is not None
        message = f"fireworks-watcher page {expires}".encode()
        return hmac.new(self.token.encode(), message, hashlib.sha256).hexdigest()

    def _cookie_valid(self, value: str) -> bool:
        stamp, _, signature = value.partition(".")
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            return False
        expires, now = int(stamp), self.clock()
        # Never longer than one session from now: a clock set back does not stretch it.
        fresh = now < expires <= now + SESSION_SECONDS + 60
        return _same(signature, self._signature(expires)) and fresh

    def verdict(self, headers: Mapping[str, str], query_token: str | None) -> Verdict:
        """Judge a request by its headers (lower-case names) and its `?token=`."""
        if not self.host_allowed(headers.get("host")):
            return Verdict.MISDIRECTED
        if self.token is None:
            return Verdict.ALLOWED if self.loopback else Verdict.LOCKED
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.accepts(given.strip()):
            return Verdict.ALLOWED
        if query_token is not None and self.accepts(query_token):
            return Verdict.ALLOWED
        cookie = _cookies(headers.get("cookie", "")).get(COOKIE)
        if cookie is not None and self._cookie_valid(cookie):
            return Verdict.ALLOWED
        return Verdict.UNAUTHORIZED


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def _cookies(header: str) -> dict[str, str]:
    """`a=1; b=2` as a mapping (the first of a repeated name wins); bounded by the header."""
    found: dict[str, str] = {}
    for part in header.split(";")[:64]:
        name, _, value = part.strip().partition("=")
        found.setdefault(name, value)
    return found
