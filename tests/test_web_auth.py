"""Who may see the status page (web.auth), and which links it draws (views.link): tables."""

from __future__ import annotations

import functools
from typing import Any

import anyio.to_thread
import httpx
import pytest
from structlog.testing import capture_logs

from watcher import app, config
from watcher.core.timeline import Timeline
from watcher.runtime.clocks import utcnow
from watcher.views import link, page_path
from watcher.web.auth import COOKIE, LOCKED_REASON, Access, Verdict, is_loopback
from watcher.web.health import Health
from watcher.web.page import StatusPage

TOKEN = "page-token-0123456789abcdef"
OPEN = Access(None, loopback=True)
WIDE = Access(None, loopback=False)
TOKENED = Access(TOKEN, loopback=False)
COOKIE_VALUE = TOKENED.cookie_value()


@pytest.mark.parametrize(
    ("access", "headers", "query", "verdict"),
    [
        (OPEN, {}, None, Verdict.ALLOWED),
        (WIDE, {}, None, Verdict.LOCKED),
        (WIDE, {"authorization": f"Bearer {TOKEN}"}, None, Verdict.LOCKED),  # no token to match
        (TOKENED, {}, None, Verdict.UNAUTHORIZED),
        (TOKENED, {"authorization": f"Bearer {TOKEN}"}, None, Verdict.ALLOWED),
        (TOKENED, {"authorization": f"bearer  {TOKEN} "}, None, Verdict.ALLOWED),
        (TOKENED, {"authorization": f"Basic {TOKEN}"}, None, Verdict.UNAUTHORIZED),
        (TOKENED, {"authorization": f"Bearer {TOKEN}x"}, None, Verdict.UNAUTHORIZED),
        (TOKENED, {"authorization": "Bearer"}, None, Verdict.UNAUTHORIZED),
        (TOKENED, {}, TOKEN, Verdict.ALLOWED),
        (TOKENED, {}, TOKEN[:-1], Verdict.UNAUTHORIZED),
        (TOKENED, {}, "é" * 30, Verdict.UNAUTHORIZED),
        (TOKENED, {"cookie": f"a=1; {COOKIE}={COOKIE_VALUE}"}, None, Verdict.ALLOWED),
        (TOKENED, {"cookie": f"{COOKIE}={TOKEN}"}, None, Verdict.UNAUTHORIZED),  # not the digest
        (TOKENED, {"cookie": f"{COOKIE}=x; {COOKIE}={COOKIE_VALUE}"}, None, Verdict.UNAUTHORIZED),
        (
            Access(TOKEN, loopback=True),
            {},
            None,
            Verdict.UNAUTHORIZED,
        ),  # a token binds loopback too
    ],
)
def test_verdicts(
    access: Access, headers: dict[str, str], query: str | None, verdict: Verdict
) -> None:
    assert verdict == access.verdict(headers, query)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("watcher.internal", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert loopback == is_loopback(host)


def test_the_cookie_is_not_the_token() -> None:
    assert TOKEN not in COOKIE_VALUE
    assert COOKIE_VALUE != Access("another-token-0123456789", loopback=True).cookie_value()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://wandb.ai/e/p/runs/x", "https://wandb.ai/e/p/runs/x"),
        ("http://example.com/", "http://example.com/"),
        ("javascript:alert(1)", None),
        ("JaVaScRiPt:alert(1)", None),
        ("data:text/html,<script>alert(1)</script>", None),
        ("//evil.example/x", None),
        ("https://", None),
        ("https://[::1", None),  # not a URL at all
        ("", None),
    ],
)
def test_only_http_links(url: str, shown: str | None) -> None:
    assert shown == link(url)


def test_a_job_page_path_quotes_each_segment() -> None:
    assert "/jobs/dpo/a%2Fb%3F%23%20c" == page_path("dpo", "a/b?# c")


class _Untouched:
    """A status source the page must not read: the request is refused before."""

    async def overview(self) -> dict[str, Any]:
        raise AssertionError("read while locked")

    async def job(self, key: str) -> tuple[dict[str, Any], Timeline] | None:
        raise AssertionError("read while locked")


async def test_beyond_loopback_without_a_token_the_page_is_off_and_says_why() -> None:
    """Narrow: the page's ASGI app in process (the daemon tests serve it over HTTP)."""
    settings = config.parse(
        {
            "fireworks": {"account_id": "acme"},
            "watcher": {"health_listen": "0.0.0.0:9464"},
            "watch": [{"kind": "sft", "jobs": ["a"]}],
        },
        {"FIREWORKS_API_KEY": "k"},
    )
    with capture_logs() as logs:
        built = await app.status_page(settings, None, Health(poll_interval=30), None, utcnow)  # type: ignore[arg-type]
    locked = Access(None, loopback=False)
    page = await anyio.to_thread.run_sync(
        functools.partial(StatusPage, _Untouched(), access=locked, poll_interval=30, version="t")
    )
    assert [LOCKED_REASON] == [line["reason"] for line in logs if line["event"] == "web.locked"]
    assert isinstance(built, StatusPage)
    transport = httpx.ASGITransport(app=page)
    async with httpx.AsyncClient(transport=transport, base_url="http://watcher") as client:
        for path in ("/", "/jobs/sft/a", "/api/v1/jobs", "/api/v1/openapi.json"):
            answer = await client.get(
                path, headers={"Authorization": "Bearer anything-at-all-0123"}
            )
            assert (403, True) == (answer.status_code, "web_token" in answer.text), path
        assert 200 == (await client.get("/static/page.css")).status_code
