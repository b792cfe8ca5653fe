"""Host names as a `Host` header and `watcher.web_allowed_hosts` give them, compared alike."""

from __future__ import annotations

import ipaddress
import re

_NAME = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*"
)
_PORT = re.compile(r"[0-9]{1,5}")


def host_name(text: str) -> str | None:
    """A host name or address as compared: lower-case, without a final dot, an IPv6 address
    without brackets and in its short form; None when it is neither a name nor an address."""
    text = text.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    text = text.removesuffix(".")
    return text if len(text) <= 253 and _NAME.fullmatch(text) else None


def host_of(header: str) -> str | None:
    """The host of a `Host` header (`name`, `name:port`, `[v6]:port`), as `host_name` gives it."""
    head, colon, port = header.strip().rpartition(":")
    if colon and not head.endswith(":") and _PORT.fullmatch(port):
        header = head  # not a bare IPv6 address: its last part is a port
    if ":" in header and not header.startswith("["):
        return None  # an IPv6 address in a Host header has brackets
    return host_name(header)


def is_loopback_name(host: str) -> bool:
    """Whether `host` (from `host_name`) can only mean this machine: `localhost` and the names
    under it (RFC 6761), and loopback addresses."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
