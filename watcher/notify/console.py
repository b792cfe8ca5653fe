"""`console://`: notifications printed to stdout, styled on a terminal, plain when piped.

The layout is `core.markdown.console_layout`'s; this module only turns its spans into rich
styles. Text is handed to rich as `Text`, never as markup, so a `[bold red]` from the API is
printed as it is.
"""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.text import Text

from watcher.core.markdown import Styled

#: How each span style of `core.markdown` looks on a terminal.
RICH_STYLES = {
    "bold": "bold",
    "code": "cyan",
    "link": "underline blue",
    "quote": "italic",
    "heading": "bold underline",
    "label": "dim",
    "info": "blue",
    "success": "green",
    "warning": "yellow",
    "failure": "red",
}


def write(styled: Styled, out: TextIO) -> None:
    """Print `styled` and a newline to `out`: with its styles on a TTY, as plain text otherwise."""
    if not out.isatty():
        out.write(f"{styled.text}\n")
        out.flush()
        return
    text = Text(styled.text)
    for span in styled.spans:
        text.stylize(RICH_STYLES.get(span.style, ""), span.start, span.end)
    # soft_wrap: the terminal wraps long lines, rich does not cut or re-flow them.
    console = Console(file=out, highlight=False, markup=False, emoji=False, soft_wrap=True)
    # Rendered, then written through `out` in one piece: under `watch`'s live line, `out` is
    # rich's proxy of stdout, which clears the live line, prints and draws it again (a Console
    # writes past that proxy, onto the live line).
    with console.capture() as captured:
        console.print(text)
    out.write(captured.get())
    out.flush()
