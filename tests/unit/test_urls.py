"""`core.urls.short_url`: an apprise URL's privacy form as a person reads it (issue 13, item 4)."""

from __future__ import annotations

import pytest

from watcher.core.urls import PATH_LIMIT, SCHEME_DEFAULTS, short_url
from watcher.notify.apprise_sender import AppriseNotifier

SECRET = "SECRET-tok-91c2"
COMMON = "overflow=truncate&retry=0&wait=0.5&optional=no"


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        pytest.param(
            f"json://127.0.0.1:38215/hook?method=POST&{COMMON}",
            "json://127.0.0.1:38215/****",
            id="json-defaults",
        ),
        pytest.param(
            f"jsons://h/a?method=PUT&{COMMON}", "jsons://h/****?method=PUT", id="json-method-kept"
        ),
        pytest.param(
            "json://h/x?method=POST&overflow=split&retry=0",
            "json://h/****?overflow=split",
            id="overflow-kept",
        ),
        pytest.param(
            "slack://T...A/T...B/T...C/%23chan/?image=yes&footer=yes&timestamp=yes&blocks=no&mode=hook&"
            + COMMON,
            "slack://T...A/T...B/T...C/%23chan",
            id="slack",
        ),
        pytest.param(
            "discord://1...7/a...p/?tts=no&avatar=yes&footer=no&footer_logo=yes&image=no&fields=yes&batch=yes&"
            + COMMON,
            "discord://1...7/a...p",
            id="discord",
        ),
        pytest.param(
            "discord://1...7/a...p/?tts=yes&avatar=yes",
            "discord://1...7/a...p?tts=yes",
            id="discord-tts",
        ),
        pytest.param(
            f"mailtos://user:****@gmail.com/a%40b.com?{COMMON}&cto=15.0&smtp=smtp.gmail.com&mode=starttls",
            "mailtos://user:****@gmail.com/a@b.com",
            id="mailto-password",
        ),
        pytest.param(
            f"mailtos://u:****@example.com/?{COMMON}&smtp=mail.example.com&mode=ssl",
            "mailtos://u:****@example.com?smtp=mail.example.com&mode=ssl",
            id="mailto-own-smtp",
        ),
        pytest.param(f"mailto://u:{SECRET}@h/", "mailto://u:****@h", id="password-not-masked-yet"),
        pytest.param(
            f"json://u:****@h/p?method=POST&{COMMON}&+Authorization=****",
            "json://u:****@h/****?+Authorization=****",
            id="header-masked",
        ),
        pytest.param(
            f"json://h/p?%2BAuthorization=Bearer%20{SECRET}",
            "json://h/****?+Authorization=****",
            id="header-raw-row",
        ),
        pytest.param(
            f"json://h/x?method=POST&-arg={SECRET}&:field={SECRET}",
            "json://h/****?-arg=****&:field=****",
            id="arg-field-masked",
        ),
        pytest.param(
            f"json://[::1]:8080/x?method=POST&{COMMON}", "json://[::1]:8080/****", id="ipv6-port"
        ),
        pytest.param(
            "json://u:****@[fe80::1]/x/", "json://u:****@[fe80::1]/****", id="ipv6-userinfo"
        ),
        pytest.param("matrix://h/%C3%BCn%C3%AF", "matrix://h/ünï", id="unicode-path"),
        pytest.param("matrix://hé.example/日本", "matrix://hé.example/日本", id="unicode-host"),
        pytest.param(
            "matrix://h/a%2Fb%20c%0A", "matrix://h/a%2Fb%20c%0A", id="reserved-stay-encoded"
        ),
        pytest.param(f"json://h?method=POST&{COMMON}", "json://h", id="empty-path"),
        pytest.param("console://", "console://", id="console"),
        pytest.param(
            "matrix://h/" + "a" * 2000,
            "matrix://h/" + "a" * (PATH_LIMIT - 3) + "…",
            id="2000-path",
        ),
        pytest.param(
            "matrix://h/x\x1b[2J\u202e", "matrix://h/x\\x1b[2J\\u202e", id="control-escaped"
        ),
        pytest.param(
            "ntfys://topic?priority=default&mode=cloud&image=yes&auth=basic&format=text",
            "ntfys://****",
            id="ntfy",
        ),
        pytest.param(
            "pover://u...r@t...n?priority=normal",
            "pover://u...r@t...n?priority=normal",
            id="unknown-plugin-kept",
        ),
        pytest.param("not a url", "not a url", id="not-a-url"),
    ],
)
def test_short_url(display: str, expected: str) -> None:
    """The short form keeps scheme, masked credentials, host, port, path (a webhook's or ntfy's
    masked, even in a row stored before it was) and the settings that differ from apprise's
    defaults; secrets never show. Path rendering is shown on `matrix://`, whose path (a room)
    apprise shows and is no credential."""
    shown = short_url(display)
    assert expected == shown
    assert SECRET not in shown
    assert len(shown) <= 2 * PATH_LIMIT + 40


@pytest.mark.parametrize(
    "url",
    [
        "json://127.0.0.1:9/hook",
        "jsons://h/a",
        "xml://h/a",
        "form://h/a",
        "slack://TOKENA/TOKENB/TOKENC/#chan",
        "discord://1234567/abcdefghijklmnop",
        "mailtos://user:pw@gmail.com?to=a@b.com",
        "ntfys://topic",
        "ntfy://u:p@ntfy.example.com/topic",
        "tgram://123456:ABCDEF/123",
    ],
)
def test_defaults_match_apprise(url: str) -> None:
    """Every default in the table is what the installed apprise writes: a URL that sets
    nothing has no query in its short form (a new apprise that changes one fails here)."""
    display = AppriseNotifier([("c", url)]).target(url).url_display
    assert "?" in display
    assert url.split("://")[0] in SCHEME_DEFAULTS
    assert "?" not in short_url(display)


def test_log_lines_name_the_short_url() -> None:
    """`notify.sent`, `notify.failed` and `notify.dead` share `log_fields`: their `url` is short."""
    from datetime import UTC, datetime

    from watcher.core.delivery import Delivery, Event, OutboxEntry
    from watcher.runtime.lanes import log_fields

    entry = OutboxEntry(
        job_key="dpo/a",
        channel="team",
        url_key="k",
        url_display=f"json://bot:****@h:9/hook?method=POST&{COMMON}&+X-Key=****",
        old_state="RUNNING",
        new_state="COMPLETED",
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        event=Event(
            "dpo/a",
            "RUNNING",
            "COMPLETED",
            datetime(2026, 12, 1, tzinfo=UTC),
            (("title", "t"), ("body", "b")),
            notice=True,
        ),
    )
    row = Delivery(
        id=7, entry=entry, attempts=0, next_attempt_at=entry.created_at, last_error="", status="x"
    )
    assert "json://bot:****@h:9/****?+X-Key=****" == log_fields(row, 7)["url"]
