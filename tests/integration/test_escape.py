"""API text reaches no channel as markup (issue 20, security item 4): a status message or a
display name holding `<script>`, `<img onerror>`, a `javascript:` link or a link disguised as
another URL arrives as text, in e-mail (a real SMTP server on loopback, the MIME message
parsed), in Markdown (CommonMark, Python-Markdown as apprise renders e-mail, Slack's mrkdwn as
apprise writes it) and on a terminal; a W&B URL is sent only when it is http(s).
"""

from __future__ import annotations

import email
import logging
import queue
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Self

import anyio
import pytest
from aiosmtpd.controller import Controller
from apprise import NotifyFormat
from apprise.conversion.format import convert_between
from apprise.plugins.slack import NotifySlack
from markdown_it import MarkdownIt

from fireworks_sim import Simulator
from tests.support.daemon import write_config
from tests.support.servers import JsonReceiver, free_tcp_port
from watcher.cli import main
from watcher.core.markdown import console_layout
from watcher.core.messages import render
from watcher.core.model import JobKind, JobRef, JobSnapshot, Transition
from watcher.core.notices import reminder_notice
from watcher.notify.apprise_sender import AppriseNotifier

AT = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
SCRIPT = '<script>alert("owned")</script>'
IMAGE = "<img src=x onerror=alert(2)>"
JS_ANCHOR = '<a href="javascript:alert(3)">details</a>'
DISGUISED = "[https://app.fireworks.ai/login](https://evil.example/phish)"
HOSTILE_MESSAGE = f"{SCRIPT} {IMAGE} {JS_ANCHOR} {DISGUISED} ![x](https://evil.example/t.png)"
HOSTILE_NAME = f"{DISGUISED} <b onmouseover=alert(4)>run</b>"
JS_WANDB = "javascript:alert(document.cookie)//https://wandb.ai/acme/p/runs/1"


# --- what counts as inert ---------------------------------------------------------------------


class _Html(HTMLParser):
    """Every tag with its attributes, each anchor's text, and the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.anchors: list[tuple[str, str]] = []
        self.text: list[str] = []
        self._href: str | None = None
        self._anchor_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "a":
            self._href, self._anchor_text = dict(attrs).get("href") or "", []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.anchors.append((self._href, "".join(self._anchor_text).strip()))
            self._href = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._href is not None:
            self._anchor_text.append(data)


#: The tags the watcher's own Markdown becomes: anything else came from the API.
OWN_TAGS = frozenset({"p", "strong", "em", "code", "blockquote", "ul", "li", "br", "h1", "a"})
URL_LIKE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|www\.)", re.IGNORECASE)
HTTP = re.compile(r"^https?://[^\s\"'<>]+$", re.IGNORECASE)
#: A live script or image tag, or a handler or `javascript:` inside any tag.
LIVE = re.compile(r"<\s*(?:script|img)|<[^>]*(?:\son\w+\s*=|javascript:)", re.IGNORECASE)


def assert_inert(html: str) -> str:
    """No tag but our own, no event handler, no link but an http(s) one, no anchor whose
    text is another URL than its target; returns the visible text."""
    parsed = _Html()
    parsed.feed(html)
    assert {tag for tag, _ in parsed.tags} <= OWN_TAGS, html
    assert [] == [(t, a) for t, attrs in parsed.tags for a in attrs if a.lower().startswith("on")]
    for href, text in parsed.anchors:
        # "": a template's own link, to a W&B URL that was not http(s), goes nowhere.
        assert href == "" or HTTP.match(href), html
        assert not URL_LIKE.match(text) or text == href, f"{text!r} links to {href!r}"
    return "".join(parsed.text)


def hostile_transition(**details: str) -> Transition:
    ref = JobRef(JobKind.DPO, "hostile-run")
    before = JobSnapshot(ref=ref, account_id="acme", state="RUNNING")
    fields = {
        "status_code": "INTERNAL",
        "status_message": HOSTILE_MESSAGE,
        "display_name": HOSTILE_NAME,
        "create_time": "2026-12-02T09:00:00Z",
        "completed_time": "2026-12-02T10:00:00Z",
    }
    after = JobSnapshot(ref=ref, account_id="acme", state="FAILED", **(fields | details))
    return Transition(old=before, new=after, observed_at=AT)


# --- a real SMTP server on loopback ------------------------------------------------------------


class Mailbox:
    """An SMTP server on 127.0.0.1 (aiosmtpd, its own thread) keeping every message."""

    def __init__(self) -> None:
        self._arrived: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.port = free_tcp_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self._arrived.put(bytes(envelope.content))
        return "250 OK"

    def url(self) -> str:
        """An apprise `mailto://` URL of this server: plain SMTP, no login."""
        return f"mailto://127.0.0.1:{self.port}?from=watcher@example.com&to=ops@example.com"

    def next(self, timeout: float = 20.0) -> EmailMessage:
        """The next message that arrives, parsed; fails after `timeout` seconds."""
        try:
            raw = self._arrived.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no e-mail arrived within {timeout} s")
        return email.message_from_bytes(raw, policy=policy.default)

    def __enter__(self) -> Self:
        self._level = _SMTP_LOG.level
        _SMTP_LOG.setLevel(logging.WARNING)  # a line per connection otherwise
        self._controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._controller.stop()
        _SMTP_LOG.setLevel(self._level)


_SMTP_LOG = logging.getLogger("mail.log")


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with Mailbox() as box:
        yield box


def html_and_text(message: EmailMessage) -> tuple[str, str]:
    html = message.get_body(("html",))
    plain = message.get_body(("plain",))
    assert html is not None
    assert plain is not None
    return str(html.get_content()), str(plain.get_content())


def send(url: str, title: str, body: str) -> None:
    """Send one message through the watcher's apprise sender, as the daemon does."""
    notifier = AppriseNotifier([("channel[0].urls[0]", url)])
    key = notifier.target(url).url_key

    async def go() -> None:
        result = await notifier.send(key, title=title, body=body, notify_type="failure")
        assert "delivered" == result.outcome.value, result.detail

    anyio.run(go)


def test_mail_from_the_daemon_shows_hostile_api_text_as_text(
    env: None,
    sim: Simulator,
    mailbox: Mailbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`once` against the simulator: a job's hostile display name and status message reach a
    real SMTP server as text. The HTML part holds no tag of theirs, no handler, no
    `javascript:` link, no disguised link; a reader sees the characters the API sent."""
    config = str(write_config(tmp_path, [mailbox.url()], poll=1, budget=None, name="mail"))
    sim.add_job("job-a", state="RUNNING", display_name=HOSTILE_NAME)
    assert 0 == main(["once", "-c", config])
    sim.set_state("job-a", "FAILED", status_code="INTERNAL", status_message=HOSTILE_MESSAGE)
    assert 0 == main(["once", "-c", config])
    capsys.readouterr()

    message = mailbox.next()
    html, plain = html_and_text(message)
    shown = assert_inert(html)

    for text in (SCRIPT, IMAGE, JS_ANCHOR, DISGUISED, HOSTILE_NAME):
        assert text in shown
    assert LIVE.search(html) is None, html
    assert SCRIPT in plain
    # The subject is a header: plain text, as the API said it.
    assert str(message["Subject"]).startswith(f"{HOSTILE_NAME} (job-a): RUNNING → FAILED")


def test_mail_never_carries_a_javascript_wandb_link(mailbox: Mailbox) -> None:
    """A `javascript:` W&B URL is dropped from the message (the page drops it too); an http(s)
    one is sent as one link, whatever characters it holds."""
    send(mailbox.url(), *_message(hostile_transition(wandb_url=JS_WANDB)))
    html, plain = html_and_text(mailbox.next())
    shown = assert_inert(html)

    assert LIVE.search(html) is None, html
    assert "W&B run" not in shown
    assert "W&B run" not in plain

    odd = 'https://wandb.ai/acme/p/runs/1?x=")<b>[y](javascript:z)'
    send(mailbox.url(), *_message(hostile_transition(wandb_url=odd)))
    html, _ = html_and_text(mailbox.next())
    shown = assert_inert(html)
    encoded = "https://wandb.ai/acme/p/runs/1?x=%22%29%3Cb%3E%5By%5D%28javascript:z%29"
    assert f"W&B run: {encoded}" in shown


def _message(transition: Transition) -> tuple[str, str]:
    message = render(transition)
    return message.title, message.body


# --- Markdown targets --------------------------------------------------------------------------


def _commonmark(markdown: str) -> str:
    return str(MarkdownIt("commonmark").render(markdown))


def _python_markdown(markdown: str) -> str:
    # What apprise sends an HTML service (e-mail) for a Markdown body.
    return str(convert_between(NotifyFormat.MARKDOWN, NotifyFormat.HTML, markdown))  # type: ignore[no-untyped-call]


RENDERERS = [
    pytest.param(_commonmark, id="commonmark"),
    pytest.param(_python_markdown, id="apprise-html"),
]


def bodies() -> list[str]:
    """Markdown bodies that carry the hostile text: the default, a channel's own template
    (`{wandb_url}` inside its link), and a reminder notice."""
    transition = hostile_transition(wandb_url=JS_WANDB)
    template = "{display_name}: {status_message}\n\n[W&B]({wandb_url}) {reason}"
    job = transition.new
    reminder = reminder_notice(
        job.ref.key, job, what="FAILED", since=AT, now=AT, channel="team"
    ).message.body
    return [render(transition).body, render(transition, body=template).body, reminder]


@pytest.mark.parametrize("to_html", RENDERERS)
def test_markdown_bodies_render_api_text_as_text(to_html: Any) -> None:
    """Chat services render the body as Markdown: the API's text is never a tag, a handler,
    an image or a link there (a template's own link to a non-http W&B URL goes nowhere)."""
    for body in bodies():
        html = to_html(body)
        shown = assert_inert(html)
        assert LIVE.search(html) is None, html
        assert SCRIPT in shown


def test_slack_gets_no_anchor_and_no_mention_from_the_api() -> None:
    """Slack's mrkdwn (as apprise writes it for our Markdown) holds no `<url|text>` anchor, no
    `<!channel>` and no raw `<` from the API: `&lt;` instead."""
    transition = hostile_transition(status_message=f"<!channel> <https://evil.example|ok> {SCRIPT}")
    slack = NotifySlack._commonmark_to_slack(render(transition).body)  # type: ignore[no-untyped-call]

    assert "<" not in slack
    assert "&lt;script&gt;" in slack


def test_a_title_a_service_reads_as_markdown_is_escaped(receiver: JsonReceiver) -> None:
    """Rocket.Chat puts the title into its Markdown text: the API's text in it is escaped
    there. A service with a title of its own (json://, e-mail) gets it as plain text."""
    title, body = _message(hostile_transition())
    rocket = f"rocket://hook%2Ftoken@127.0.0.1:{receiver.port}/%23ops"
    send(rocket, title, body)
    send(receiver.url(), title, body)
    posted, plain = receiver.wait_for(2)

    assert_inert(_commonmark(posted["text"]))
    assert title == plain["title"]


# --- text and the rules themselves ------------------------------------------------------------


def test_a_terminal_shows_api_text_as_the_api_said_it() -> None:
    """`console://`: what the body escaped reads as the API's own characters again."""
    message = render(hostile_transition())
    shown = console_layout(message.title, message.body, "failure").text

    assert HOSTILE_MESSAGE in shown
    assert "\\<" not in shown
