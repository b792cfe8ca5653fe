"""Secrets inside URLs (issue 10, items 11 and 12): a header token or a `${VAR}` query value in a
channel URL, and a password in `fireworks.base_url`, never reach logs, command output, the state
file or a notification. `test_secrets.py` runs the whole-daemon scenario; this module covers
the URL forms, one scenario per scheme and header, through the real command line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fireworks_sim import Simulator
from tests.support.servers import JsonReceiver, ServedApp, free_tcp_port
from watcher.cli import main
from watcher.core.text import MASK, mask_url, userinfo, without_userinfo
from watcher.notify.apprise_sender import AppriseNotifier, secret_parts

HOOK_TOKEN = "SECRET-hook-7a1f0c"
ARG_TOKEN = "SECRET-arg-33d9e2"
FIELD_TOKEN = "SECRET-field-8b4c"
PROXY_PASSWORD = "SECRET-proxy-c0ffee"
URL_PASSWORD = "SECRET-urlpass-5e7d"
SECRETS = (HOOK_TOKEN, ARG_TOKEN, FIELD_TOKEN, PROXY_PASSWORD, URL_PASSWORD)


# --- the pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "hidden", "expected"),
    [
        pytest.param(
            "json://h/x?method=POST&%2BAuthorization=Bearer%20tok",
            (),
            "json://h/****?method=POST&+Authorization=****",
            id="encoded-header",
        ),
        pytest.param("json://h/x?+X-Key=abc", (), "json://h/****?+X-Key=****", id="plain-header"),
        pytest.param(
            "form://h/x?-token=abc&a=b", (), "form://h/****?-token=****&a=b", id="argument"
        ),
        pytest.param("xml://h/x?%3Amsg=abc", (), "xml://h/****?:msg=****", id="payload-field"),
        pytest.param(
            "ntfy://h/t?priority=high&token=tk_secret1",
            ("tk_secret1",),
            "ntfy://h/****?priority=high&token=****",
            id="env-query-value",
        ),
        pytest.param(
            "json://h/x?k=a%2Bb%20c%2Fd", ("a+b c/d",), "json://h/****?k=****", id="env-encoded"
        ),
        pytest.param("matrix://h/x?k=abc", ("ab",), "matrix://h/x?k=abc", id="short-env-ignored"),
        pytest.param("matrix://h/x", ("x",), "matrix://h/x", id="no-query"),
        pytest.param(
            "json://h/x?flag&+H=v#f", (), "json://h/****?flag&+H=****#f", id="bare-and-frag"
        ),
    ],
)
def test_mask_url(url: str, hidden: tuple[str, ...], expected: str) -> None:
    """Header, argument and payload values, and query values from `${VAR}`, are masked."""
    assert expected == mask_url(url, hidden)


@pytest.mark.parametrize(
    ("url", "shown", "parts"),
    [
        ("https://u:pw@proxy:3128/x", "https://proxy:3128/x", ("u", "pw")),
        ("http://user:p%40ss@h", "http://h", ("user", "p%40ss", "p@ss")),
        ("https://token@h/a@b", "https://h/a@b", ("token",)),
        ("https://h/a?x=@y", "https://h/a?x=@y", ()),
        ("https://api.fireworks.ai", "https://api.fireworks.ai", ()),
    ],
)
def test_userinfo(url: str, shown: str, parts: tuple[str, ...]) -> None:
    """A URL is shown without its user and password; those become secrets."""
    assert (shown, parts) == (without_userinfo(url), userinfo(url))


def test_secret_parts_hold_raw_and_decoded_header_values() -> None:
    """A header value is scrubbed as written (`Bearer%20t`) and as sent (`Bearer t`)."""
    url = f"json://h/x?+Authorization=Bearer%20{HOOK_TOKEN}"
    notifier = AppriseNotifier([("c", url)])
    display = notifier.target(url).url_display

    parts = secret_parts(url, display)

    assert HOOK_TOKEN not in display
    assert {f"Bearer%20{HOOK_TOKEN}", HOOK_TOKEN} <= parts


# --- through the command line ---------------------------------------------------------------

# (scheme, header): every apprise scheme that posts to a webhook with headers of one's own.
SCENARIOS = [
    pytest.param("json", "Authorization", id="json-authorization"),
    pytest.param("json", "X-Api-Key", id="json-x-api-key"),
    pytest.param("xml", "X-Auth-Token", id="xml-x-auth-token"),
    pytest.param("form", "Cookie", id="form-cookie"),
]


@pytest.fixture
def env(env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared CLI environment, with the base URL left to each config and the tokens set."""
    monkeypatch.delenv("FIREWORKS_BASE_URL")
    monkeypatch.setenv("HOOK_TOKEN", HOOK_TOKEN)
    monkeypatch.setenv("ARG_TOKEN", ARG_TOKEN)
    monkeypatch.setenv("FIELD_TOKEN", FIELD_TOKEN)


def channel_url(receiver: JsonReceiver, scheme: str, header: str) -> str:
    """A channel URL with a header token, an argument and a payload field, all from `${VAR}`,
    and a password (for the schemes that take one)."""
    user = f"bot:{URL_PASSWORD}@" if header != "Authorization" else ""
    query = f"+{header}=Bearer%20${{HOOK_TOKEN}}&-sig=${{ARG_TOKEN}}&:extra=${{FIELD_TOKEN}}"
    return f"{scheme}://{user}127.0.0.1:{receiver.port}/hook?{query}"


def write_config(tmp_path: Path, base_url: str, url: str, *, api_down_after: int = 3) -> Path:
    path = tmp_path / "watcher.toml"
    path.write_text(
        f"""
[fireworks]
base_url = "{base_url}"

[watcher]
poll_interval = 1
state_path = "{tmp_path / "state.db"}"
health_listen = ""
api_down_after = {api_down_after}

[[watch]]
jobs = ["job-a"]

[[channel]]
name = "team"
urls = ["{url}"]
"""
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What a command writes, stdout (its output) then stderr (its log lines)."""
    main(list(argv))
    out, err = capsys.readouterr()
    return out + err


def state_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))


def assert_clean(text: str | bytes) -> None:
    for secret in SECRETS:
        if isinstance(text, bytes):
            assert secret.encode() not in text, secret
        else:
            assert secret not in text, secret


@pytest.mark.parametrize(("scheme", "header"), SCENARIOS)
def test_header_and_env_tokens_are_masked_everywhere(
    scheme: str,
    header: str,
    env: None,
    server: ServedApp,
    sim: Simulator,
    receiver: JsonReceiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """check, check --probe, once (notify.sent, notify.failed), status, status --json,
    test-notify and the outbox column show the URL with its header and `${VAR}` values masked,
    while the receiver really gets the token (so it was there to leak)."""
    config = str(write_config(tmp_path, server.url, channel_url(receiver, scheme, header)))
    sim.add_job("job-a", state="RUNNING")
    outputs = [run(capsys, "check", "-c", config), run(capsys, "check", "--probe", "-c", config)]
    outputs.append(run(capsys, "once", "-c", config))
    sim.set_state("job-a", "FAILED", status_code="INTERNAL", status_message="OOM")
    outputs.append(run(capsys, "once", "-c", config))
    assert "notify.sent" in outputs[-1]
    receiver.status = 503
    sim.set_state("job-a", "RUNNING")
    outputs.append(run(capsys, "once", "-c", config))
    assert "notify.failed" in outputs[-1]
    outputs.append(run(capsys, "status", "-c", config))
    main(["status", "--json", "-c", config])
    document = json.loads(capsys.readouterr().out)
    outputs.append(json.dumps(document))
    receiver.status = 200
    outputs.append(run(capsys, "test-notify", "-c", config))

    everything = "\n".join(outputs)
    assert_clean(everything)
    assert_clean(state_bytes(tmp_path))
    assert f"+{header}={MASK}" in everything
    assert f"-sig={MASK}" in everything
    assert f":extra={MASK}" in everything
    with sqlite3.connect(tmp_path / "state.db") as db:
        shown = {row[0] for row in db.execute("SELECT url_display FROM outbox")}
    assert shown
    assert all(f"+{header}={MASK}" in url for url in shown)
    assert document["undelivered"]
    assert all(f"+{header}={MASK}" in d["url"] for d in document["undelivered"])
    # The secrets were real: the token went out in the request (the receiver keeps only the
    # Authorization header, and the query of the posted path).
    assert receiver.messages
    if header == "Authorization":
        assert f"Bearer {HOOK_TOKEN}" == receiver.messages[0]["auth"]
    assert f"sig={ARG_TOKEN}" in receiver.messages[0]["path"]


@pytest.mark.parametrize(
    "userinfo_part",
    [
        pytest.param(f"proxyuser:{PROXY_PASSWORD}@", id="user-password"),
        pytest.param(f"{PROXY_PASSWORD}@", id="token-only"),
        pytest.param(f"proxyuser:{PROXY_PASSWORD}%21@", id="percent-encoded"),
    ],
)
def test_base_url_credentials_never_shown(
    userinfo_part: str,
    env: None,
    receiver: JsonReceiver,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An authenticating proxy's password in base_url stays out of `check`, the logs, the
    "API unreachable" notification, `status` and the state file."""
    port = free_tcp_port()  # nothing listens: the API is down
    base_url = f"http://{userinfo_part}127.0.0.1:{port}"
    config = str(write_config(tmp_path, base_url, receiver.url(), api_down_after=1))

    outputs = [run(capsys, "check", "-c", config), run(capsys, "once", "-c", config)]
    outputs += [run(capsys, "status", "-c", config), run(capsys, "status", "--json", "-c", config)]

    (message,) = receiver.wait_for(1)
    assert "Fireworks API unreachable" == message["title"]
    assert f"http://127.0.0.1:{port}" in message["message"]
    assert f"at http://127.0.0.1:{port}" in outputs[0]
    assert_clean("\n".join([*outputs, message["title"], message["message"]]))
    assert_clean(state_bytes(tmp_path))
