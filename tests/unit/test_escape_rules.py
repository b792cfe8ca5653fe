"""The escaping rules themselves (issue 20, security item 4), table-driven and with hypothesis:
which links are sent, and that escaped text is never markup, whole or cut."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from apprise import NotifyFormat
from apprise.conversion.format import convert_between
from hypothesis import given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from watcher.core.markdown import unescape
from watcher.core.messages import render_fields
from watcher.core.text import escape_markdown, web_link


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)


def tags(html: str) -> set[str]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def renderings(markdown: str) -> list[str]:
    """CommonMark's HTML, and Python-Markdown's as apprise sends it to e-mail."""
    return [
        str(MarkdownIt("commonmark").render(markdown)),
        str(convert_between(NotifyFormat.MARKDOWN, NotifyFormat.HTML, markdown)),  # type: ignore[no-untyped-call]
    ]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://wandb.ai/acme/p/runs/1", "https://wandb.ai/acme/p/runs/1"),
        ("HTTP://wandb.ai/x", "HTTP://wandb.ai/x"),
        ("  https://wandb.ai/x  ", "https://wandb.ai/x"),
        ("https://wandb.ai/a(1)<b>", "https://wandb.ai/a%281%29%3Cb%3E"),
        ("https://wandb.ai/é", "https://wandb.ai/%C3%A9"),
        ("https://[::1]:9464/x", "https://[::1]:9464/x"),
        ("https://[::1", None),
        ("https://a@b@c", None),
        ("javascript:alert(1)", None),
        ("JaVaScRiPt:alert(1)//https://x", None),
        ("data:text/html,<script>alert(1)</script>", None),
        ("vbscript:msgbox", None),
        ("//evil.example/x", None),
        ("https:///no-host", None),
        ("https://", None),
        ("https://wandb.ai/a b", None),
        ("https://wandb.ai/\x00", None),
        ("", None),
    ],
)
def test_only_http_links_are_sent(url: str, expected: str | None) -> None:
    """An absolute http(s) URL with a host, percent-encoded where Markdown would read it."""
    assert expected == web_link(url)


MARKUP = st.text(alphabet="<>[]()!*_`~|\\#-+=&;:/ .\nabjvscript1@h", max_size=60)


@given(MARKUP)
def test_escaped_text_is_never_markup(text: str) -> None:
    """Whatever the text, escaped it renders as no tag, link, image, code or emphasis, in
    CommonMark and in Python-Markdown alike."""
    escaped = escape_markdown(text)
    for html in renderings(escaped):
        # Ordered lists (`1.`) and code blocks (four spaces) cannot carry a tag or a link.
        assert tags(html) <= {"p", "br", "ol", "li", "pre", "code"}, html
    assert text == unescape(escaped)


@given(st.text(alphabet="\\<ab_*", max_size=40), st.integers(min_value=1, max_value=30))
def test_a_cut_never_leaves_a_lone_backslash(text: str, limit: int) -> None:
    """Cut to a limit, escaped text still ends on whole escapes."""
    escaped = escape_markdown(text, limit)
    body = escaped.removesuffix("…")

    assert len(escaped) <= limit
    assert (len(body) - len(body.rstrip("\\"))) % 2 == 0


def test_titles_stay_plain_text() -> None:
    """The title is plain text (a subject, a push): nothing of the API's in it is escaped."""
    message = render_fields(
        {"job_id": "j", "display_name": "a_b <c> [d]", "old_state": "A", "new_state": "B"}
    )

    assert "a_b <c> [d] (j): A → B" == message.title
    assert "**a_b \\<c\\> \\[d\\]**" in message.body
