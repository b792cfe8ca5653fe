"""Figures for hostile text and config (issue 10, items 9, 15, 16), printed, never asserted.

    python -m tests.perf.hostile

- the peak memory and time of validating `title = "{job_id:>2000000000}"` (refused now);
- the exit code, stderr lines and time of `check` on a 5,000-level nested array;
- the size of a message rendered from a 100 KB status message, default and custom templates;
- the time `for_terminal` and `defuse_mentions` take on 100 KB of text.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from watcher.config import parse
from watcher.core.errors import ConfigError
from watcher.core.messages import render_fields
from watcher.core.text import defuse_mentions, for_terminal


def _template_validation() -> None:
    data = {
        "fireworks": {"account_id": "acme"},
        "watch": [{"jobs": ["a"]}],
        "channel": [{"name": "c", "urls": ["json://127.0.0.1/x"], "title": "{job_id:>2000000000}"}],
    }
    tracemalloc.start()
    started = time.perf_counter()
    try:
        parse(data, {})
        verdict = "accepted"
    except ConfigError as exc:
        verdict = f"refused: {exc}"
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"template {{job_id:>2000000000}}: {verdict}")
    print(f"  peak memory {peak / 1e6:.2f} MB, {elapsed * 1000:.1f} ms")


def _deep_toml() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "watcher.toml"
        path.write_text("[watcher]\nx = " + "[" * 5000 + "]" * 5000 + "\n")
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "watcher", "check", "-c", str(path)],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("FIREWORKS_")},
            check=False,
        )
        elapsed = time.perf_counter() - started
    lines = done.stderr.splitlines()
    print(f"check on a 5,000-level nested array: exit {done.returncode}, {len(lines)} line(s)")
    print(f"  {lines[0] if lines else ''}  ({elapsed:.2f} s, interpreter start included)")


def _rendered_sizes() -> None:
    huge = "<!channel> " + "x" * 100_000
    fields = {"job_id": "j", "kind": "dpo", "old_state": "RUNNING", "new_state": "FAILED"}
    fields |= {"status_message": huge, "reason": huge, "display_name": "j"}
    for name, title, body in (
        ("default templates", None, None),
        ("body = '{status_message}'", None, "{status_message}"),
        ("body = '{status_message}' x 100", None, "{status_message}" * 100),
    ):
        message = render_fields(fields, title=title, body=body)
        print(
            f"100 KB status message, {name}: title {len(message.title)} chars, "
            f"body {len(message.body)} chars"
        )


def _text_rules() -> None:
    text = ("\x1b[2J @here <!channel> \u202e ok " * 4000)[:100_000]
    for rule in (for_terminal, defuse_mentions):
        started = time.perf_counter()
        rule(text)
        print(f"{rule.__name__} on 100 KB: {(time.perf_counter() - started) * 1000:.1f} ms")


def main() -> int:
    _template_validation()
    _deep_toml()
    _rendered_sizes()
    _text_rules()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
