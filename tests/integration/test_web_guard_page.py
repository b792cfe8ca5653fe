"""The status page against DNS rebinding, and its login (issue 20, item 2 and the small ones),
over loopback HTTP to a real daemon watching the simulator (`tests.support.site`).

A page of any site whose name is pointed at 127.0.0.1 sends that name as `Host`: on loopback
without a token only loopback names and `web_allowed_hosts` are answered. The login form
posts the token, and the cookie it earns expires (and is `Secure` behind an HTTPS proxy).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import Daemon
from tests.support.servers import JsonReceiver, ServedApp
from tests.support.site import JOBS, SECRETS, TOKEN, Site, simulator, write_config
from tests.support.waiting import wait_until
from watcher.web.auth import COOKIE

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

ALLOWED = "watcher.example"
FOREIGN = "rebind.attacker.example"
#: Every page and API path, each holding something of the state.
PATHS = (
    "/",
    "/jobs/dpo/dpo-run",
    "/api/v1/jobs",
    "/api/v1/jobs/dpo/dpo-run",
    "/api/v1/conditions",
    "/api/v1/deliveries",
    "/api/v1/openapi.json",
)
MAX_AGE = 12 * 3600


@contextmanager
def daemon_site(
    tmp: Path, server: ServedApp, env: dict[str, str], *, token: str | None
) -> Iterator[Site]:
    """A daemon serving the page on loopback, `web_allowed_hosts = [ALLOWED]`; yields once
    every job is recorded and a delivery to the channel (its URL holds a password) is pending."""
    sim = simulator()
    server.app = sim
    with JsonReceiver() as receiver:
        receiver.status = 500  # the delivery stays pending: in /api/v1/deliveries
        config = write_config(tmp, receiver, token=token)
        text = config.read_text().replace(
            "[watcher]\n", f'[watcher]\nweb_allowed_hosts = ["{ALLOWED}"]\n', 1
        )
        config.write_text(text)
        daemon = Daemon(config, env)
        try:
            [listening] = daemon.wait_event("health.listening")
            site = Site(
                f"http://127.0.0.1:{listening['port']}", token, daemon, sim, receiver, config
            )

            def recorded() -> bool:
                answer = site.get("/api/v1/deliveries").json()
                return answer["pending"] > 0 and len(
                    site.get("/api/v1/jobs").json()["jobs"]
                ) == len(JOBS)

            wait_until(recorded, "every job recorded and a delivery pending")
            yield site
        finally:
            daemon.close()


@pytest.fixture(scope="module")
def open_site(
    tmp_path_factory: pytest.TempPathFactory, server: ServedApp, module_env: dict[str, str]
) -> Iterator[Site]:
    """Loopback, no token: the default set-up."""
    with daemon_site(tmp_path_factory.mktemp("open"), server, module_env, token=None) as site:
        yield site


@pytest.fixture(scope="module")
def token_site(
    tmp_path_factory: pytest.TempPathFactory, server: ServedApp, module_env: dict[str, str]
) -> Iterator[Site]:
    with daemon_site(tmp_path_factory.mktemp("token"), server, module_env, token=TOKEN) as site:
        yield site


def as_host(site: Site, path: str, host: str, method: str = "GET") -> httpx.Response:
    with httpx.Client(timeout=10, trust_env=False) as client:
        return client.request(method, f"{site.base}{path}", headers={"Host": host})


def post_login(site: Site, path: str, token: str, **headers: str) -> httpx.Response:
    with httpx.Client(timeout=10, trust_env=False) as client:
        return client.post(f"{site.base}{path}", data={"token": token}, headers=headers)


def test_a_foreign_host_name_reads_nothing_while_the_probes_answer(open_site: Site) -> None:
    """The issue's case: `Host: rebind.attacker.example` read every job, and the deliveries
    gave away a webhook password. Now 421 on every page and API path, with nothing of the
    state; the probes and metrics answer whatever the name (kubelets send the pod's IP)."""
    port = open_site.base.rsplit(":", 1)[1]
    for host in (FOREIGN, f"{FOREIGN}:{port}", f"localhost.{FOREIGN}", "10.0.0.1"):
        for path in PATHS:
            answer = as_host(open_site, path, host)
            assert 421 == answer.status_code, (host, path)
            assert "web_allowed_hosts" in answer.text
            shown = [job for _, _, job, _ in JOBS if job in answer.text]
            leaked = [secret for secret in SECRETS if secret in answer.text]
            assert ([], []) == (shown, leaked), path
        for path in ("/healthz", "/readyz", "/metrics"):
            assert 200 == as_host(open_site, path, host).status_code, path
    assert 421 == as_host(open_site, "/", FOREIGN, method="POST").status_code


def test_loopback_names_and_the_allowed_ones_are_answered(open_site: Site) -> None:
    port = open_site.base.rsplit(":", 1)[1]
    answered = [f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"]
    answered += [ALLOWED, f"{ALLOWED.upper()}:8443"]
    refused = [f"sub.{ALLOWED}", f"{ALLOWED}.{FOREIGN}"]
    got = {
        host: as_host(open_site, "/api/v1/jobs", host).status_code for host in answered + refused
    }
    assert {**dict.fromkeys(answered, 200), **dict.fromkeys(refused, 421)} == got


def test_refused_host_names_are_logged_once_not_per_request(open_site: Site) -> None:
    before = len(open_site.daemon.lines)
    for index in range(30):
        assert 421 == as_host(open_site, "/api/v1/jobs", f"flood-{index}.example").status_code
    wait_until(
        lambda: any("web.misdirected" in line for line in open_site.daemon.lines),
        "a web.misdirected line",
    )
    lines = [json.loads(line) for line in open_site.daemon.lines if "web.misdirected" in line]
    # One a minute at most: this module's refusals fit in two minutes.
    assert 1 <= len(lines) <= 2, lines
    assert {"warning"} == {line["level"] for line in lines}
    assert all(isinstance(line["host"], str) and line["refused"] >= 1 for line in lines)
    assert not [line for line in open_site.daemon.lines[before:] if "Traceback" in line]


def test_a_token_in_the_address_without_one_configured_is_dropped(open_site: Site) -> None:
    """It was a 500 and a traceback per request: now the address loses it, and no cookie."""
    for path, where in [
        ("/?token=x", "/"),
        ("/jobs/dpo/dpo-run?token=x&kind=dpo", "/jobs/dpo/dpo-run?kind=dpo"),
        ("/jobs//evil.example?token=x", "/jobs//evil.example"),
    ]:
        answer = open_site.get(path)
        assert (303, where) == (answer.status_code, answer.headers["location"]), path
        assert "set-cookie" not in answer.headers
    assert not [line for line in open_site.daemon.lines if "Traceback" in line]


def test_the_login_form_posts_the_token_and_the_cookie_expires(token_site: Site) -> None:
    """POST, not GET (a GET puts the token in the history and in proxy logs), and a cookie
    with a `Max-Age` that holds an expiring value."""
    form = token_site.get("/", auth=False)
    assert 401 == form.status_code
    assert re.search(r'<form method="post" action="">', form.text)

    answer = post_login(token_site, "/jobs/dpo/dpo-run?kind=dpo", TOKEN)
    assert (303, "/jobs/dpo/dpo-run?kind=dpo") == (
        answer.status_code,
        answer.headers["location"],
    )
    cookie = answer.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"path", "max-age", "httponly", "samesite"} == attributes
    assert f"Max-Age={MAX_AGE}" in cookie
    assert "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    with_cookie = token_site.get("/api/v1/jobs", auth=False, cookies={COOKIE: value})
    assert 200 == with_cookie.status_code

    wrong = post_login(token_site, "/", "not-the-token-0123456789")
    assert (401, False) == (wrong.status_code, "set-cookie" in wrong.headers)
    assert 'name="token"' in wrong.text
    with httpx.Client(timeout=10, trust_env=False) as client:
        large = client.post(f"{token_site.base}/", data={"token": "x" * 10_000})
    assert 400 == large.status_code
    assert 405 == post_login(token_site, "/api/v1/jobs", TOKEN).status_code
    assert not [line for line in token_site.daemon.lines if TOKEN in line]


def test_behind_an_https_proxy_the_cookie_is_secure(token_site: Site) -> None:
    """A proxy that ends TLS says so in `X-Forwarded-Proto`; the cookie then stays on HTTPS."""
    posted = post_login(token_site, "/", TOKEN, **{"X-Forwarded-Proto": "https"})
    linked = token_site.get(f"/?token={TOKEN}", auth=False, headers={"X-Forwarded-Proto": "https"})
    plain = post_login(token_site, "/", TOKEN)
    secure = [
        "Secure" in [p.strip() for p in answer.headers["set-cookie"].split(";")]
        for answer in (posted, linked, plain)
    ]
    assert [True, True, False] == secure


def test_refusals_are_reported_at_most_once_a_minute() -> None:
    """The first at once, then one a minute with the count since the last (a flood of
    foreign names is one line a minute, not one per request)."""
    from watcher.web.login import MisdirectedReports  # here: the other tests run without it

    now = [100.0]
    heard: list[tuple[str, int]] = []
    report = MisdirectedReports(lambda host, refused: heard.append((host, refused)), lambda: now[0])
    report("first.example")
    for index in range(500):
        now[0] += 0.1
        report(f"flood-{index}.example\n")
    assert [("first.example", 1)] == heard
    now[0] += 60
    report("late.example:80")
    assert [("first.example", 1), ("late.example:80", 501)] == heard
