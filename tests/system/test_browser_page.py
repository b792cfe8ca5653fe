"""The status page in a real browser: Debian's headless Chromium (Playwright, `tests.support.browser`)
against a real daemon watching the simulator (`tests.support.site`), with a token set.

It sees every job with its state, a transition appear without a reload, hostile text shown as
text (and no script of it run), the token asked for and taken, and the page without
JavaScript. It saves a screenshot of the page under the test's output directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, expect

from tests.support.browser import VIEWPORT
from tests.support.servers import ServedApp
from tests.support.site import HOSTILE_MESSAGE, HOSTILE_NAME, JOBS, TOKEN, Site, running_site

#: Where a copy of the screenshot goes when set (for a closing note, or CI artefacts).
SCREENSHOT_ENV = "FIREWORKS_WATCHER_SCREENSHOT_DIR"


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, server: ServedApp, module_env: dict[str, str]
) -> Iterator[Site]:
    with running_site(
        tmp_path_factory.mktemp("browser"), server, module_env, token=TOKEN
    ) as running:
        yield running


def open_page(page: Page, site: Site, path: str = "/") -> list[Dialog]:
    """Open `path` with the token (it becomes a cookie); return the dialogs a script opens."""
    dialogs: list[Dialog] = []

    def seen(dialog: Dialog) -> None:
        dialogs.append(dialog)
        dialog.dismiss()

    page.on("dialog", seen)
    answer = page.goto(f"{site.base}{path}?token={TOKEN}")
    assert answer is not None
    assert 200 == answer.status
    assert page.url == f"{site.base}{path}"  # the token left the address bar
    return dialogs


def state_badge(page: Page, job: str) -> Locator:
    return page.locator(f'tr[data-job="{job}"] td:nth-child(2) .badge').first


def test_every_job_with_its_state_and_the_hostile_text_as_text(
    page: Page, site: Site, tmp_path: Path
) -> None:
    dialogs = open_page(page, site)

    for kind, _, job_id, state in JOBS:
        expect(page.locator(f'tr[data-job="{kind}/{job_id}"]')).to_be_visible()
        expect(state_badge(page, f"{kind}/{job_id}")).to_have_text(state)
    expect(page.locator("#conditions")).to_contain_text("pending_too_long")
    expect(page.locator("header.bar")).to_contain_text("leader")
    row = page.locator('tr[data-job="evaluation/eval-hostile"]')
    expect(row).to_contain_text(HOSTILE_MESSAGE)
    expect(row).to_contain_text(HOSTILE_NAME)
    assert 0 == page.locator("main img").count()
    assert 1 == page.locator("script").count()  # the page's own, by URL
    # The live script runs: it says when it last asked.
    expect(page.locator("[data-live]")).to_contain_text("live", timeout=10_000)
    assert [] == dialogs

    save_screenshot(page, tmp_path / "status-page.png")


def save_screenshot(page: Page, shot: Path) -> None:
    """A PNG of the whole page at `shot` (copied to `$FIREWORKS_WATCHER_SCREENSHOT_DIR` too)."""
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if target := os.environ.get(SCREENSHOT_ENV):
        shutil.copy(shot, Path(target) / shot.name)


def test_a_transition_appears_without_a_reload(page: Page, site: Site, tmp_path: Path) -> None:
    open_page(page, site)
    badge = state_badge(page, "dpo/dpo-run")
    expect(badge).to_have_text("RUNNING")
    page.evaluate("window.stillThisPage = true")

    site.sim.set_state("dpo-run", "FAILED", status_code="INTERNAL", status_message="OOM at step 9")

    # Within one poll (0.5 s) and one refresh (1 s), with room for a loaded machine.
    expect(badge).to_have_text("FAILED", timeout=10_000)
    row = page.locator('tr[data-job="dpo/dpo-run"]')
    expect(row).to_contain_text("OOM at step 9")  # the reason
    expect(row).to_contain_text("RUNNING → FAILED")  # the last move
    assert page.evaluate("window.stillThisPage") is True  # the same document: no reload
    save_screenshot(page, tmp_path / "status-page-after-transition.png")

    # The job's page draws the move on its timeline.
    page.goto(f"{site.base}/jobs/dpo/dpo-run")
    expect(page.locator("svg.timeline rect.band.m-failure")).to_have_count(1)
    expect(page.locator("svg.timeline line.mark")).to_have_count(1)
    expect(page.locator("#history")).to_contain_text("RUNNING → FAILED")


def test_the_token_is_asked_for_and_taken(browser: Browser, site: Site) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        answer = page.goto(f"{site.base}/")
        assert answer is not None
        assert 401 == answer.status
        expect(page.locator("h1")).to_have_text("Token required")
        page.locator('input[name="token"]').fill("not-the-token-0123456789")
        page.locator('button[type="submit"]').click()
        expect(page.locator("h1")).to_have_text("Token required")

        page.locator('input[name="token"]').fill(TOKEN)
        page.locator('button[type="submit"]').click()
        expect(page.locator("tr.job")).to_have_count(len(JOBS))
        assert TOKEN not in page.url
        [cookie] = context.cookies()
        assert (True, "Strict") == (cookie["httpOnly"], cookie["sameSite"])
        assert TOKEN not in cookie["value"]
    finally:
        context.close()


def test_the_page_works_without_javascript(browser: Browser, site: Site) -> None:
    context = browser.new_context(viewport=VIEWPORT, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{site.base}/?token={TOKEN}")
        expect(page.locator("tr.job")).to_have_count(len(JOBS))
        expect(page.locator("[data-live]")).to_contain_text("updates every")
        assert 1 == page.locator('noscript meta[http-equiv="refresh"]').count()
        page.goto(f"{site.base}/jobs/sft/sft-run")
        expect(page.locator("svg.timeline rect.band")).not_to_have_count(0)
    finally:
        context.close()
