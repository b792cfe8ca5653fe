"""No dead code: vulture finds nothing unused in `watcher` and `fireworks_sim` beyond the
entries of `test_arch_dead.whitelist`, each with its reason (a library calls it, a user
outside the package does, a test hooks into it).

By hand: `vulture watcher fireworks_sim tests/unit/test_arch_dead.whitelist --min-confidence 60
--ignore-decorators @model_validator,@field_validator,@notify`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHITELIST = Path(__file__).with_name("test_arch_dead.whitelist")
#: 60 %: unused functions, classes, variables and attributes (100 %: unreachable code and
#: unused arguments) are all reported.
MIN_CONFIDENCE = 60
#: Methods a library calls by registration: pydantic's validators, apprise's `@notify`.
IGNORE_DECORATORS = ("@model_validator", "@field_validator", "@notify")


def vulture() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "vulture",
            "watcher",
            "fireworks_sim",
            str(WHITELIST),
            f"--min-confidence={MIN_CONFIDENCE}",
            f"--ignore-decorators={','.join(IGNORE_DECORATORS)}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_dead_code() -> None:
    """Every function, class, variable and attribute is used somewhere in the packages (a
    test using it does not count); each line printed is one to delete or, with its reason,
    to whitelist."""
    found = vulture()
    dead = found.stdout.splitlines()
    for line in dead:
        print(line)

    assert ([], "") == (dead, found.stderr.strip())
    assert 0 == found.returncode


def test_every_whitelisted_name_still_exists() -> None:
    """A whitelist entry whose code is gone is taken out with it."""
    names = re.findall(r"^(?:_\.)?(\w+)", WHITELIST.read_text(), flags=re.MULTILINE)
    sources = "\n".join(
        path.read_text()
        for package in ("watcher", "fireworks_sim")
        for path in (ROOT / package).rglob("*.py")
    )

    assert [] == [name for name in names if not re.search(rf"\b{name}\b", sources)]
