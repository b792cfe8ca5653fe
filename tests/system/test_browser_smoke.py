"""The browser fixtures work: Chromium loads a page over loopback, runs its script (or, in a
context without JavaScript, does not), and takes a screenshot; async tests still run after."""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import VIEWPORT

HTML = b"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Smoke</title></head>
<body>
<h1 id="status">no script ran</h1>
<noscript><p id="noscript">JavaScript is off</p></noscript>
<script>
window.addEventListener("load", () => {
  document.getElementById("status").textContent = "script ran";
});
</script>
</body>
</html>
"""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = self.path == "/"
        body = HTML if found else b"not found\n"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8" if found else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: no line on stderr per request."""


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The page above, served on a free loopback port from a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_script_runs_and_screenshot(
    page: Page, browser: Browser, site: str, tmp_path: Path
) -> None:
    page.goto(site)
    expect(page.locator("#status")).to_have_text("script ran")
    expect(page.locator("#noscript")).to_have_count(0)

    shot = tmp_path / "smoke.png"
    page.screenshot(path=shot)
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"])
    assert len(data) > 6_000  # a blank page's is 5.3 kB here; with the heading, 8 kB

    context = browser.new_context(java_script_enabled=False, viewport=VIEWPORT)
    try:
        no_js = context.new_page()
        no_js.goto(site)
        expect(no_js.locator("#noscript")).to_have_text("JavaScript is off")
        expect(no_js.locator("#status")).to_have_text("no script ran")
    finally:
        context.close()


async def test_async_tests_still_run_after_browser_tests() -> None:
    """Playwright's loop, marked running between its sync calls, was unmarked after them."""
    assert asyncio.get_running_loop() is not None
    await asyncio.sleep(0)
