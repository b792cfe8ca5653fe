"""Who may see the status page (web.auth), and which links it draws (views.link): tables."""

from __future__ import annotations

import functools
from typing import Any

import anyio.to_thread
import httpx
import pytest
from structlog.testing import capture_logs

from watcher import app, config
from watcher.core.errors import ConfigError
from watcher.core.timeline import Timeline
from watcher.runtime.host_clocks import utcnow
from watcher.views import link, page_path
from watcher.web.auth import COOKIE, LOCKED_REASON, SESSION_SECONDS, Access, Verdict, is_loopback
from watcher.web.health import Health
from watcher.web.page import StatusPage

TOKEN = "page-token-0123456789abcdef"
OPEN = Access(None, loopback=True)
WIDE = Access(None, loopback=False)
TOKENED = Access(TOKEN, loopback=False)
COOKIE_VALUE = TOKENED.cookie_value()
LOCAL = {"host": "127.0.0.1:9464"}


@pytest.mark.parametrize(
    ("access", "headers", "query", "verdict"),
    [
        (OPEN, LOCAL, None, Verdict.ALLOWED),
        (OPEN, {}, None, Verdict.MISDIRECTED),  # no Host: not a loopback name
        (OPEN, LOCAL, "any-token", Verdict.ALLOWED),  # nothing to check it against
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


@pytest.mark.parametrize(
    ("host", "answered"),
    [
        ("127.0.0.1:9464", True),
        ("127.0.0.1", True),
        ("127.8.0.1:80", True),
        ("localhost", True),
        ("LocalHost:9464", True),
        ("localhost.:9464", True),
        ("app.localhost:9464", True),
        ("[::1]:9464", True),
        ("[::1]", True),
        ("[0:0:0:0:0:0:0:1]:9464", True),
        ("rebind.attacker.example", False),
        ("rebind.attacker.example:9464", False),
        ("localhost.attacker.example", False),
        ("127.0.0.1.nip.io", False),
        ("evil-localhost", False),
        ("10.0.0.1:9464", False),
        ("0.0.0.0:9464", False),
        ("[::2]:9464", False),
        ("::1", False),  # an IPv6 address in Host has brackets
        ("localhost:x", False),
        ("local host", False),
        ("[::1]x", False),
        ("", False),
        ("watcher.example", False),  # not allowed here
    ],
)
def test_on_loopback_without_a_token_only_loopback_names_are_answered(
    host: str, answered: bool
) -> None:
    """DNS rebinding: a site whose name now points at 127.0.0.1 sends its own name."""
    expected = Verdict.ALLOWED if answered else Verdict.MISDIRECTED
    assert expected == OPEN.verdict({"host": host}, None)


def test_allowed_hosts_are_answered_beside_loopback_names() -> None:
    hosts = frozenset({"watcher.example", "10.1.2.3", "fd00::1"})
    access = Access(None, loopback=True, hosts=hosts)
    answered = ["watcher.example", "WATCHER.example.:8443", "10.1.2.3:9464", "[fd00::1]:80"]
    refused = ["other.example", "sub.watcher.example", "10.1.2.4", "watcher.example.evil"]
    assert [Verdict.ALLOWED] * 5 == [
        access.verdict({"host": h}, None) for h in [*answered, "localhost:9464"]
    ]
    assert [Verdict.MISDIRECTED] * 4 == [access.verdict({"host": h}, None) for h in refused]


def test_with_a_token_the_host_is_checked_only_when_names_are_given() -> None:
    """A token already keeps a rebinding page out (it has no cookie for the name), and beyond
    loopback the page's name is the operator's; `web_allowed_hosts` narrows it anyway."""
    foreign = {"host": "rebind.attacker.example", "authorization": f"Bearer {TOKEN}"}
    assert Verdict.ALLOWED == Access(TOKEN, loopback=True).verdict(foreign, None)
    assert Verdict.ALLOWED == TOKENED.verdict(foreign, None)
    assert Verdict.LOCKED == WIDE.verdict(foreign, None)
    named = Access(TOKEN, loopback=False, hosts=frozenset({"watcher.example"}))
    assert Verdict.MISDIRECTED == named.verdict(foreign, None)
    assert Verdict.ALLOWED == named.verdict({**foreign, "host": "watcher.example"}, None)


def test_a_session_cookie_expires_and_its_expiry_cannot_be_moved() -> None:
    now = [1_800_000_000.0]
    access = Access(TOKEN, loopback=False, clock=lambda: now[0])
    value = access.cookie_value()
    stamp, signature = value.split(".")

    def verdict(cookie: str) -> Verdict:
        return access.verdict({"cookie": f"{COOKIE}={cookie}"}, None)

    assert Verdict.ALLOWED == verdict(value)
    assert Verdict.UNAUTHORIZED == verdict(f"{int(stamp) + 3600}.{signature}")
    assert Verdict.UNAUTHORIZED == verdict(signature)
    now[0] += SESSION_SECONDS - 1
    assert Verdict.ALLOWED == verdict(value)
    now[0] += 2
    assert Verdict.UNAUTHORIZED == verdict(value)
    # A clock set back does not stretch a session beyond one from now.
    now[0] -= 3 * SESSION_SECONDS
    assert Verdict.UNAUTHORIZED == verdict(value)


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        (["watcher.example", "WATCHER.Example.", "[FD00::1]", "10.1.2.3"], None),
        (["watcher.example:8443"], "watcher.web_allowed_hosts[0]"),
        (["ok.example", "https://watcher.example"], "watcher.web_allowed_hosts[1]"),
        (["*.example"], "watcher.web_allowed_hosts[0]"),
        ("watcher.example", "watcher.web_allowed_hosts"),
    ],
)
def test_web_allowed_hosts_in_the_config(given: object, problem: str | None) -> None:
    raw = {
        "fireworks": {"account_id": "acme"},
        "watcher": {"web_allowed_hosts": given},
        "watch": [{"kind": "sft", "jobs": ["a"]}],
    }
    if problem is None:
        settings = config.parse(raw, {"FIREWORKS_API_KEY": "k"})
        assert ("watcher.example", "watcher.example", "fd00::1", "10.1.2.3") == (
            settings.watcher.web_allowed_hosts
        )
        return
    with pytest.raises(ConfigError) as caught:
        config.parse(raw, {"FIREWORKS_API_KEY": "k"})
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


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
