"""Where the API key may be sent: https anywhere, http only to this machine."""

from __future__ import annotations

import ipaddress
from typing import Final
from urllib.parse import urlsplit

#: The problem with such a `base_url`, and the way out.
IN_CLEAR: Final = (
    "http:// to a host other than loopback sends the API key in clear;"
    " use https:// or set watcher.allow_insecure_base_url = true"
)


def in_clear_beyond_loopback(url: str) -> bool:
    """True for an `http://` URL whose host is not loopback (127.0.0.0/8, ::1, localhost): what
    is sent there, the API key first, crosses the network in clear. A host that cannot be told
    counts as beyond loopback."""
    if not url.lower().startswith("http://"):
        return False
    try:
        host = (urlsplit(url).hostname or "").removesuffix(".")
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        return True
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True
