"""`console://` on a terminal and through a pipe (issue 13, item 4): styled with rich on a TTY,
plain text otherwise, and API text never turned into styling."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

from tests.support.terminal import run_on_a_terminal
from watcher.core.markdown import Span, Styled
from watcher.notify import console

SEND = textwrap.dedent(
    """
    import anyio
    from watcher.notify.apprise_sender import AppriseNotifier, register_console_scheme

    register_console_scheme()
    notifier = AppriseNotifier([("c", "console://")])
    body = (
        "**[bold red]x[/]** (DPO job `j1`) moved **RUNNING → CANCELLED**.\\n\\n"
        "> CANCELLED: **not bold** [bold red]y[/] \\x1b[2J\\n\\n- W&B run: https://w/r"
    )
    key = notifier.target("console://").url_key
    anyio.run(lambda: notifier.send(key, title="t: [bold red]x[/]", body=body, notify_type="warning"))
    """
)


def run_in_pty() -> str:
    """Run `SEND` with its stdout on a pseudo-terminal; what the terminal received."""
    env = {k: v for k, v in os.environ.items() if k not in {"NO_COLOR", "TERM", "FORCE_COLOR"}}
    screen = run_on_a_terminal(
        [sys.executable, "-c", SEND], env | {"TERM": "xterm-256color", "COLUMNS": "200"}
    )
    assert 0 == screen.code, screen.errors
    return screen.text


def test_a_terminal_gets_bold_and_api_text_as_written() -> None:
    """On a TTY the title is bold (ANSI), and the API's `[bold red]`, `**` and ESC stay text."""
    shown = run_in_pty()

    assert "\x1b[1m" in shown
    assert "[bold red]x[/]" in shown
    assert "**not bold** [bold red]y[/]" in shown
    assert "\\x1b[2J" in shown
    assert "\x1b[2J" not in shown


def test_a_pipe_gets_plain_text() -> None:
    """Piped, the output has no ANSI code and no Markdown mark of the watcher's own."""
    done = subprocess.run(
        [sys.executable, "-c", SEND], capture_output=True, text=True, timeout=30, check=True
    )
    expected = (
        "[warning] t: [bold red]x[/]\n"
        "  CANCELLED: **not bold** [bold red]y[/] \\x1b[2J\n"
        "  W&B run: https://w/r\n"
    )
    assert expected == done.stdout


def test_write_to_a_file_is_plain() -> None:
    """`console.write` to something that is not a TTY writes the text alone."""
    out = io.StringIO()
    console.write(Styled("a b", (Span(0, 1, "bold"),)), out)
    assert "a b\n" == out.getvalue()
