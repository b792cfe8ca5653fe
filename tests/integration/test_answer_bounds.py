"""Answers of any size: a body is decoded as it streams in and never held past the cap.

A gzip bomb (a small answer that expands a thousandfold), a plain body past the cap (with and
without `Content-Length`) and a deflate bomb, on a LIST and on a job GET, served by a small
ASGI app over loopback: each costs its resource one cycle, logged once with the cap named,
while a healthy job of another kind is still announced in the same cycle.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from structlog.testing import capture_logs

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.servers import JsonReceiver, ServedApp
from watcher import app, config
from watcher.core.errors import ApiUnavailable, PayloadError
from watcher.core.model import JobKind, JobRef
from watcher.sources.fireworks import FireworksClient
from watcher.sources.retry import RequestRetry
from watcher.sources.stream import AnswerTooLarge, BoundedBody

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

MIB = 1024 * 1024
CAP = MIB
FAST = RequestRetry(attempts=2, base_delay=0.01, max_delay=0.02)
SFT_LIST = f"/v1/accounts/{ACCOUNT}/supervisedFineTuningJobs"
DPO_JOB = f"/v1/accounts/{ACCOUNT}/dpoJobs/job-a"
DPO_REF = JobRef(JobKind.DPO, "job-a")


def compressed(data: bytes | int, wbits: int = zlib.MAX_WBITS | 16) -> bytes:
    """`data` (or that many zero bytes, made a MiB at a time) gzip- or deflate-compressed."""
    z = zlib.compressobj(9, zlib.DEFLATED, wbits)
    if isinstance(data, bytes):
        return z.compress(data) + z.flush()
    chunk = bytes(MIB)
    out = [z.compress(chunk) for _ in range(data // MIB)]
    return b"".join([*out, z.flush()])


GZIP = zlib.MAX_WBITS | 16
DEFLATE = zlib.MAX_WBITS
RAW_DEFLATE = -zlib.MAX_WBITS
#: 64 MiB of zeros: about 64 KB on the wire.
GZIP_BOMB = compressed(64 * MIB)
DEFLATE_BOMB = compressed(64 * MIB, DEFLATE)
EMPTY_LIST = b'{"supervisedFineTuningJobs": [], "totalSize": 0}'


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- the decoder, on its own ----------------------------------------------------------------


def feed_all(body: BoundedBody, raw: list[bytes]) -> None:
    for chunk in raw:
        body.feed(chunk)


def padded(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    return b'{"p": "' + b"x" * (size - 9) + b'"}'


@pytest.mark.parametrize(
    ("encoding", "raw", "expected"),
    [
        pytest.param("", chunks(padded(CAP), 4096), padded(CAP), id="plain-at-the-cap"),
        pytest.param("identity", [padded(100)], padded(100), id="identity"),
        pytest.param("gzip", chunks(compressed(padded(CAP)), 1), padded(CAP), id="gzip-bytewise"),
        pytest.param("x-gzip", [compressed(padded(500))], padded(500), id="x-gzip"),
        pytest.param("deflate", [compressed(padded(500), DEFLATE)], padded(500), id="deflate"),
        pytest.param(
            "deflate", [compressed(padded(500), RAW_DEFLATE)], padded(500), id="raw-deflate"
        ),
        pytest.param("GZip ", [compressed(b"{}")], b"{}", id="header-case-and-space"),
        pytest.param(
            "deflate",
            chunks(compressed(padded(3000), RAW_DEFLATE), 1),
            padded(3000),
            id="raw-deflate-bytewise",
        ),
        pytest.param(
            "deflate",
            chunks(compressed(padded(3000), DEFLATE), 1),
            padded(3000),
            id="deflate-bytewise",
        ),
    ],
)
def test_bodies_within_the_cap_decode_whole(
    encoding: str, raw: list[bytes], expected: bytes
) -> None:
    """Every encoding the client asks for decodes to the same bytes httpx would give, fed in
    any chunking, up to and including the cap."""
    body = BoundedBody(encoding, CAP, where="GET /x")
    feed_all(body, raw)

    assert expected == body.body()


@pytest.mark.parametrize(
    ("encoding", "raw"),
    [
        pytest.param("", chunks(padded(CAP + 1), 65536), id="plain-one-byte-over"),
        pytest.param("gzip", [GZIP_BOMB], id="gzip-bomb-one-chunk"),
        pytest.param("gzip", chunks(GZIP_BOMB, 16384), id="gzip-bomb-chunked"),
        pytest.param("deflate", [DEFLATE_BOMB], id="deflate-bomb"),
        pytest.param("deflate", [compressed(64 * MIB, RAW_DEFLATE)], id="raw-deflate-bomb"),
        pytest.param("gzip", [compressed(padded(CAP + 1))], id="gzip-one-byte-over"),
    ],
)
def test_a_body_past_the_cap_is_refused_holding_at_most_the_cap(
    encoding: str, raw: list[bytes]
) -> None:
    """Crossing the cap raises AnswerTooLarge naming it; the decoder never held more than the
    cap, even for one compressed chunk that expands to 64 MiB."""
    body = BoundedBody(encoding, CAP, where="GET /v1/x")
    with pytest.raises(AnswerTooLarge, match=r"GET /v1/x: answer larger than max_answer_bytes"):
        feed_all(body, raw)

    assert body.size <= CAP


@pytest.mark.parametrize(
    ("encoding", "raw", "match"),
    [
        pytest.param("br", [b"x"], "unsupported content-encoding 'br'", id="brotli-not-asked"),
        pytest.param("gzip, gzip", [b"x"], "unsupported content-encoding", id="two-layers"),
        pytest.param("gzip", [b"not gzip at all"], "undecodable body", id="corrupt-gzip"),
        pytest.param("deflate", [b"\xff\xfe\xfd\xfc"], "undecodable body", id="corrupt-deflate"),
    ],
)
def test_undecodable_bodies_are_payload_errors(encoding: str, raw: list[bytes], match: str) -> None:
    """An encoding the client did not ask for, or bytes that do not decode, is a bad answer."""
    with pytest.raises(PayloadError, match=match):
        feed_all(BoundedBody(encoding, CAP, where="GET /x"), raw)


def test_an_error_body_is_cut_quietly() -> None:
    """With `truncate` (error answers: their message comes first) the excess is dropped."""
    body = BoundedBody("gzip", 1000, where="GET /x", truncate=True)
    body.feed(GZIP_BOMB)
    body.feed(b"more")

    assert (1000, True) == (len(body.body()), body.full)


# --- over loopback ------------------------------------------------------------------------------


class Oversize:
    """An ASGI app that answers requests whose path is `path` with `body` (headers as given,
    sent in `chunk`-byte pieces, `pause` seconds apart) and hands the rest to the simulator."""

    def __init__(
        self,
        sim: Simulator,
        path: str,
        body: bytes,
        *,
        encoding: str = "",
        length: bool = True,
        chunk: int = 16384,
        pause: float = 0.0,
    ) -> None:
        self.sim, self.path, self.body = sim, path, body
        self.headers = [(b"content-type", b"application/json")]
        if encoding:
            self.headers.append((b"content-encoding", encoding.encode()))
        if length:
            self.headers.append((b"content-length", b"%d" % len(body)))
        self.chunk, self.pause = chunk, pause
        self.served = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.sim(scope, receive, send)
            return
        self.served += 1
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        for piece in chunks(self.body, self.chunk):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            if self.pause:
                await anyio.sleep(self.pause)
        await send({"type": "http.response.body", "body": b""})


SHAPES: dict[str, dict[str, Any]] = {
    "gzip-bomb": {"body": GZIP_BOMB, "encoding": "gzip"},
    "deflate-bomb": {"body": DEFLATE_BOMB, "encoding": "deflate"},
    "plain-chunked": {"body": padded(4 * CAP), "length": False},
    "plain-with-length": {"body": padded(4 * CAP)},
}


@pytest.fixture
async def client_for(server: ServedApp) -> AsyncIterator[Callable[..., FireworksClient]]:
    """Builds a FireworksClient on a real httpx client, to the served app."""
    clients: list[httpx.AsyncClient] = []

    def build(**extra: Any) -> FireworksClient:
        http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        clients.append(http)
        return FireworksClient(
            http, account_id=ACCOUNT, api_key=KEY, base_url=server.url, retry=FAST, **extra
        )

    yield build
    for http in clients:
        await http.aclose()


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("target", ["list", "get"])
async def test_an_oversize_answer_is_refused_not_retried(
    server: ServedApp,
    sim: Simulator,
    client_for: Callable[..., FireworksClient],
    shape: str,
    target: str,
) -> None:
    """A LIST page or a job past `max_answer_bytes`, however it is encoded, is a PayloadError
    naming the cap after one request (another try would get the same bomb)."""
    sim.add_job("job-a", state="RUNNING")
    path = SFT_LIST if target == "list" else DPO_JOB
    hostile = Oversize(sim, path, **SHAPES[shape])
    server.app = hostile
    client = client_for(max_answer_bytes=CAP)

    call = client.list_jobs(JobKind.SFT) if target == "list" else client.get_job(DPO_REF)
    with pytest.raises(PayloadError, match=r"max_answer_bytes \(1,048,576 bytes\)"):
        await call

    assert (1, 1) == (client.requests_sent, hostile.served)


@pytest.mark.parametrize("encoding", ["", "gzip", "deflate"])
async def test_answers_within_the_cap_are_read_and_memo_keeps_only_a_digest(
    server: ServedApp, sim: Simulator, client_for: Callable[..., FireworksClient], encoding: str
) -> None:
    """A big but allowed page decodes as before; the page memo keeps a 16-byte digest of it,
    not the body, and an unchanged page is still recognised."""
    jobs = [
        {"name": f"accounts/{ACCOUNT}/supervisedFineTuningJobs/j{i}", "state": "JOB_STATE_RUNNING"}
        for i in range(150)
    ]
    page = orjson.dumps({"supervisedFineTuningJobs": jobs, "totalSize": 150, "pad": "x" * 400_000})
    wire = {"": page, "gzip": compressed(page), "deflate": compressed(page, DEFLATE)}[encoding]
    server.app = Oversize(sim, SFT_LIST, wire, encoding=encoding)
    client = client_for(max_answer_bytes=CAP)

    first = await client.list_jobs(JobKind.SFT)
    second = await client.list_jobs(JobKind.SFT)

    assert 150 == len(first) == len(second)
    memos = list(client._page_memos.values())
    assert [16] == [len(m.digest) for m in memos]
    assert not hasattr(memos[0], "content")
    assert first[0] is second[0]  # the unchanged page was not decoded again


@pytest.mark.parametrize("encoding", ["", "gzip"])
async def test_the_whole_answer_deadline_holds_while_streaming(
    server: ServedApp, sim: Simulator, client_for: Callable[..., FireworksClient], encoding: str
) -> None:
    """A small answer dripped in pieces is still cut at the per-request deadline (each read
    arrives in time, the whole does not), retried, then unavailable."""
    body = EMPTY_LIST + b" " * 200
    wire = compressed(body) if encoding else body
    server.app = Oversize(sim, SFT_LIST, wire, encoding=encoding, chunk=8, pause=0.05)
    client = client_for(deadline=0.3)

    with pytest.raises(ApiUnavailable, match=r"no whole answer within 0.3 s"):
        await client.list_jobs(JobKind.SFT)

    assert 2 == client.requests_sent


@pytest.mark.parametrize("shape", ["gzip-bomb", "plain-chunked"])
async def test_an_oversize_list_costs_its_kind_one_cycle_not_the_daemon(
    server: ServedApp, sim: Simulator, receiver: JsonReceiver, tmp_path: Path, shape: str
) -> None:
    """Through the daemon's own wiring (`max_answer_bytes` from the config): every cycle the
    oversize SFT list is one `api.bad_answer` naming the cap, no crash, and the healthy DPO
    job's move is announced in the very cycle it happened."""
    sim.add_job("job-a", state="RUNNING")
    server.app = Oversize(sim, SFT_LIST, **SHAPES[shape])
    settings = config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {
                "poll_interval": 1,
                "state_path": str(tmp_path / "state.db"),
                "max_requests_per_minute": 6000,
                "max_answer_bytes": CAP,
            },
            "watch": [{"kind": "sft", "discover": True}, {"kind": "dpo", "jobs": ["job-a"]}],
            "channel": [{"name": "team", "urls": [receiver.url()]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )
    moved: list[list[str]] = []
    with capture_logs() as logs:
        async with app.open_watcher(settings) as watcher:
            await watcher.run_once(force=True)
            for state in ("COMPLETED", "RUNNING"):
                sim.set_state("job-a", state)
                report = await watcher.run_once(force=True)
                moved.append([t.new_state for t in report.transitions])

    assert [["COMPLETED"], ["RUNNING"]] == moved
    bad = [e for e in logs if e["event"] == "api.bad_answer"]
    assert 3 == len(bad)  # one per cycle
    assert all("list:sft" == e["target"] and "max_answer_bytes" in e["error"] for e in bad)
    assert not [e for e in logs if e["event"] == "cycle.crashed"]
    # The two moves, and (unreadable_after = 3 cycles) the one "cannot read" notice.
    titles = [m["title"] for m in await receiver.wait_for_async(3)]
    assert ["RUNNING → COMPLETED", "COMPLETED → RUNNING"] == [t[-19:] for t in titles[:2]]
    assert titles[2].startswith("cannot read ")
    assert "max_answer_bytes" in titles[2]
