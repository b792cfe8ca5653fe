"""Schemathesis against the JSON API of a real daemon: every check it has (server errors,
status codes, content types, response schemas, rejection of bad input, unsupported methods,
stateful links from the job list to each job) over the OpenAPI document the daemon serves.

The document is written by hand (`watcher/web/openapi.json`), so this is the API checked
against its contract by a tool that did not write either.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import ServedApp
from tests.support.site import TOKEN, Site, running_site

#: Examples per operation and phase: ~1,000 requests in all, about 15 s here.
MAX_EXAMPLES = 50


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, server: ServedApp, module_env: dict[str, str]
) -> Iterator[Site]:
    with running_site(
        tmp_path_factory.mktemp("schema"), server, module_env, token=TOKEN
    ) as running:
        yield running


def schemathesis(site: Site, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "schemathesis.cli", "run",
            f"{site.base}/api/v1/openapi.json",
            "--header", f"Authorization: Bearer {TOKEN}",
            "--checks", "all",
            "--max-examples", str(MAX_EXAMPLES),
            "--seed", "20261202",
            "--report-dir", str(tmp_path),
            *args,
        ],
        check=False, capture_output=True, text=True, timeout=600,
        env={"NO_COLOR": "1", "SCHEMATHESIS_HOOKS": "", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_schemathesis_finds_no_failure(site: Site, tmp_path: Path) -> None:
    run = schemathesis(site, tmp_path)

    assert 0 == run.returncode, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
    # Every operation was tested, and the daemon survived it.
    assert "Tested: 4" in run.stdout or "Tested: 5" in run.stdout
    assert site.daemon.proc.poll() is None
    assert 200 == site.get("/readyz", auth=False).status_code
