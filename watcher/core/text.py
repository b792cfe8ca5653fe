"""Text rules every message follows: one line, bounded length, no secret, nothing that steers a
terminal or pings a whole chat channel. Pure functions."""

from __future__ import annotations

import re
from collections.abc import Iterable

#: What a masked secret reads as.
MASK = "****"


def one_line(text: str, limit: int | None = None) -> str:
    """Collapse all whitespace (newlines too) to single spaces; cut to `limit` characters,
    ending in "…", when given."""
    flat = " ".join(text.split())
    return cap(flat, limit) if limit is not None else flat


def cap(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending in "…" when it was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret masked, the longest first (one may contain another)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text


# --- terminals ------------------------------------------------------------------------------

# Whitespace that moves the cursor (CR rewrites the line, FF/VT scroll): one space instead.
_SPACING = re.compile(r"[\t\n\r\x0b\x0c\x1c-\x1f\x85\u2028\u2029]+")
# C0 (ESC starts every CSI/OSC sequence, BEL ends an OSC), DEL, C1 (0x9b is a one-byte CSI),
# and the bidi marks, embeddings, overrides and isolates that reorder what follows them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str, limit: int | None = None) -> str:
    """One line of outside text safe to print: cursor-moving whitespace becomes a space, and
    every other control character is shown as an escape (`\\x1b`, `\\u202e`) instead of acting.
    Cut to `limit` characters when given."""
    safe = _CONTROL.sub(_escape, _SPACING.sub(" ", text))
    return cap(safe, limit) if limit is not None else safe


# --- chat mentions ------------------------------------------------------------------------------

#: Put inside a mention so that no chat service parses it: invisible, and the text stays as it
#: was when read or copied (but for this one character).
ZERO_WIDTH_SPACE = "\u200b"
# Slack `<!channel>`, `<!here>`, `<!everyone>`, `<!subteam^ID>`, `<@U123>`; Discord `<@123>`,
# `<@!123>`, `<@&role>`; Teams `<at>`.
_TAG_MENTION = re.compile(r"<(?=[!@]|at>)", re.IGNORECASE)
# Broadcasts written as plain words: Discord, Slack, Mattermost, Rocket.Chat, Matrix.
_WORD_MENTION = re.compile(r"@(?=(?:everyone|here|channel|all|room)\b)", re.IGNORECASE)


def defuse_mentions(text: str) -> str:
    """`text` with every group or user mention broken by a zero-width space (`<!channel>` ->
    `<\\u200b!channel>`, `@here` -> `@\\u200bhere`): it reads the same and pings no one.
    E-mail addresses and `@name` of one person are left alone."""
    text = _TAG_MENTION.sub("<" + ZERO_WIDTH_SPACE, text)
    return _WORD_MENTION.sub("@" + ZERO_WIDTH_SPACE, text)


# --- URLs ---------------------------------------------------------------------------------------

_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^/?#]*)@")
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
#: apprise's query prefixes that carry values into the request: `+` an HTTP header, `-` a
#: query argument of the posted URL, `:` a payload field.
_CARRIERS = ("+", "-", ":")


def without_userinfo(url: str) -> str:
    """`https://user:pw@proxy/x` -> `https://proxy/x`: a URL as it may be shown."""
    return _USERINFO.sub(r"\g<scheme>", url, count=1)


def userinfo(url: str) -> tuple[str, ...]:
    """The user and password of `url` (`https://u:pw@proxy` -> `("u", "pw")`), as written and
    percent-decoded: secrets to keep out of every text."""
    match = _USERINFO.match(url)
    if match is None:
        return ()
    parts = match["info"].split(":", 1)
    return tuple(dict.fromkeys([*parts, *(_unquote(part) for part in parts)]))


def _unquote(text: str) -> str:
    raw = _PERCENT.sub(lambda m: bytes.fromhex(m[1].decode()), text.encode())
    return raw.decode("utf-8", "replace")


def _holds(value: str, secrets: list[str]) -> bool:
    # A query value may spell a space as `+` or `%20`, and `+` itself as `+` or `%2B`.
    forms = {value, _unquote(value), _unquote(value.replace("+", " "))}
    return any(secret in form for secret in secrets for form in forms)


def mask_url(url: str, secrets: Iterable[str] = ()) -> str:
    """A URL's display form with the values of its header (`+`), argument (`-`) and payload
    (`:`) parameters masked, and any query value holding one of `secrets` (what `${VAR}`
    put there) masked too:
    `json://h/x?%2BAuthorization=Bearer%20t` -> `json://h/x?+Authorization=****`.
    """
    base, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_, fragment = rest.partition("#")
    hidden = [s for s in secrets if len(s) >= 4]  # shorter ones would mask half the URL
    parts = []
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        name = _unquote(key)
        if eq and (name.startswith(_CARRIERS) or _holds(value, hidden)):
            value = MASK
        # `%2B`/`%3A` read as what they are: the key names a header or a payload field.
        shown = name if name.startswith(_CARRIERS) and name.isprintable() else key
        parts.append(f"{shown}{eq}{value}")
    return f"{base}?{'&'.join(parts)}{hash_}{fragment}"
