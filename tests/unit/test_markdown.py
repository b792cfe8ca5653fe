"""`core.markdown`: the watcher's Markdown as terminal text plus style spans (issue 13, item 4)."""

from __future__ import annotations

import pytest

from watcher.core.markdown import STYLES, Span, Styled, console_layout, inline, to_terminal
from watcher.core.messages import render_fields
from watcher.core.text import for_terminal


def styled(result: Styled) -> list[tuple[str, str]]:
    """Each span as (styled text, style), for readable assertions."""
    return [(result.text[s.start : s.end], s.style) for s in result.spans]


@pytest.mark.parametrize(
    ("markdown", "text", "spans"),
    [
        pytest.param("plain", "plain", [], id="plain"),
        pytest.param("a **b** c", "a b c", [("b", "bold")], id="bold"),
        pytest.param("`id-1`", "id-1", [("id-1", "code")], id="code"),
        pytest.param(
            "**x** (DPO job `j`) moved **A → B**.",
            "x (DPO job j) moved A → B.",
            [("x", "bold"), ("j", "code"), ("A → B", "bold")],
            id="transition-line",
        ),
        pytest.param("[W&B](https://w/r)", "W&B (https://w/r)", [("W&B", "link")], id="link"),
        pytest.param(
            "[https://w](https://w)", "https://w", [("https://w", "link")], id="bare-link"
        ),
        pytest.param("**a `b`**", "a b", [("b", "code"), ("a b", "bold")], id="code-in-bold"),
        pytest.param(r"\*\*x\*\* \`y\`", "**x** `y`", [], id="escaped"),
        pytest.param("2 ** 3 and a*b", "2 ** 3 and a*b", [], id="lone-stars"),
        pytest.param("****", "****", [], id="mask"),
        pytest.param("`unclosed", "`unclosed", [], id="unclosed-code"),
        pytest.param("[bold red]x[/]", "[bold red]x[/]", [], id="rich-markup-is-text"),
        pytest.param(r"C:\x1b\u202e", r"C:\x1b\u202e", [], id="terminal-escapes-kept"),
        pytest.param("日本 **語**", "日本 語", [("語", "bold")], id="unicode"),
    ],
)
def test_inline(markdown: str, text: str, spans: list[tuple[str, str]]) -> None:
    """Inline marks become spans; anything else is text as written."""
    result = inline(markdown)
    assert (text, spans) == (result.text, styled(result))


@pytest.mark.parametrize(
    ("markdown", "text", "spans"),
    [
        pytest.param("a\n\n\nb", "a\nb", [], id="blank-lines-dropped"),
        pytest.param(
            "> quoted `c`", "  quoted c", [("c", "code"), ("quoted c", "quote")], id="quote"
        ),
        pytest.param("- Label: v\n* other", "- Label: v\n- other", [], id="items"),
        pytest.param(
            "**Summary**",
            "Summary",
            [("Summary", "heading")],
            id="bold-heading",
        ),
        pytest.param("## Title", "Title", [("Title", "heading")], id="hash-heading"),
        pytest.param("", "", [], id="empty"),
    ],
)
def test_to_terminal(markdown: str, text: str, spans: list[tuple[str, str]]) -> None:
    """Block marks (quotes, items, headings) are laid out as lines without their marks."""
    result = to_terminal(markdown)
    assert (text, spans) == (result.text, styled(result))


def fields(**over: str) -> dict[str, str]:
    base = {
        "job_id": "j1",
        "display_name": "Nice run",
        "kind": "dpo",
        "old_state": "RUNNING",
        "new_state": "FAILED",
        "status_code": "INTERNAL",
        "status_message": "CUDA out of memory",
        "wandb_url": "https://wandb.ai/e/p/runs/j1",
        "console_url": "https://app.fireworks.ai/x",
        "base_model": "accounts/fireworks/models/m",
        "dataset": "accounts/a/datasets/d",
        "duration": "9s",
    }
    return base | over


def layout(**over: str) -> Styled:
    message = render_fields(fields(**over))
    tone = "failure" if fields(**over)["new_state"] == "FAILED" else "info"
    body = "\n".join(for_terminal(line) for line in message.body.splitlines())
    return console_layout(for_terminal(message.title), body, tone)


def test_a_failure_takes_two_lines() -> None:
    """Title with its reason, then the links: the status message is not repeated."""
    expected = (
        "[failure] Nice run (j1): RUNNING → FAILED: CUDA out of memory\n"
        "  W&B run: https://wandb.ai/e/p/runs/j1  ·  Console: https://app.fireworks.ai/x"
    )
    assert expected == layout().text


def test_a_status_message_the_title_lacks_gets_its_line() -> None:
    """A move that is not a failure shows its status message under the title."""
    result = layout(new_state="CANCELLED", status_code="CANCELLED", status_message="by ann")
    assert ["[info] Nice run (j1): RUNNING → CANCELLED", "  CANCELLED: by ann"] == (
        result.text.splitlines()[:2]
    )
    assert ("CANCELLED: by ann", "quote") in styled(result)


@pytest.mark.parametrize(
    "hostile",
    ["**x**", "`x`", "[bold red]x[/]", "[t](https://evil)", r"\*x\*", "> x", "- x"],
)
def test_api_text_never_styles_itself(hostile: str) -> None:
    """Markdown or rich markup in the display name or status message is shown as written:
    the only spans are the watcher's own (the tone, the title, labels, links)."""
    result = layout(
        display_name=hostile,
        new_state="CANCELLED",
        status_message=f"said {hostile}",
        status_code="OK",
    )
    assert f"] {hostile} (j1)" in result.text
    assert f"\n  said {hostile}\n" in result.text
    allowed = {"info", "bold", "quote", "label", "link"}
    assert {s.style for s in result.spans} <= allowed
    title_end = result.text.index("\n")
    for span in result.spans:
        if span.style == "bold":
            assert (0, title_end) == (span.start, span.end) or span.end <= title_end


def test_other_bodies_are_rendered_whole() -> None:
    """A notice (not a transition) is rendered as Markdown, indented, without blank lines."""
    result = console_layout("stalled", "**j1** is stalled: no progress.\n\n- Since: 1h", "warning")
    assert "[warning] stalled\n  j1 is stalled: no progress.\n  - Since: 1h" == result.text
    assert ("j1", "bold") in styled(result)


def test_styles_are_known() -> None:
    """Every span style is one the adapter maps (`notify.console.RICH_STYLES`)."""
    from watcher.notify.console import RICH_STYLES

    assert set(STYLES) == set(RICH_STYLES)
    assert Span(0, 1, "bold") == Span(0, 1, "bold")
