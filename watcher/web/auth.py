"""Who may see the status page and its API: anyone on loopback without a token; with
`watcher.web_token`, only who presents it (a bearer header, or the cookie that `?token=`
sets); beyond loopback without a token, nobody (the health endpoints stay open either way).

The cookie holds a digest of the token, never the token; every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

COOKIE: Final = "fireworks_watcher"
LOCKED_REASON: Final = (
    "the status page needs watcher.web_token (or FIREWORKS_WATCHER_WEB_TOKEN) when "
    "health_listen is beyond loopback"
)


class Verdict(StrEnum):
    """What one request may do."""

    ALLOWED = "allowed"
    LOCKED = "locked"  # beyond loopback without a token: the page is off
    UNAUTHORIZED = "unauthorized"


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
    """The rule for one server: its token (None for none) and whether it is loopback only."""

    token: str | None
    loopback: bool

    def cookie_value(self) -> str:
        """What the session cookie holds: a digest of the token, so the cookie is not it."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"fireworks-watcher page", hashlib.sha256).hexdigest()

    def verdict(self, headers: Mapping[str, str], query_token: str | None) -> Verdict:
        """Judge a request by its headers (lower-case names) and its `?token=`."""
        if self.token is None:
            return Verdict.ALLOWED if self.loopback else Verdict.LOCKED
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(given.strip(), self.token):
            return Verdict.ALLOWED
        if query_token is not None and _same(query_token, self.token):
            return Verdict.ALLOWED
        cookie = _cookies(headers.get("cookie", "")).get(COOKIE)
        if cookie is not None and _same(cookie, self.cookie_value()):
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
