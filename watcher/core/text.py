"""Text rules every message follows: one line, bounded length, no secret. Pure functions."""

from __future__ import annotations

from collections.abc import Iterable

#: What a masked secret reads as.
MASK = "****"


def one_line(text: str, limit: int | None = None) -> str:
    """Collapse all whitespace (newlines too) to single spaces; cut to `limit` characters,
    ending in "…", when given."""
    flat = " ".join(text.split())
    if limit is None or len(flat) <= limit:
        return flat
    return flat[: limit - 1] + "…"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret masked, the longest first (one may contain another)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text
