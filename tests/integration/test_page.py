"""The status page and its JSON API over loopback HTTP, served by a real daemon watching the
simulator (`tests.support.site`): what it lists, what it escapes, what it never shows, how it
refuses. The browser tests (`test_browser_page.py`) drive the same page in Chromium."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import jsonschema
import pytest

from tests.support.servers import ServedApp
from tests.support.site import (
    HOSTILE_MESSAGE,
    HOSTILE_NAME,
    JOBS,
    SECRETS,
    TOKEN,
    Site,
    running_site,
)
from watcher.web.auth import COOKIE

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

OPENAPI = Path(__file__).resolve().parents[2] / "watcher" / "web" / "openapi.json"


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, server: ServedApp, module_env: dict[str, str]
) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("page"), server, module_env) as running:
        yield running


@pytest.fixture(scope="module")
def locked_site(
    tmp_path_factory: pytest.TempPathFactory, server: ServedApp, module_env: dict[str, str]
) -> Iterator[Site]:
    with running_site(
        tmp_path_factory.mktemp("locked"), server, module_env, token=TOKEN
    ) as running:
        yield running


class _Text(HTMLParser):
    """The visible text of a page, and every tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Text:
    parser = _Text()
    parser.feed(html)
    return parser


def schema_of(name: str) -> dict[str, object]:
    doc = json.loads(OPENAPI.read_text())
    return {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}


def test_the_page_lists_every_job_with_its_state_and_links(site: Site) -> None:
    page = site.get("/")
    assert 200 == page.status_code
    assert page.headers["content-type"].startswith("text/html")
    parsed = parse(page.text)
    text = " ".join(parsed.text)
    for kind, _, job_id, _state in JOBS:
        assert f"{kind}/{job_id}" in text
        assert ("a", {"href": f"/jobs/{kind}/{job_id}"}) in parsed.tags
    states = re.findall(r'<span class="badge m-(\w+)">([A-Z_]+)</span>', page.text)
    assert {("active", "RUNNING"), ("active", "PENDING"), ("success", "COMPLETED")} <= set(states)
    assert ("success", "READY") in states
    assert ("progress", {"max": "100", "value": "40.0"}) in parsed.tags
    hrefs = {attrs.get("href") for tag, attrs in parsed.tags if tag == "a"}
    assert "https://wandb.ai/sim-entity/sim-project/runs/sft-run" in hrefs
    assert any(h and h.startswith("https://app.fireworks.ai/") for h in hrefs)
    # The daemon's own facts, the open condition, the pending delivery and the silence.
    assert "leader" in text
    assert "last poll" in text
    assert "pending_too_long" in text
    assert "maintenance window" in text
    assert re.search(r"<b>1</b> open conditions", page.text)


def test_hostile_text_is_shown_as_text(site: Site) -> None:
    for path in ("/", "/jobs/evaluation/eval-hostile"):
        page = site.get(path)
        parsed = parse(page.text)
        assert HOSTILE_MESSAGE in " ".join(parsed.text)
        assert HOSTILE_NAME in " ".join(parsed.text)
        assert "<script>alert" not in page.text
        assert not [tag for tag, _ in parsed.tags if tag == "img"]
        # Only the page's own script, by URL.
        assert [{"src": "/static/page.js", "defer": None}] == [
            attrs for tag, attrs in parsed.tags if tag == "script"
        ]


def test_no_secret_on_any_page_or_answer(site: Site) -> None:
    paths = ["/", "/api/v1/jobs", "/api/v1/conditions", "/api/v1/deliveries"]
    paths += [f"/jobs/{k}/{j}" for k, _, j, _ in JOBS] + [
        f"/api/v1/jobs/{k}/{j}" for k, _, j, _ in JOBS
    ]
    for path in paths:
        body = site.get(path).text
        assert [] == [secret for secret in SECRETS if secret in body], path
    deliveries = site.get("/api/v1/deliveries").json()["deliveries"]
    assert all("bot:****@" in d["url"] or "****" in d["url"] for d in deliveries)


def test_the_api_answers_in_its_documented_shapes(site: Site) -> None:
    jobs = site.get("/api/v1/jobs").json()
    jsonschema.validate(jobs, schema_of("JobList"))
    assert {f"{k}/{j}" for k, _, j, _ in JOBS} == {job["job"] for job in jobs["jobs"]}
    assert "leader" == jobs["watcher"]["role"]
    assert jobs["watcher"]["ready"]
    detail = site.get("/api/v1/jobs/dpo/dpo-waits").json()
    jsonschema.validate(detail, schema_of("JobDetail"))
    assert ["pending_too_long"] == [c["condition"] for c in detail["job"]["conditions"]]
    conditions = site.get("/api/v1/conditions").json()
    jsonschema.validate(conditions, schema_of("Conditions"))
    assert ["sft-*"] == [s["job"] for s in conditions["silences"]]
    deliveries = site.get("/api/v1/deliveries").json()
    jsonschema.validate(deliveries, schema_of("Deliveries"))
    assert deliveries["pending"] >= 1
    assert json.loads(OPENAPI.read_text()) == site.get("/api/v1/openapi.json").json()


def test_paging_and_bounds(site: Site) -> None:
    first = site.get("/api/v1/jobs?limit=2").json()
    rest = site.get("/api/v1/jobs?limit=1000&offset=2").json()
    assert (len(JOBS), 2, len(JOBS) - 2) == (first["total"], len(first["jobs"]), len(rest["jobs"]))
    assert sorted(j["job"] for j in first["jobs"] + rest["jobs"]) == [
        j["job"] for j in site.get("/api/v1/jobs").json()["jobs"]
    ]
    for query, name in (("limit=0", "limit"), ("limit=abc", "limit"), ("offset=-1", "offset"),
                        ("limit=1001", "limit"), ("offset=", "offset")):  # fmt: skip
        answer = site.get(f"/api/v1/jobs?{query}")
        assert (400, True) == (answer.status_code, answer.json()["error"].startswith(f"{name}:"))


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/jobs/dpo/nope", 404),
        ("/api/v1/nothing", 404),
        ("/jobs/dpo/nope", 404),
        ("/jobs/dpo", 404),
        ("/static/nope.js", 404),
        ("/static/../openapi.json", 404),
    ],
)
def test_what_is_not_there(site: Site, path: str, status: int) -> None:
    answer = site.get(path)
    assert status == answer.status_code
    if path.startswith("/api/"):
        assert answer.json()["error"]


def test_only_get_and_head(site: Site) -> None:
    answer = httpx.post(f"{site.base}/api/v1/jobs")
    assert (405, "GET, HEAD") == (answer.status_code, answer.headers["allow"])
    head = httpx.head(f"{site.base}/")
    assert (200, b"") == (head.status_code, head.content)


def test_the_page_is_self_contained(site: Site) -> None:
    page = site.get("/")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    local = [u for u in urls if u.startswith("/")]
    assert {"/static/page.css", "/static/page.js", "/static/favicon.svg"} <= set(local)
    for url in local:
        if url.startswith("/static/"):
            assert 200 == site.get(url).status_code
    external = {u for u in urls if not u.startswith("/")}
    assert all(u.startswith(("https://wandb.ai/", "https://app.fireworks.ai/")) for u in external)
    # Without the script, the page reloads itself.
    assert '<noscript><meta http-equiv="refresh"' in page.text


def test_the_health_endpoints_are_unchanged(site: Site) -> None:
    assert "ready" in site.get("/readyz").text
    assert "fireworks_watcher_leader" in site.get("/metrics").text


def test_with_a_token_every_page_and_api_call_needs_it(locked_site: Site) -> None:
    for path in ("/", "/jobs/dpo/dpo-run", "/api/v1/jobs", "/api/v1/openapi.json"):
        refused = locked_site.get(path, auth=False)
        assert 401 == refused.status_code, path
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert (
            401
            == locked_site.get(
                path, auth=False, headers={"Authorization": "Bearer wrong-token-0123456789"}
            ).status_code
        )
        assert 200 == locked_site.get(path).status_code, path
    login = locked_site.get("/", auth=False)
    assert (
        "input",
        {"type": "password", "name": "token", "autocomplete": "current-password", "required": None},
    ) in parse(login.text).tags
    # The probes and metrics stay open.
    assert 200 == locked_site.get("/healthz", auth=False).status_code


def test_a_token_in_the_address_becomes_a_cookie(locked_site: Site) -> None:
    answer = locked_site.get(f"/jobs/dpo/dpo-run?token={TOKEN}", auth=False)
    assert (303, "/jobs/dpo/dpo-run") == (answer.status_code, answer.headers["location"])
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    with_cookie = locked_site.get("/api/v1/jobs", auth=False, cookies={COOKIE: value})
    assert 200 == with_cookie.status_code
    assert 401 == locked_site.get("/", auth=False, cookies={COOKIE: "forged"}).status_code


def test_the_token_is_never_logged(locked_site: Site) -> None:
    locked_site.get(f"/?token={TOKEN}", auth=False)
    assert not [line for line in locked_site.daemon.lines if TOKEN in line]
