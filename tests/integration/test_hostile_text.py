"""Hostile text from the API and the config (issue 10, items 9, 15, 16): terminal controls never
reach a terminal, mentions never ping a channel, oversized text is cut in messages (and kept
whole in the history), and a bad config is one line and exit 2, whatever it holds."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import tracemalloc
from pathlib import Path

import pytest
import structlog

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT
from tests.support.daemon import run_watcher, write_config
from tests.support.servers import JsonReceiver
from watcher import logs
from watcher.cli import main
from watcher.config import MAX_CONFIG_BYTES, parse
from watcher.core.errors import ConfigError
from watcher.core.messages import BODY_LIMIT, FIELD_LIMIT, TITLE_LIMIT, render_fields
from watcher.core.text import ZERO_WIDTH_SPACE, cap, defuse_mentions, for_terminal
from watcher.notify.apprise_sender import AppriseNotifier

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

ZW = ZERO_WIDTH_SPACE

# --- the pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("plain text", "plain text", id="plain"),
        pytest.param("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H", id="screen-clear"),
        pytest.param("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07", id="osc-title"),
        pytest.param("ok\rFAILED", "ok FAILED", id="carriage-return"),
        pytest.param("a\n\n\tb", "a b", id="newlines-tabs"),
        pytest.param("nul\x00here", "nul\\x00here", id="nul"),
        pytest.param("del\x7f", "del\\x7f", id="del"),
        pytest.param("c1\x9b2J", "c1\\x9b2J", id="c1-csi"),
        pytest.param("abc\u202edcba", "abc\\u202edcba", id="rtl-override"),
        pytest.param("\u2066iso\u2069", "\\u2066iso\\u2069", id="bidi-isolate"),
        pytest.param("\u200fmark", "\\u200fmark", id="rtl-mark"),
        pytest.param("line\u2028sep", "line sep", id="line-separator"),
        pytest.param("résumé → 完了", "résumé → 完了", id="unicode-kept"),
    ],
)
def test_for_terminal(text: str, expected: str) -> None:
    """Controls are shown escaped; cursor-moving whitespace becomes one space."""
    assert expected == for_terminal(text)
    assert for_terminal(text).isprintable()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("<!channel> down", f"<{ZW}!channel> down", id="slack-channel"),
        pytest.param("<!here|here>", f"<{ZW}!here|here>", id="slack-here-label"),
        pytest.param("<!everyone>", f"<{ZW}!everyone>", id="slack-everyone"),
        pytest.param("<!subteam^S1>", f"<{ZW}!subteam^S1>", id="slack-group"),
        pytest.param("ping <@U123>", f"ping <{ZW}@U123>", id="slack-user"),
        pytest.param("<@&42> <@!7>", f"<{ZW}@&42> <{ZW}@!7>", id="discord-role-user"),
        pytest.param("@everyone @here", f"@{ZW}everyone @{ZW}here", id="discord-broadcast"),
        pytest.param("@Channel @ALL @room", f"@{ZW}Channel @{ZW}ALL @{ZW}room", id="case"),
        pytest.param("<at>Ann</at>", f"<{ZW}at>Ann</at>", id="teams"),
        pytest.param("ops@example.com", "ops@example.com", id="email-kept"),
        pytest.param("@alice @herein", "@alice @herein", id="person-and-word-kept"),
        pytest.param("a < b, 1<2", "a < b, 1<2", id="less-than-kept"),
    ],
)
def test_defuse_mentions(text: str, expected: str) -> None:
    """Group and user mentions get a zero-width space; other text is untouched; idempotent."""
    assert expected == defuse_mentions(text)
    assert expected == defuse_mentions(defuse_mentions(text))


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [("abc", 3, "abc"), ("abcd", 3, "ab…"), ("", 1, ""), ("ab", 1, "…")],
)
def test_cap(text: str, limit: int, expected: str) -> None:
    """Cut to the limit, the cut marked."""
    assert expected == cap(text, limit)


def event(**fields: str) -> dict[str, str]:
    base = {"job_id": "j", "display_name": "j", "kind": "dpo", "old_state": "RUNNING"}
    return base | {"new_state": "FAILED"} | fields


@pytest.mark.parametrize(
    ("title", "body"),
    [
        pytest.param(None, None, id="defaults"),
        pytest.param("{status_message}", "{status_message}", id="one-field"),
        pytest.param("{status_message}" * 50, "{reason}{status_message}" * 50, id="many-fields"),
        pytest.param("{display_name:>1000}" * 10, "{status_message:<1000}" * 100, id="widths"),
    ],
)
def test_rendered_message_is_bounded(title: str | None, body: str | None) -> None:
    """Whatever the templates, a 100 KB API text renders within the title and body limits."""
    huge = "x" * 100_000
    message = render_fields(
        event(status_message=huge, reason=huge, display_name=huge), title=title, body=body
    )

    assert len(message.title) <= TITLE_LIMIT
    assert len(message.body) <= BODY_LIMIT
    assert "x" * 100 in message.body


def test_mentions_defused_in_fields_not_in_templates() -> None:
    """The API's text is defused; the channel's own template text is the user's to choose."""
    message = render_fields(
        event(status_message="<!channel> @here"), title="<!here> {status_message}", body="@here"
    )

    assert f"<!here> <{ZW}!channel> @{ZW}here" == message.title
    assert "@here" == message.body


# --- template and config bounds (item 9) --------------------------------------------------------


def minimal(**channel: object) -> dict[str, object]:
    return {
        "fireworks": {"account_id": ACCOUNT},
        "watch": [{"jobs": ["a"]}],
        "channel": [{"name": "c", "urls": ["json://127.0.0.1/x"], **channel}],
    }


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        pytest.param("{job_id:>2000000000}", "a width may be at most 1000", id="huge-width"),
        pytest.param("{job_id:0000000099999}", "a width may be at most 1000", id="zeros"),
        pytest.param("{job_id:x^" + "9" * 40 + "}", "a width may be at most 1000", id="digits"),
        pytest.param("{job_id:>{epoch}}", "may not hold a field", id="width-from-the-api"),
        pytest.param("{job_id}" * 101, "at most 100 fields", id="too-many-fields"),
        pytest.param("x" * 10_001, "at most 10,000 characters", id="too-long"),
    ],
)
def test_template_sizes_are_refused_without_rendering(template: str, problem: str) -> None:
    """A template that would render huge is one ConfigError line, and costs no memory."""
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as caught:
            parse(minimal(title=template), {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert problem in str(caught.value)
    assert "channel[0].title" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert peak < 5_000_000


DEEP = 5000


@pytest.mark.parametrize(
    "document",
    [
        pytest.param("[watcher]\nx = " + "[" * DEEP + "]" * DEEP + "\n", id="nested-arrays"),
        pytest.param("[watcher]\nx = " + "{a=" * DEEP + "1" + "}" * DEEP + "\n", id="inline"),
        pytest.param("[watcher." + ".".join(["a"] * DEEP) + "]\nx = 1\n", id="dotted-tables"),
        pytest.param("[watcher]\npoll_interval = " + "9" * 5000 + "\n", id="huge-integer"),
        pytest.param("# " + "x" * (MAX_CONFIG_BYTES + 10) + "\n", id="huge-file"),
    ],
)
def test_bad_toml_is_one_line_and_exit_2(
    document: str, tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    """`check` on a hostile file: exit 2 and one line on stderr, never a traceback."""
    config = tmp_path / "watcher.toml"
    config.write_text(document)

    done = run_watcher("check", "-c", str(config), env=daemon_env)

    assert 2 == done.returncode, done.stderr[-500:]
    assert 1 == len(done.stderr.splitlines()), done.stderr[-500:]
    assert done.stderr.startswith("fireworks-watcher: error: ")


# --- through the command line and a real channel (items 15, 16) --------------------------------

HOSTILE = [
    pytest.param("\x1b[2J\x1b[3J\x1b[H", id="screen-clear"),
    pytest.param("\x1b]0;owned\x07title", id="osc-title"),
    pytest.param("done\rCOMPLETED", id="carriage-return"),
    pytest.param("nul\x00bel\x07", id="nul-bel"),
    pytest.param("gnp.\u202eexe", id="rtl-override"),
    pytest.param("\x9b31mred", id="c1-csi"),
]


def config_file(tmp_path: Path, receiver: JsonReceiver, channel: str = "") -> Path:
    return write_config(tmp_path, [receiver.url()], poll=1, budget=None, channel=channel)


def printable(text: str) -> bool:
    return all(line.isprintable() for line in text.split("\n"))


@pytest.mark.parametrize("hostile", HOSTILE)
def test_watch_prints_no_control_characters(
    hostile: str, env: None, sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """`watch` shows the API's status message escaped: no byte of it acts on the terminal."""
    sim.add_job("job-w", state="PENDING")
    sim.script("job-w", [(0.2, "RUNNING", "OK", hostile), (0.4, "FAILED", "INTERNAL", hostile)])

    code = main(["watch", "job-w", "--interval", "0.1"])
    out = capsys.readouterr().out

    assert 1 == code
    assert "FAILED (INTERNAL: " in out  # however many steps a loaded machine lets it see
    assert printable(out)
    assert for_terminal(hostile) in out


@pytest.mark.parametrize("hostile", HOSTILE)
def test_status_prints_no_control_characters(
    hostile: str,
    env: None,
    sim: Simulator,
    receiver: JsonReceiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`status` escapes what the API said; `status --json` keeps it exact (JSON escapes it)."""
    config = str(config_file(tmp_path, receiver))
    sim.add_job("job-a", state="RUNNING")
    main(["once", "-c", config])
    sim.set_state("job-a", "FAILED", status_code="INTERNAL", status_message=hostile)
    receiver.status = 503  # an undelivered row too, with the receiver's refusal
    main(["once", "-c", config])
    capsys.readouterr()

    main(["status", "-c", config])
    text = capsys.readouterr().out
    main(["status", "--json", "-c", config])
    raw = capsys.readouterr().out

    assert printable(text)
    assert for_terminal(hostile) in text
    assert "1 undelivered" in text
    assert raw.isascii()
    assert hostile == json.loads(raw)["jobs"][0]["status_message"]


def test_channel_gets_text_with_mentions_defused_and_capped(
    env: None,
    sim: Simulator,
    receiver: JsonReceiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real apprise post of a 100 KB status message full of mentions: the body is within
    BODY_LIMIT, no mention survives (the body is Markdown: the API's `<` is escaped too), the
    channel's own `<!here>` does, and the history keeps the text as stored: its first
    FIELD_LIMIT characters (the state file is bounded)."""
    config = str(config_file(tmp_path, receiver, 'body = "<!here> {status_message}"'))
    hostile = "<!channel> @everyone <@U0123> " + "y" * 100_000
    sim.add_job("job-a", state="RUNNING")
    main(["once", "-c", config])
    sim.set_state("job-a", "FAILED", status_code="INTERNAL", status_message=hostile)
    main(["once", "-c", config])
    capsys.readouterr()

    (message,) = receiver.wait_for(1)
    body, title = message["message"], message["title"]

    assert body.startswith("<!here> ")
    assert len(body) <= BODY_LIMIT
    assert len(body) <= len("<!here> ") + FIELD_LIMIT
    assert len(title) <= TITLE_LIMIT
    for mention in ("<!channel>", "@everyone", "<@U0123>"):
        assert mention not in body + title
    assert f"\\<{ZW}!channel\\> @{ZW}everyone \\<{ZW}@U0123\\>" in body
    with sqlite3.connect(tmp_path / "state.db") as db:
        (fields,) = db.execute("SELECT fields FROM events ORDER BY id DESC LIMIT 1").fetchone()
    assert cap(hostile, FIELD_LIMIT) == json.loads(fields)["status_message"]


@pytest.mark.parametrize(
    ("query", "mode"),
    [("", "truncate"), ("?overflow=split", "split"), ("?overflow=upstream", "upstream")],
)
def test_overflow_defaults_to_truncate(query: str, mode: str) -> None:
    """A service with a smaller limit than our body gets it cut, unless the URL says otherwise."""
    url = f"json://127.0.0.1/x{query}"
    display = AppriseNotifier([("c", url)]).target(url).url_display

    assert f"overflow={mode}" in display


@pytest.mark.parametrize("hostile", HOSTILE)
def test_console_log_lines_print_no_control_characters(hostile: str) -> None:
    """A log line for a person's terminal (console format) escapes what the API said, from
    our loggers and from the standard library's alike (apprise, uvicorn)."""
    stream = io.StringIO()
    logs.configure(json=False, stream=stream)
    try:
        structlog.get_logger("watcher").warning("api.error", error=hostile)
        logging.getLogger("tests.hostile_text").warning("answer: %s", hostile)
    finally:
        logs.configure()

    lines = stream.getvalue().splitlines()
    assert 2 == len(lines)
    assert all(line.isprintable() for line in lines)
