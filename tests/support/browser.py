"""A real headless browser for SYNC tests: Debian's Chromium, driven by Playwright's sync API.

Playwright launches the system's `chromium` by path (`executable_path`); its own browser
download cannot work here. `.ci/chromium` installs it and prints the path, which `.ci/run`
exports as `FIREWORKS_WATCHER_TEST_CHROMIUM`.

Playwright's sync API runs its own asyncio loop, in a greenlet on the test's thread, and
between two sync calls it leaves that loop marked as the thread's running loop (see
`wait_for_future` in playwright/_impl/_greenlets.py). With one browser per session that
mark would outlive the browser tests: every later async test fails ("Cannot run the event
loop while another loop is running") and BlockBuster takes every later sync test for code
on an event loop. So `browser` unmarks the loop once launched, and `playwright_turn`
(autouse) marks it again for exactly the tests that use the browser.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
from collections.abc import Callable, Iterator

import pytest
from blockbuster import BlockBuster
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

#: Where the tests find Chromium (`.ci/chromium` installs it and prints the path).
CHROMIUM_ENV = "FIREWORKS_WATCHER_TEST_CHROMIUM"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
#: For every Playwright action, navigation and `expect` (Playwright's defaults: 30 s and 5 s).
TIMEOUT_MS = 10_000
_LOOP = pytest.StashKey[asyncio.AbstractEventLoop]()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Chromium's executable: the environment variable, else `chromium` on PATH. Without one
    the test skips, with one line saying how to get one; under CI (`CI` set) it fails. A
    variable naming no executable file is a broken setup, never a reason to skip: it fails."""
    path = os.environ.get(CHROMIUM_ENV, "")
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            pytest.fail(f"{CHROMIUM_ENV}={path} is not an executable file", pytrace=False)
        return path
    path = shutil.which("chromium") or ""
    if not path:
        if os.environ.get("CI"):
            pytest.fail(
                f"CI: no Chromium: {CHROMIUM_ENV} is not set (.ci/run sets it)", pytrace=False
            )
        pytest.skip(f"no Chromium: as root, export {CHROMIUM_ENV}=$(bash .ci/chromium)")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path: str, request: pytest.FixtureRequest) -> Iterator[Browser]:
    """One headless Chromium for the session, closed at the end."""
    root = os.geteuid() == 0
    # /dev/shm is 64 MB in a default Docker container: Chromium crashes rendering there.
    # (Not --disable-crashpad-for-testing: Debian's build then aborts every navigation.)
    args = ["--disable-dev-shm-usage"]
    if root:
        # Chromium refuses to run as root with its sandbox; CI runs as root.
        args.append("--no-sandbox")
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            # Playwright turns the sandbox off unless asked: keep it for everyone but root.
            chromium_sandbox=not root,
            args=args,
        )
        loop = asyncio.get_running_loop()  # Playwright's, marked by the call above
        request.config.stash[_LOOP] = loop
        asyncio._set_running_loop(None)
        try:
            yield launched
        finally:
            asyncio._set_running_loop(loop)
            launched.close()
    asyncio._set_running_loop(None)  # stopping Playwright unmarks it; make sure


def _or_on_loop(
    loop: asyncio.AbstractEventLoop, can_block: Callable[..., bool]
) -> Callable[..., bool]:
    def predicate(*args: object, **kwargs: object) -> bool:
        return asyncio._get_running_loop() is loop or can_block(*args, **kwargs)

    return predicate


@pytest.fixture(autouse=True)
def playwright_turn(request: pytest.FixtureRequest) -> Iterator[None]:
    """Mark Playwright's loop as running for the tests using `browser`, and only for them.

    BlockBuster then sees the test's own code (a file read, a loopback server's shutdown) as
    running on that loop and fails it, yet a sync test has no loop of its own to stall:
    Playwright's is suspended whenever the test's code runs. So BlockBuster lets pass the
    calls made while Playwright's loop is the running one, and only those: it still fails
    blocking calls on any other loop, e.g. a server's under test, in its own thread.
    """
    if "browser" not in request.fixturenames:
        yield
        return
    if inspect.iscoroutinefunction(request.function):
        pytest.fail(
            "the browser fixtures are for sync tests (Playwright's sync API)", pytrace=False
        )
    request.getfixturevalue("browser")
    loop = request.config.stash[_LOOP]
    bb: BlockBuster = request.getfixturevalue("blockbuster")
    for function in bb.functions.values():
        function.can_block_predicate = _or_on_loop(loop, function.can_block_predicate)
    bb.deactivate()  # a wrapper keeps the predicate it was made with: make them again
    bb.activate()
    asyncio._set_running_loop(loop)
    try:
        yield
    finally:
        asyncio._set_running_loop(None)


@pytest.fixture
def page(browser: Browser, playwright_turn: None) -> Iterator[Page]:
    """A fresh page in a fresh context (1280x900), closed after the test."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        context.set_default_timeout(TIMEOUT_MS)
        yield context.new_page()
    finally:
        context.close()
