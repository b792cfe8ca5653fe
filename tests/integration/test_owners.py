"""Owners end to end: the simulator (jobs by three people, two in the directory, a model made
by a watched SFT job, a trainer deleted by someone else), the real client, store and notifier,
and real receivers over loopback, on one fake clock.

Slack and Discord cannot be pointed at loopback by their URLs, so the test moves the plugins'
own endpoint (`NotifySlack.webhook_url`, `NotifyDiscord.notify_url`, class attributes apprise
builds each request URL from) to a loopback receiver: the payload checked is the one apprise
builds and sends over HTTP, nothing is mocked.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from apprise.plugins.discord import NotifyDiscord
from apprise.plugins.slack import NotifySlack

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.alerting import MINUTE, SFT, Time, cycle, watcher_on
from tests.support.servers import JsonReceiver, ServedApp
from watcher import config

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
SLACK_ID, DISCORD_ID = "U012ABCDEF", "123456789012345678"
PEOPLE = [
    {"email": "Alice@Example.com", "name": "Alice", "slack": SLACK_ID, "discord": DISCORD_ID},
    {"email": BOB, "name": "Bob"},
]
BODY = "{job_id} owner={owner}"
MENTION = "{job_id} is {new_state}, {owner_mention} ({display_name})"
RLOR = "rlorTrainerJobs"


class ChatReceiver:
    """A loopback stand-in for Slack's and Discord's webhook hosts: records each JSON post
    with its path and answers `ok` (Slack's webhook answer; Discord takes any 200)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self._condition = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._condition:
                    receiver.posts.append((self.path, json.loads(raw)))
                    receiver._condition.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.posts) >= count, timeout):
                raise AssertionError(f"expected {count} posts, got {self.posts!r}")
            return list(self.posts)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatReceiver]:
    receiver = ChatReceiver()
    monkeypatch.setattr(NotifySlack, "webhook_url", f"{receiver.url}/services")
    monkeypatch.setattr(NotifyDiscord, "notify_url", f"{receiver.url}/api/webhooks")
    yield receiver
    receiver.close()


@pytest.fixture
def time() -> Time:
    return Time()


@pytest.fixture
def fake_sim(server: ServedApp, time: Time) -> Simulator:
    sim = Simulator(api_key=KEY, account_id=ACCOUNT, clock=time.monotonic, start_time=time.wall())
    server.app = sim
    return sim


def channel(name: str, receiver: JsonReceiver, owners: Any) -> dict[str, Any]:
    return {
        "name": name,
        "urls": [receiver.url()],
        "owners": owners,
        "body": BODY,
        "max_per_second": 100,  # no pacing: the test does not wait out a send a second
    }


def heard(receiver: JsonReceiver) -> list[str]:
    """The `job_id owner=...` bodies a receiver got, sorted."""
    return sorted(m["message"] for m in receiver.messages)


async def test_each_person_hears_their_jobs_and_the_chat_mention_pings(
    server: ServedApp, fake_sim: Simulator, time: Time, tmp_path: Path, chat: ChatReceiver
) -> None:
    """Three people's jobs move. Each person's channel (`owners = [their address]`, any case)
    gets exactly their jobs; `owners = "directory"` gets alice's and bob's, not carol's. The
    model made by alice's SFT job is alice's; bob's trainer deleted by carol (the API then says
    `createdBy` carol) stays bob's. Slack gets `<@U…>` in the text, Discord `<@id>` in
    `content` and `allow_mentions.users` (embed mode) or in `content` (plain)."""
    for job_id, creator in (("a-sft", ALICE), ("b-sft", BOB), ("c-sft", CAROL)):
        # Bob's job's display name is the API's text, with mentions in it.
        display = "<@U999> <!channel> @here" if creator == BOB else None
        fake_sim.add_job(
            job_id, collection=SFT, state="RUNNING", created_by=creator, display_name=display
        )
    fake_sim.add_job("b-rlor", collection=RLOR, state="RUNNING", created_by=BOB)
    fake_sim.add_job(
        "a-model",
        collection="models",
        state="UPLOADING",
        fine_tuning_job=f"accounts/{ACCOUNT}/{SFT}/a-sft",
    )
    chat_body = {
        "title": MENTION,
        "body": MENTION,
        "jobs": ["a-sft", "b-sft"],
        "max_per_second": 100,
    }
    slack = "slack://T1ABCDEFG/B1ABCDEFG/abcdefghijklmnopqrstuvwx"
    discord_embed = "discord://4242/webhook-token?format=markdown"
    discord_plain = "discord://4343/webhook-token"
    async with (
        JsonReceiver() as a,
        JsonReceiver() as b,
        JsonReceiver() as c,
        JsonReceiver() as d,
    ):
        settings = config.parse(
            {
                "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
                "watcher": {"poll_interval": 30, "state_path": str(tmp_path / "state.db")},
                "watch": [{"kind": kind, "discover": True} for kind in ("sft", "rlor", "model")],
                "person": PEOPLE,
                "channel": [
                    channel("alice", a, ["ALICE@example.com"]),
                    channel("bob", b, [BOB]),
                    channel("carol", c, ["carol@*"]),
                    channel("directory", d, "directory"),
                    {
                        "name": "chat",
                        "urls": [slack, discord_embed, discord_plain],
                        **chat_body,
                    },
                ],
            },
            {"FIREWORKS_API_KEY": KEY},
        )
        async with watcher_on(settings, time) as watcher:
            await cycle(watcher, time, 0)  # every resource seen: the baseline, not announced
            fake_sim.set_state("a-sft", "COMPLETED", collection=SFT)
            fake_sim.set_state("b-sft", "FAILED", collection=SFT)
            fake_sim.set_state("c-sft", "COMPLETED", collection=SFT)
            fake_sim.set_state("a-model", "READY", collection="models")
            fake_sim.remove_job("b-rlor", RLOR, deleted_by=CAROL)
            await cycle(watcher, time, MINUTE)
            await a.wait_for_async(2)
            await b.wait_for_async(2)
            await c.wait_for_async(1)
            await d.wait_for_async(4)
            posts = await anyio.to_thread.run_sync(chat.wait_for, 6)

    assert ["a-model owner=alice@example.com", "a-sft owner=alice@example.com"] == heard(a)
    assert ["b-rlor owner=bob@example.com", "b-sft owner=bob@example.com"] == heard(b)
    assert ["c-sft owner=carol@example.com"] == heard(c)
    assert [*heard(a), *heard(b)] == heard(d)

    by_path: dict[str, list[dict[str, Any]]] = {}
    for path, payload in posts:  # /services/T/B/token (Slack), /api/webhooks/ID/token
        parts = path.split("/")
        by_path.setdefault(parts[1] if parts[1] == "services" else parts[3], []).append(payload)
    slack_text = sorted(p["attachments"][0]["text"] for p in by_path["services"])
    assert f"<@{SLACK_ID}>" in slack_text[0]  # a-sft: alice, pinged by her member id
    assert "b-sft is FAILED, Bob" in slack_text[1]  # bob has no Slack id: his name
    embed = {p["embeds"][0]["description"].split()[0]: p for p in by_path["4242"]}
    assert f"<@{DISCORD_ID}>" in embed["a-sft"]["content"]
    assert [DISCORD_ID] == embed["a-sft"]["allow_mentions"]["users"]
    # apprise reads the defused `<\u200b@U999>` of the API's text as a word, never as a user.
    assert [] == embed["b-sft"].get("allow_mentions", {}).get("users", [])
    assert "<@" not in embed["b-sft"].get("content", "")
    plain = sorted(p["content"] for p in by_path["4343"])
    assert f"<@{DISCORD_ID}>" in plain[0]
    # What the API said (bob's job's display name) pings no one, on any of the three.
    for _, payload in posts:
        sent = json.dumps(payload, ensure_ascii=False)
        assert "<@U999>" not in sent
        assert "<!channel>" not in sent
        assert "@here" not in sent
