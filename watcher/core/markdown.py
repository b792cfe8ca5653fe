"""The Markdown the watcher writes, for a terminal: plain text plus style spans. Pure functions.

Messages are Markdown (`core.messages`, `core.notices`) because chat services render it; a
terminal (`console://`, `demo`, `test-notify`) does not. `to_terminal` reads the small subset
the watcher emits (`**bold**`, `` `code` ``, `[text](url)`, `- ` items, `> ` quotes, a line
that is all `**bold**` as a heading, backslash escapes) and returns the text without its marks
and the spans to style. `console_layout` lays a whole message out in few lines. An adapter
(`notify.console`) styles the spans on a TTY, or prints the text alone when piped.

Style names are plain strings (`STYLES`); nothing here is ever read as rich markup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The style names a span may carry: marks, and the tone of a message (`notify_type`).
STYLES = (
    "bold",
    "code",
    "link",
    "quote",
    "heading",
    "label",
    "info",
    "success",
    "warning",
    "failure",
)


@dataclass(frozen=True, slots=True)
class Span:
    """`style` over `text[start:end]`."""

    start: int
    end: int
    style: str


@dataclass(frozen=True, slots=True)
class Styled:
    """Text for a terminal: `text` as printed when piped, `spans` to style on a TTY."""

    text: str
    spans: tuple[Span, ...] = ()


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.size = 0

    def add(self, text: str, *styles: str) -> None:
        end = self.size + len(text)
        self.spans += [Span(self.size, end, s) for s in styles if text]
        self.parts.append(text)
        self.size = end

    def extend(self, styled: Styled, *styles: str) -> None:
        start = self.size
        self.spans += [Span(start + s.start, start + s.end, s.style) for s in styled.spans]
        self.add(styled.text, *styles)

    def build(self) -> Styled:
        return Styled("".join(self.parts), tuple(self.spans))


# `\*`, `**bold**` (no `*` right inside), `` `code` ``, `[text](url)`.
_INLINE = re.compile(
    r"\\(?P<escaped>[!-/:-@\[-`{-~])"
    r"|\*\*(?P<bold>[^*\s](?:[^*]*[^*\s])?)\*\*"
    r"|`(?P<code>[^`]+)`"
    r"|\[(?P<text>[^\]]+)\]\((?P<url>[^)\s]+)\)"
)
_HEADING = re.compile(r"^(?:#{1,6}\s+(?P<hash>.+?)\s*|\*\*(?P<bold>[^*]+)\*\*)$")


def inline(text: str) -> Styled:
    """One line's inline marks: `**a** `b` [c](u)` -> `a b c (u)` with bold, code, link spans."""
    out = _Builder()
    at = 0
    for match in _INLINE.finditer(text):
        out.add(text[at : match.start()])
        at = match.end()
        if match["escaped"] is not None:
            out.add(match["escaped"])
        elif match["bold"] is not None:
            out.extend(inline(match["bold"]), "bold")
        elif match["code"] is not None:
            out.add(match["code"], "code")
        elif match["text"] == match["url"]:
            out.add(match["url"], "link")
        else:
            out.add(match["text"], "link")
            out.add(f" ({match['url']})")
    out.add(text[at:])
    return out.build()


_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def unescape(markdown: str) -> str:
    """Markdown's backslash escapes undone (`\\<b\\>` -> `<b>`), every other mark kept."""
    return _ESCAPE.sub(r"\1", markdown)


def code_span(markdown: str) -> str:
    """Escaped text as a code span: escapes do not apply in one and only a backtick ends it,
    so it holds the text unescaped, on one line, without backticks (a job id has none)."""
    return f"`{' '.join(unescape(markdown).split()).replace('`', '')}`"


def to_terminal(markdown: str, *, indent: str = "") -> Styled:
    """A Markdown text as terminal lines: marks removed, blank lines dropped, each line
    prefixed with `indent`; `> ` quotes shown indented, a `**X**` line as a heading."""
    out = _Builder()
    for raw in markdown.splitlines():
        line = raw.strip()
        if not line:
            continue
        if out.size:
            out.add("\n")
        out.add(indent)
        if line.startswith(">"):
            out.add("  ")
            out.extend(inline(line[1:].strip()), "quote")
        elif (heading := _HEADING.match(line)) is not None:
            out.extend(inline(heading["hash"] or heading["bold"]), "heading")
        elif line.startswith(("- ", "* ")):
            out.add("- ")
            out.extend(inline(line[2:].strip()))
        else:
            out.extend(inline(line))
    return out.build()


# --- a whole message --------------------------------------------------------------------------

#: The first line of a transition's default body (`core.messages.default_body`): a move, or
#: a change of status within one state.
_MOVED = re.compile(r"\) (?:moved|status changed, still) \*\*.+\*\*\.$")
#: The details a compact transition keeps; the rest are in `status` and `history`.
_LINKS = ("W&B run", "Console")
_TONES = frozenset({"info", "success", "warning", "failure"})


def console_layout(title: str, body: str, notify_type: str) -> Styled:
    """A message in a few terminal lines: `[tone] title`, then what the title does not say.

    A transition with the default body takes two or three lines: the title, the status
    message (unless the title carries it), then the W&B and console links on one line. Its
    text from the API (the status message, the reason, the links) is shown as the API said
    it: the body escaped it (`text.escape_markdown`), and only those escapes are undone.
    Any other body (notices, a channel's own template) is rendered with `to_terminal`,
    indented, without blank lines.
    """
    out = _Builder()
    tone = notify_type if notify_type in _TONES else "info"
    out.add(f"[{notify_type}]", tone, "bold")
    out.add(" ")
    out.add(title, "bold")
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    if not lines or _MOVED.search(lines[0]) is None:
        rest = to_terminal(body, indent="  ")
        if rest.text:
            out.add("\n")
            out.extend(rest)
        return out.build()
    links: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line.startswith(">"):
            said = unescape(line[1:].strip())
            _, _, message = said.partition(": ")
            if said not in title and (not message or message not in title):
                out.add("\n  ")
                out.add(said, "quote")
            continue
        label, _, value = line.removeprefix("- ").partition(": ")
        value = unescape(value)
        if label == "Reason" and value not in title:
            out.add("\n  ")
            out.add("Reason: ", "label")
            out.add(value)
        elif label in _LINKS and value:
            links.append((label, value))
    for i, (label, url) in enumerate(links):
        out.add("\n  " if i == 0 else "  ·  ")
        out.add(f"{label}: ", "label")
        out.add(url, "link")
    return out.build()
