"""The status page and its JSON API, beside the health endpoints.

- `/` every job (state badge, progress, time in state, last move with its reason, links),
  the open conditions, undelivered notifications, silences, and the daemon's role and last
  poll; `/jobs/{kind}/{id}` one job with its timeline (SVG, drawn here) and history.
- `/api/v1/jobs`, `/api/v1/jobs/{kind}/{id}`, `/api/v1/conditions`, `/api/v1/deliveries`,
  described by `/api/v1/openapi.json`; `/static/` the page's CSS and script.
- `POST` of the login form (`token=`) to any page sets the session cookie (`web.auth`).

Everything from the API is untrusted: templates autoescape (Jinja2), links are http(s) only
(`views.link`), and the script only swaps in HTML this server rendered. Templates and assets
are read from the package when the page is built, so nothing touches the disk on the server's
loop and the page works air-gapped. A flood costs one store read a second (`CACHE_SECONDS`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any, Final
from urllib.parse import parse_qs, unquote

import anyio
import jinja2

from watcher.core.errors import StoreError
from watcher.core.kinds import Meaning
from watcher.core.messages import format_duration
from watcher.core.text import for_terminal
from watcher.core.timeline import Timeline
from watcher.ports import StatusSource
from watcher.web.auth import LOCKED_REASON, MISDIRECTED_REASON, Access, Verdict
from watcher.web.login import (
    FormError,
    MisdirectedReport,
    MisdirectedReports,
    here,
    is_secure,
    read_form,
    session_cookie,
)

Scope = Mapping[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
Response = tuple[int, list[tuple[bytes, bytes]], bytes]

#: Jobs listed on `/` (those needing attention first); the API pages through all of them.
MAX_ROWS: Final = 500
#: The most jobs one `/api/v1/jobs` answer holds, and its default.
API_LIMIT: Final = 1000
#: How long one read of the store serves every request.
CACHE_SECONDS: Final = 1.0
#: API text shown on the page is cut to this many characters.
SHOWN: Final = 300
STATIC: Final = {
    "page.css": b"text/css; charset=utf-8",
    "page.js": b"text/javascript; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}
SECURITY_HEADERS: Final = [
    (
        b"content-security-policy",
        (
            b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        ),
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
#: Where a state stands on the page, most urgent first.
_ORDER: Final = {
    str(Meaning.FAILURE): 0,
    str(Meaning.ATTENTION): 1,
    str(Meaning.ACTIVE): 2,
    str(Meaning.SUCCESS): 3,
    str(Meaning.TOMBSTONE): 4,
}


class BadRequest(Exception):
    """A query parameter out of bounds: a 400 naming it."""


class StatusPage:
    """The ASGI app for the page's paths (`owns`); `Health.app(page)` routes to it."""

    def __init__(
        self,
        source: StatusSource,
        *,
        access: Access,
        poll_interval: float,
        version: str,
        monotonic: Callable[[], float] = time.monotonic,
        on_misdirected: MisdirectedReport | None = None,
    ) -> None:
        self._source = source
        self._access = access
        # `on_misdirected` hears of refused Host headers, at most once a minute.
        self._misdirected = MisdirectedReports(on_misdirected, monotonic)
        # The script asks again twice per poll interval (within 1-10 s): a change shows
        # within one interval of its poll; without the script the page reloads itself.
        self._refresh = min(10.0, max(1.0, poll_interval / 2))
        self._reload = int(min(60.0, max(5.0, poll_interval)))
        self._version = version
        self._monotonic = monotonic
        package = files("watcher.web")
        sources = {
            name: (package / "templates" / name).read_text(encoding="utf-8")
            for name in ("base.html", "macros.html", "index.html", "job.html", "message.html")
        }
        env = jinja2.Environment(
            loader=jinja2.DictLoader(sources),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["shown"] = lambda text, limit=SHOWN: for_terminal(str(text), limit)
        env.filters["duration"] = lambda seconds: format_duration(float(seconds)) or "0s"
        self._templates = {name: env.get_template(name) for name in sources}
        self._static = {name: (package / "static" / name).read_bytes() for name in STATIC}
        self._openapi = (package / "openapi.json").read_bytes()
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock: anyio.Lock | None = None

    def owns(self, path: str) -> bool:
        """The paths this app serves."""
        return path == "/" or path.startswith(("/jobs/", "/api/v1/", "/static/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        raw = bytes(scope.get("raw_path") or scope["path"].encode()).split(b"?")[0]
        parts = [unquote(p.decode("latin-1")) for p in raw.split(b"/")[1:]]
        # Blank values kept: `?limit=` is a bad limit, not none.
        given = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        query = {k: v[0] for k, v in given.items()}
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        api = parts[:2] == ["api", "v1"]
        form = not api and parts[0] != "static"  # a page: it may be posted the login form
        verdict = self._access.verdict(headers, query.get("token"))
        # Where a login goes back to, and whether its cookie is kept to HTTPS.
        back, secure = here(raw, query), is_secure(scope, headers)
        if verdict is Verdict.MISDIRECTED:
            self._misdirected(headers.get("host", ""))
            status, out, body = self._refused(verdict, api=api)
        elif method == "POST" and form:
            status, out, body = await self._login(verdict, receive, back, secure)
        elif method not in ("GET", "HEAD"):
            allow = "GET, HEAD, POST" if form else "GET, HEAD"
            status, out, body = _json(405, {"error": f"only {allow} are served here"})
            out.append((b"allow", allow.encode()))
        else:
            status, out, body = await self._route(parts, query, verdict, back, secure)
        out = [*out, *SECURITY_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _route(
        self,
        parts: list[str],
        query: dict[str, str],
        verdict: Verdict,
        back: str,
        secure: bool,
    ) -> Response:
        api = parts[:2] == ["api", "v1"]
        if parts[0] == "static":
            name = "/".join(parts[1:])
            if name not in STATIC:
                return _text(404, "not found\n")
            return 200, [(b"content-type", STATIC[name])], self._static[name]
        if verdict is not Verdict.ALLOWED:
            return self._refused(verdict, api=api)
        if "token" in query and not api:
            # Kept for links made before the form posted it: the token leaves the address
            # bar (and the history) at once, and a cookie carries it on when there is one.
            where = [(b"location", back.encode())]
            if self._access.token is None:
                return 303, where, b""
            return 303, [*where, session_cookie(self._access, secure=secure)], b""
        try:
            if api:
                return await self._api(parts[2:], query)
            return await self._html(parts)
        except StoreError as exc:
            reason = f"cannot read the state database: {exc}"
            if api:
                return _json(503, {"error": reason})
            return self._message(503, "State database unavailable", reason)
        except BadRequest as exc:
            return _json(400, {"error": str(exc)})

    async def _login(self, verdict: Verdict, receive: Receive, back: str, secure: bool) -> Response:
        """The login form, posted: a session cookie for the right token, then `back`."""
        if verdict is Verdict.LOCKED:
            return self._refused(verdict, api=False)
        try:
            form = await read_form(receive)
        except FormError as exc:
            return self._message(400, "Bad request", str(exc))
        if self._access.token is None:
            return 303, [(b"location", back.encode())], b""  # nothing to log in to
        if not self._access.accepts(form.get("token", "")):
            return self._refused(Verdict.UNAUTHORIZED, api=False)
        return 303, [(b"location", back.encode()), session_cookie(self._access, secure=secure)], b""

    def _refused(self, verdict: Verdict, *, api: bool) -> Response:
        if verdict is Verdict.LOCKED:
            if api:
                return _json(403, {"error": LOCKED_REASON})
            return self._message(403, "Status page off", LOCKED_REASON)
        if verdict is Verdict.MISDIRECTED:
            # 421: this server is not the one the name meant (a DNS rebinding, or a proxy
            # sending its own name); nothing of the state is read.
            if api:
                return _json(421, {"error": MISDIRECTED_REASON})
            return self._message(421, "Unknown host name", MISDIRECTED_REASON)
        reason = (
            "a token is required: Authorization: Bearer TOKEN"
            if api
            else "a token is required: enter it below, or send Authorization: Bearer TOKEN"
        )
        status, out, body = (
            _json(401, {"error": reason})
            if api
            else self._message(401, "Token required", reason, login=True)
        )
        return status, [*out, (b"www-authenticate", b'Bearer realm="fireworks-watcher"')], body

    async def _overview(self) -> dict[str, Any]:
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            now = self._monotonic()
            if self._cached is None or now - self._cached[0] >= CACHE_SECONDS:
                self._cached = (now, await self._source.overview())
            return self._cached[1]

    async def _api(self, parts: list[str], query: dict[str, str]) -> Response:
        if parts == ["openapi.json"]:
            return 200, [(b"content-type", b"application/json")], self._openapi
        if len(parts) == 3 and parts[0] == "jobs":
            found = await self._source.job(f"{parts[1]}/{parts[2]}")
            if found is None:
                return _json(404, {"error": f"no job {parts[1]}/{parts[2]} in the state"})
            return _json(200, found[0])
        if parts not in (["jobs"], ["conditions"], ["deliveries"]):
            return _json(404, {"error": "not found"})
        doc = await self._overview()
        head = {"now": doc["now"], "revision": doc["revision"]}
        if parts == ["jobs"]:
            limit = _bounded(query, "limit", API_LIMIT, 1, API_LIMIT)
            offset = _bounded(query, "offset", 0, 0, 10_000_000)
            jobs = doc["jobs"]
            return _json(
                200,
                {
                    **head,
                    "watcher": doc["watcher"],
                    "total": len(jobs),
                    "offset": offset,
                    "jobs": jobs[offset : offset + limit],
                },
            )
        if parts == ["conditions"]:
            return _json(
                200, {**head, "conditions": doc["conditions"], "silences": doc["silences"]}
            )
        deliveries = doc["deliveries"]
        return _json(
            200,
            {
                **head,
                "pending": sum(d["status"] == "pending" for d in deliveries),
                "dead": sum(d["status"] == "dead" for d in deliveries),
                "deliveries": deliveries,
                "silenced_count": doc["silenced_count"],
            },
        )

    async def _html(self, parts: list[str]) -> Response:
        if parts == [""]:
            doc = await self._overview()
            jobs = sorted(doc["jobs"], key=_urgency)
            return self._render(
                200,
                "index.html",
                doc=doc,
                jobs=jobs[:MAX_ROWS],
                hidden=max(0, len(jobs) - MAX_ROWS),
                api="/api/v1/jobs?limit=1",
            )
        if len(parts) == 3 and parts[0] == "jobs":
            found = await self._source.job(f"{parts[1]}/{parts[2]}")
            if found is None:
                reason = f"the state has no job {parts[1]}/{parts[2]}"
                return self._message(404, "No such job", reason)
            doc, drawn = found
            api = "/api/v1" + doc["job"]["page"]
            return self._render(200, "job.html", doc=doc, job=doc["job"], tl=svg(drawn), api=api)
        return self._message(404, "Not found", "nothing is served at this address")

    def _render(self, status: int, template: str, **context: Any) -> Response:
        now = _parse(context["doc"]["now"]) if "doc" in context else datetime.now(UTC)
        body = self._templates[template].render(
            **context,
            ago=lambda stamp: _ago(stamp, now),
            until=lambda stamp: format_duration((_parse(stamp) - now).total_seconds()) or "0s",
            refresh=self._refresh,
            reload=self._reload,
            version=self._version,
        )
        return status, [(b"content-type", b"text/html; charset=utf-8")], body.encode()

    def _message(self, status: int, title: str, text: str, *, login: bool = False) -> Response:
        return self._render(status, "message.html", title=title, text=text, login=login, api="")


def svg(drawn: Timeline, width: float = 1000.0) -> dict[str, Any]:
    """The timeline in the SVG's units: x and widths in [0, width], times as labels."""

    short = (drawn.end - drawn.start).total_seconds() < 600  # minutes alone would all agree

    def label(at: datetime) -> str:
        return f"{at.astimezone(UTC):%H:%M:%S}" if short else f"{at.astimezone(UTC):%H:%M}"

    return {
        "width": width,
        "bands": [
            {
                "x": round(b.x * width, 2),
                "width": round(max(b.width * width, 0.5), 2),
                "meaning": str(b.meaning),
                "title": f"{b.state} {label(b.start)} to {label(b.end)} UTC",
                "state": b.state,
            }
            for b in drawn.bands
        ],
        "marks": [
            {
                "x": round(m.x * width, 2),
                "title": f"{m.move.at.astimezone(UTC):%H:%M:%S} {m.move.label}",
            }
            for m in drawn.marks
        ],
        "ticks": [
            {"x": round(x * width, 2), "label": label(at), "anchor": _anchor(x)}
            for x, at in drawn.ticks
        ],
        "start": f"{drawn.start.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
    }


def _anchor(x: float) -> str:
    return "start" if x <= 0 else "end" if x >= 1 else "middle"


def _urgency(job: Mapping[str, Any]) -> tuple[int, int, str]:
    return (0 if job["conditions"] else 1, _ORDER.get(job["meaning"], 2), job["job"])


def _bounded(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise BadRequest(f"{name}: must be an integer from {low} to {high}")
    return value


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _ago(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "-"
    seconds = (now - _parse(stamp)).total_seconds()
    return (format_duration(seconds) or "0s") if math.isfinite(seconds) else "-"


def _json(status: int, doc: Mapping[str, Any]) -> Response:
    body = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    return status, [(b"content-type", b"application/json")], body


def _text(status: int, body: str) -> Response:
    return status, [(b"content-type", b"text/plain; charset=utf-8")], body.encode()
