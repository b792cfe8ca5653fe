"""The short form of an apprise URL, for the places a person reads one. Pure functions.

apprise's privacy form (`Target.url_display`) is exact but long: it lists every parameter,
defaults included (`json://h/hook?method=POST&overflow=truncate&retry=0&wait=0.5&optional=no`).
`status --json`, `history --json` and the state file keep that form; `check`, `test-notify`,
`status` and the `notify.*` log lines show `short_url(display)`: `json://h/****` (a webhook's
path is masked: it may be its token, see `text.mask_url`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from watcher.core.text import MASK, cap, for_terminal, mask_url

#: The longest path (with its host) a short form shows before cutting it with "…".
PATH_LIMIT = 60

#: Values apprise writes for a parameter left at its default, for every plugin (`overflow`:
#: apprise's `upstream` and the `truncate` the watcher sets when a URL names none).
COMMON_DEFAULTS: Mapping[str, frozenset[str]] = {
    "overflow": frozenset({"upstream", "truncate"}),
    "retry": frozenset({"0"}),
    "wait": frozenset({"0.5"}),
    "optional": frozenset({"no"}),
    "cto": frozenset({"4.0", "15.0"}),
    "rto": frozenset({"4.0"}),
    "verify": frozenset({"yes"}),
    "emojis": frozenset({"no"}),
}

_BOOL_NO = frozenset({"no", "False"})
_BOOL_YES = frozenset({"yes", "True"})

_WEBHOOK = {"method": frozenset({"POST"})}
_MAIL = {"mode": frozenset({"starttls"})}
_NTFY = {
    "priority": frozenset({"default"}),
    "mode": frozenset({"cloud", "private"}),
    "image": _BOOL_YES,
    "auth": frozenset({"basic"}),
    "format": frozenset({"text"}),
}

#: Plugin defaults, by scheme, as apprise writes them (tests/unit/test_urls.py checks each
#: against the installed apprise, so a new apprise that changes one fails a test, not a reader).
SCHEME_DEFAULTS: Mapping[str, Mapping[str, frozenset[str]]] = {
    "json": _WEBHOOK,
    "jsons": _WEBHOOK,
    "xml": _WEBHOOK,
    "xmls": _WEBHOOK,
    "form": _WEBHOOK,
    "forms": _WEBHOOK,
    "slack": {
        "image": _BOOL_YES,
        "footer": _BOOL_YES,
        "timestamp": _BOOL_YES,
        "blocks": _BOOL_NO,
        "mode": frozenset({"hook"}),
    },
    "discord": {
        "tts": _BOOL_NO,
        "avatar": _BOOL_YES,
        "footer": _BOOL_NO,
        "footer_logo": _BOOL_YES,
        "image": _BOOL_NO,
        "fields": _BOOL_YES,
        "batch": _BOOL_YES,
    },
    "mailto": _MAIL,
    "mailtos": _MAIL,
    "ntfy": _NTFY,
    "ntfys": _NTFY,
    "tgram": {
        "image": _BOOL_NO,
        "detect": _BOOL_NO,
        "silent": _BOOL_NO,
        "preview": _BOOL_NO,
        "album": _BOOL_NO,
        "content": frozenset({"before"}),
        "mdv": frozenset({"v1"}),
    },
}

_URL = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:(?P<info>[^/?#@]*)@)?"
    r"(?P<host>\[[^\]/?#]*\](?::[0-9]*)?|[^/?#]*)(?P<path>[^?#]*)(?:\?(?P<query>[^#]*))?"
    r"(?:#(?P<fragment>.*))?$",
    re.DOTALL,
)


_ENCODED = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
#: Characters a decoded path would read as something else: left percent-encoded.
_RESERVED = frozenset("/?#%&=+\\")


def _readable(match: re.Match[str]) -> str:
    raw = bytes.fromhex(match[0].replace("%", ""))
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return match[0]
    return "".join(
        f"%{ord(c):02X}" if c in _RESERVED or not c.isprintable() or c.isspace() else c
        for c in text
    )


def _masked_info(info: str) -> str:
    # The display form has the password masked already; mask it again in case a stored row
    # predates that, and never show more than `user:****`.
    user, colon, _ = info.partition(":")
    return f"{user}:{MASK}@" if colon else f"{user}@"


def _kept(scheme: str, host: str, query: str) -> list[str]:
    defaults = {**COMMON_DEFAULTS, **SCHEME_DEFAULTS.get(scheme.lower(), {})}
    # apprise names the SMTP server of a mail domain it knows (`smtp=smtp.gmail.com`).
    derived = {("smtp", host), ("smtp", f"smtp.{host}")}
    kept = []
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if not key or value in defaults.get(key, ()) or (key, value) in derived:
            continue
        kept.append(item)
    return kept


def host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets (`[::1]:9464`), as a URL authority."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def short_url(display: str, limit: int = PATH_LIMIT) -> str:
    """An apprise URL's privacy form as a person reads it, one line safe for a terminal.

    Masked first by `mask_url` (a webhook's path, an ntfy topic, header values). Kept: the
    scheme, the user with the password masked (`user:****@`), the host and port,
    the path (without a trailing `/`, its percent-encoded letters decoded: `%C3%BC` -> `ü`,
    `%40` -> `@`; `/`, `?`, `#`, `%`, spaces and controls stay encoded) cut to `limit`
    characters with "…", the fragment, and
    every query parameter whose value is *not* apprise's default for that plugin
    (`COMMON_DEFAULTS`, `SCHEME_DEFAULTS`): `method=PUT`, `mode=ssl`, `overflow=split`,
    `to=...` stay, `method=POST`, `retry=0`, `wait=0.5` go. A parameter of a plugin this
    module has no table for is kept, so the short form may be longer than it needs to be but
    never hides a setting. Header (`+`), argument (`-`) and payload (`:`) parameters are kept
    with their values masked (`+Authorization=****`): they change what is sent.

    `json://u:****@h:8/hook?method=POST&retry=0&+X-Key=****` -> `json://u:****@h:8/****?+X-Key=****`
    """
    masked = mask_url(display)
    match = _URL.match(masked)
    if match is None:
        return for_terminal(cap(masked, 2 * limit))
    scheme, info, host = match["scheme"], match["info"], match["host"]
    path = _ENCODED.sub(_readable, match["path"].removesuffix("/"))
    head = f"{scheme}://{_masked_info(info) if info is not None else ''}"
    where = cap(host + path, limit)
    fragment = f"#{cap(match['fragment'], limit)}" if match["fragment"] else ""
    kept = _kept(scheme, host, match["query"] or "")
    query = f"?{cap('&'.join(kept), limit)}" if kept else ""
    return for_terminal(f"{head}{where}{query}{fragment}")
