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


# --- Markdown and links ---------------------------------------------------------------------------

# What Markdown (CommonMark, Python-Markdown for e-mail, Slack, Discord) reads as markup: raw
# HTML and autolinks (`<`), links and images (`[`), code, emphasis, strike and spoilers, tables,
# a backslash that would cancel ours; `_` only where it can open or close emphasis (not inside
# `dpo_run_3`); and at a line's start a heading, quote, list or setext underline.
_MARKDOWN_MARKUP = re.compile(
    r"[\\`*<>\[\]~|]|(?<![^\W_])_|_(?![^\W_])|^[ \t]*[#+=-]", re.MULTILINE
)


def _backslashed(match: re.Match[str]) -> str:
    text = match[0]
    return text[:-1] + "\\" + text[-1]


def escape_markdown(text: str, limit: int | None = None) -> str:
    """`text` as Markdown that renders as exactly that text: every character Markdown would
    read as markup gets a backslash (`<script>` -> `\\<script\\>`, `[a](b)` -> `\\[a\\](b)`).
    apprise turns the escapes into `&lt;` for e-mail's HTML and Slack, and Discord reads them;
    so no text from the API becomes a tag, a link or an image anywhere.

    Cut to `limit` characters, ending in "…", when given; never between a backslash and the
    character it escapes (a lone one would escape whatever follows the text)."""
    if limit is not None:
        text = text[: limit + 1]  # the rest would be cut anyway
    escaped = _MARKDOWN_MARKUP.sub(_backslashed, text)
    if limit is None or len(escaped) <= limit:
        return escaped
    cut = escaped[: max(limit - 1, 0)]
    trailing = len(cut) - len(cut.rstrip("\\"))
    return (cut[:-1] if trailing % 2 else cut) + "…"


# `http(s)://`, an optional user, a host (a name, or an IP literal in brackets), a port, the rest.
_WEB_URL = re.compile(
    r"(?P<scheme>(?i:https?)://)(?P<user>[^/?#@\s]*@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(?P<port>:[0-9]*)?(?P<rest>[/?#]\S*)?"
)
# Characters a URL may hold that Markdown or HTML would read (or that end a link's target).
_URL_MARKUP = re.compile(r"[^A-Za-z0-9\-._~:/?#@!$&+,;=%]")


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match[0].encode())


def web_link(url: str) -> str | None:
    """`url` when it is an absolute `http(s)` URL with a host, else None: no `javascript:`,
    `data:` or relative link from the API is ever sent or drawn. What Markdown or HTML would
    read in it (`<>"'()[]*` `` ` `` and the like, non-ASCII) is percent-encoded, so it stays one
    link with one target wherever it lands."""
    url = url.strip()
    match = _WEB_URL.fullmatch(url)
    if match is None or not url.isprintable():
        return None
    user, rest = (_URL_MARKUP.sub(_percent, match[name] or "") for name in ("user", "rest"))
    return f"{match['scheme']}{user}{match['host']}{match['port'] or ''}{rest}"


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


#: Schemes whose privacy form shows a credential in clear. apprise masks what each plugin
#: declares private; these carry one where it does not look: a plain webhook's path is often
#: its only credential (`json://h/hooks/TOKEN`), as is its user given without a password, and
#: an ntfy topic is what lets anyone read or post (in cloud mode it stands where a host would).
WEBHOOK_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms"})
NTFY_SCHEMES = frozenset({"ntfy", "ntfys"})
_URL_PARTS = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:(?P<info>[^/?#@]*)@)?"
    r"(?P<host>\[[^\]/?#]*\]|[^/?#:]*)(?P<port>:[^/?#]*)?(?P<path>[^?#]*)"
    r"(?:\?(?P<query>[^#]*))?(?:#(?P<fragment>.*))?$",
    re.DOTALL,
)
# What separates the parts of a URL: a `${VAR}` value holding several parts is masked part by part.
_URL_DELIMITERS = re.compile(r"[/:@?&=#]")


def _secret_pieces(secrets: Iterable[str]) -> list[str]:
    pieces: dict[str, None] = {}
    for secret in secrets:
        # A whole URL's scheme is no secret: `json` would mask every `format=json`.
        rest = secret.partition("://")[2] if "://" in secret else secret
        for piece in [secret, *_URL_DELIMITERS.split(rest)]:
            if len(piece) >= 4:  # shorter ones would mask half the URL
                pieces[piece] = None
    return list(pieces)


def _masked_query(query: str, hidden: list[str]) -> str:
    parts = []
    for item in query.split("&"):
        key, eq, value = item.partition("=")
        name = _unquote(key)
        if eq and (name.startswith(_CARRIERS) or _holds(value, hidden)):
            value = MASK
        # `%2B`/`%3A` read as what they are: the key names a header or a payload field.
        shown = name if name.startswith(_CARRIERS) and name.isprintable() else key
        if _holds(key, hidden):
            shown = MASK
        parts.append(f"{shown}{eq}{value}")
    return "&".join(parts)


def _masked_info(info: str, scheme: str, hidden: list[str]) -> str:
    user, colon, password = info.partition(":")
    if _holds(user, hidden) or (not colon and scheme in WEBHOOK_SCHEMES and user):
        user = MASK  # a webhook's lone user is its credential (HTTP basic auth, no password)
    if colon and _holds(password, hidden):
        password = MASK
    return f"{user}{colon}{password}@"


def _ntfy_topic_is_host(path: str, query: str) -> bool:
    # ntfy names at least one topic: in cloud mode, or with no path, the first one is the "host".
    return "mode=cloud" in query.split("&") or not path.strip("/")


def mask_url(url: str, secrets: Iterable[str] = ()) -> str:
    """A URL's display form with every credential masked, whatever the privacy form showed:

    - the values of its header (`+`), argument (`-`) and payload (`:`) parameters
      (`json://h/x?%2BAuthorization=Bearer%20t` -> `json://h/x?+Authorization=****`);
    - every part (user, password, host, port, path segment, query value, fragment) holding
      one of `secrets` (what `${VAR}` put there), a value of several parts part by part;
    - every path segment of a plain webhook (`json://h/****/****`) and its user when it has
      no password, and every ntfy topic (`ntfys://****`, `ntfy://h/****`).

    The scheme is never masked; masking a masked form changes nothing.
    """
    hidden = _secret_pieces(secrets)
    match = _URL_PARTS.match(url)
    if match is None:
        base, sep, rest = url.partition("?")
        if not sep:
            return url
        query, hash_, fragment = rest.partition("#")
        return f"{base}?{_masked_query(query, hidden)}{hash_}{fragment}"
    scheme = match["scheme"].lower()
    host, port, path = match["host"], match["port"] or "", match["path"]
    query, fragment = match["query"], match["fragment"]
    info = "" if match["info"] is None else _masked_info(match["info"], scheme, hidden)
    if _holds(host, hidden) or (
        scheme in NTFY_SCHEMES and host and _ntfy_topic_is_host(path, query or "")
    ):
        host = MASK
    if _holds(port.removeprefix(":"), hidden):
        port = f":{MASK}"
    path_secret = scheme in WEBHOOK_SCHEMES or scheme in NTFY_SCHEMES
    path = "/".join(
        MASK if segment and (path_secret or _holds(segment, hidden)) else segment
        for segment in path.split("/")
    )
    shown = f"{match['scheme']}://{info}{host}{port}{path}"
    if query is not None:
        shown += f"?{_masked_query(query, hidden)}"
    if fragment is not None:
        shown += f"#{MASK if _holds(fragment, hidden) else fragment}"
    return shown
