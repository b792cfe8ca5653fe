"""PostgreSQL URLs: how a person may see one (never its password)."""

from __future__ import annotations

from urllib.parse import urlsplit


def password(url: str) -> str | None:
    """The password in `url`, to register for redaction, or None."""
    try:
        return urlsplit(url).password or None
    except ValueError:
        return None


def display_url(url: str) -> str:
    """`postgresql://user@host:port/db`: no password, no query (it may hold one too)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
    except ValueError:
        return "postgresql://(unreadable URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"
