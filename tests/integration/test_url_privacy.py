"""Secrets in the path, host or user of a channel URL (issue 20, security item 1).

apprise's privacy form (`url(privacy=True)`) masks what each plugin declares private; on top
of it every value `${VAR}` put anywhere in a URL is masked, and so is every path segment of a
plain webhook (`json`, `xml`, `form`) and every ntfy topic, which apprise shows. Checked over
many schemes through the config's `${VAR}` expansion, on rows stored by older versions, in the
log scrubber, and end to end through a daemon and the command line.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from fireworks_sim import Simulator
from tests.support.daemon import Daemon, run_watcher, serve_health, write_config
from tests.support.servers import JsonReceiver
from watcher import app
from watcher.config import parse
from watcher.core.text import MASK, mask_url, scrub
from watcher.core.urls import short_url
from watcher.notify.apprise_sender import AppriseNotifier

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

#: What `${S}` holds in every case below.
SECRET = "Zq7SECRETv4lue9x"

# (channel URL as written in the config, the other variables it uses)
SCHEMES = [
    pytest.param("json://127.0.0.1:9/down/${S}", {}, id="json-path"),
    pytest.param("jsons://hooks.example.com/hooks/${S}", {}, id="jsons-path"),
    pytest.param("xml://h.example/${S}", {}, id="xml-path"),
    pytest.param("forms://h.example/a/${S}/b", {}, id="forms-middle-segment"),
    pytest.param("json://${S}@h.example/x", {}, id="json-user-token"),
    pytest.param("json://h.example/x?+X-Key=${S}", {}, id="json-header"),
    pytest.param(
        "json://${HOST}:8080/x", {"HOST": f"h-{SECRET.lower()}.example.com"}, id="json-host"
    ),
    pytest.param("${URL}", {"URL": f"json://h.example/hooks/{SECRET}"}, id="whole-url"),
    pytest.param("ntfy://${S}", {}, id="ntfy-cloud-topic"),
    pytest.param("ntfys://ntfy.example.com/${S}", {}, id="ntfys-topic"),
    pytest.param("ntfy://u:p@ntfy.example.com/${S}?priority=high", {}, id="ntfy-auth-topic"),
    pytest.param("discord://${ID}/${S}", {"ID": "112233445566778899"}, id="discord"),
    pytest.param("slack://T0000AAAA/B0000BBBB/${S}/#chan", {}, id="slack"),
    pytest.param("tgram://${TG}/12345678", {"TG": f"123456789:AAF-{SECRET}"}, id="telegram"),
    pytest.param("mailtos://user:${S}@example.com?to=a@b.com", {}, id="mailtos"),
    pytest.param("gotify://gotify.example.com/${S}", {}, id="gotify"),
    pytest.param("pover://${U}@${S}", {"U": f"u{SECRET}"}, id="pushover"),
    pytest.param("matrixs://${S}@matrix.example.com/#room", {}, id="matrix"),
    pytest.param(
        "workflows://prod.example.com:443/${WF}/${S}", {"WF": f"wf{SECRET}"}, id="teams-workflow"
    ),
    pytest.param("mmost://mattermost.example.com/${S}", {}, id="mattermost"),
    pytest.param("apprise://apprise.example.com/${S}", {}, id="apprise-api"),
    pytest.param("opsgenie://${S}", {}, id="opsgenie"),
    pytest.param("hassio://hass.example.com/${S}", {}, id="home-assistant"),
    pytest.param("ifttt://${S}/event", {}, id="ifttt"),
]


@pytest.mark.parametrize(("written", "others"), SCHEMES)
def test_a_secret_from_a_variable_is_never_shown(written: str, others: dict[str, str]) -> None:
    """Whatever the scheme and wherever `${VAR}` stands, its value is in neither the stored
    display form nor its short form, and a text naming the URL is scrubbed of it; the URL's
    identity (`url_key`) is still the hash of the URL as sent."""
    env = {"FIREWORKS_API_KEY": "fw-key", "S": SECRET, **others}
    document = {
        "fireworks": {"account_id": "acme"},
        "watch": [{"jobs": ["job-1"]}],
        "channel": [{"name": "team", "urls": [written]}],
    }
    settings = parse(document, env)
    (url,) = (u.get_secret_value() for u in settings.channels[0].urls)
    notifier = app.build_notifier(settings)
    (target,) = notifier.targets.values()

    shown = [target.url_display, short_url(target.url_display), mask_url(target.url_display)]
    for value in (SECRET, *others.values()):
        assert all(value not in text for text in shown), (value, shown)
    assert url[:3] == target.url_display[:3]  # the scheme stays readable
    assert SECRET not in scrub(f"POST {url} failed: 503", notifier.secrets())
    assert hashlib.sha256(url.encode()).hexdigest()[:24] == target.url_key


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        pytest.param(
            "json://127.0.0.1:18934/down/HOOKPASSsecret99?method=POST&retry=0",
            "json://127.0.0.1:18934/****/****?method=POST&retry=0",
            id="json-row-of-an-older-version",
        ),
        pytest.param("xmls://bot@h/a/b/", "xmls://****@h/****/****/", id="xml-lone-user"),
        pytest.param("form://u:****@h/hook", "form://u:****@h/****", id="form-password-kept"),
        pytest.param(
            "ntfys://mytopic1/other2?priority=default&mode=cloud",
            "ntfys://****/****?priority=default&mode=cloud",
            id="ntfy-cloud-topics",
        ),
        pytest.param("ntfy://topic9", "ntfy://****", id="ntfy-topic-only"),
        pytest.param(
            "ntfy://u:****@ntfy.example.com/t1?mode=private",
            "ntfy://u:****@ntfy.example.com/****?mode=private",
            id="ntfy-private",
        ),
        pytest.param("matrix://u:****@h/%23room", "matrix://u:****@h/%23room", id="matrix-kept"),
        pytest.param("json://h/****/****", "json://h/****/****", id="masked-twice"),
    ],
)
def test_a_plain_webhook_path_and_an_ntfy_topic_are_masked(display: str, expected: str) -> None:
    """Path segments of a webhook and ntfy topics are masked without knowing any secret, so a
    row an older version stored in clear is shown masked too."""
    assert expected == mask_url(display)


def test_a_path_secret_is_scrubbed_but_event_names_are_not() -> None:
    """The log scrubber masks the hidden path (as a request line names it) and the `${VAR}`
    value anywhere, but a path word (`notify`) only with its slash: `notify.sent` stays."""
    url = f"json://127.0.0.1:9/notify/{SECRET}"
    notifier = AppriseNotifier([("c", url)], hidden=[SECRET])
    secrets = notifier.secrets()

    line = f'notify.sent "POST /notify/{SECRET} HTTP/1.1" 503; token {SECRET} refused'
    scrubbed = scrub(line, secrets)

    assert f'notify.sent "POST {MASK}/{MASK} HTTP/1.1" 503; token {MASK} refused' == scrubbed


# --- end to end ---------------------------------------------------------------------------------

HOOKPASS = "HOOKPASSsecret99"


def run_cli(env: dict[str, str], *argv: str) -> str:
    """A command as a person runs it: its stdout, then its stderr (the log lines)."""
    done = run_watcher(*argv, env=env)
    return done.stdout + done.stderr


def test_a_path_secret_stays_out_of_every_output(
    sim: Simulator,
    receiver: JsonReceiver,
    tmp_path: Path,
    daemon_env: dict[str, str],
) -> None:
    """`json://127.0.0.1:PORT/down/${HOOKPASS}`: the value is in none of `once` (debug logs
    included), `status`, `status --json`, `check`, `test-notify`, a daemon's log and
    `/api/v1/deliveries`, nor in the outbox's `url_display`; the receiver did get it."""
    config = write_config(tmp_path, [f"json://127.0.0.1:{receiver.port}/down/${{HOOKPASS}}"])
    env = daemon_env | {"HOOKPASS": HOOKPASS}
    c = str(config)
    sim.add_job("job-a", state="RUNNING")
    receiver.status = 503
    outputs = [run_cli(env, "--log-level", "debug", "once", "-c", c)]
    sim.set_state("job-a", "FAILED", status_code="INTERNAL", status_message="OOM")
    outputs.append(run_cli(env, "--log-level", "debug", "once", "-c", c))
    # The send failed (so it is pending) and debug logs named the request.
    assert "notify.failed" in outputs[-1]
    assert '"POST ' in outputs[-1]
    outputs.append(run_cli(env, "status", "-c", c))
    status_json = run_cli(env, "status", "--json", "-c", c)
    outputs.append(status_json)
    outputs.append(run_cli(env, "check", "-c", c))

    serve_health(config)
    daemon = Daemon(config, env)
    try:
        base = daemon.health_url()
        daemon.wait_event("notify.failed")
        answer = httpx.get(f"{base}/api/v1/deliveries", timeout=10)
        deliveries: list[dict[str, Any]] = answer.json()["deliveries"]
        outputs.append(answer.text)
    finally:
        daemon.close()
    outputs.append("".join(daemon.lines))

    receiver.status = 200
    test_notify = run_cli(env, "--log-level", "debug", "test-notify", "-c", c)
    outputs.append(test_notify)
    with sqlite3.connect(tmp_path / "state.db") as db:
        stored = [row[0] for row in db.execute("SELECT url_display FROM outbox")]
    outputs += stored

    shown = f"json://127.0.0.1:{receiver.port}/{MASK}/{MASK}"
    for text in outputs:
        assert HOOKPASS not in text
        assert f"/down/{HOOKPASS}" not in text
    # Each place really named the channel, masked.
    assert all(shown in text for text in outputs[2:5]), outputs[2:5]
    assert [d for d in deliveries if d["url"].startswith(shown)]
    assert json.loads(status_json)["undelivered"]
    assert stored
    assert all(url.startswith(shown) for url in stored)
    assert shown in test_notify
    # The secret was real: the receiver got it in the path it was posted to.
    assert f"/down/{HOOKPASS}" == receiver.wait_for(1)[0]["path"]
