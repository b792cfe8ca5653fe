"""Hostile answers: a peer that drips, bloats, lies or floods, per collection.

An attack replaces every API answer (GET and LIST) of one collection until it is lifted,
unlike a queued fault, which is counted and spent. The simulator serves it in `serve_attack`
with raw ASGI sends, since several (a drip, a streamed body) are not one `_Reply`.

| attack | what the collection answers |
|---|---|
| `drip` | its real answer with honest headers, then one byte every `pace` seconds |
| `gzip-bomb` | `Content-Encoding: gzip`, a small body that expands to `size` bytes of JSON |
| `huge` | a plain JSON body of `size` bytes, streamed in 1 MiB chunks |
| `endless-pages` | an empty LIST page with a fresh `nextPageToken`, every time |
| `new-job-flood` | LIST pages of `per_page` never-seen RUNNING resources, each with a next token |
| `duplicate-names` | its real LIST page plus, per item, impostors that claim another state under names |
|  | from another account, with a trailing space, `.`, `..`, a slash, and no name at all |
| `retry-after` | 429 with `Retry-After: {retry_after}` |
"""

from __future__ import annotations

import asyncio
import copy
import functools
import itertools
import json
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fireworks_sim.wire import Receive, Send, _error_reply, _json_bytes, _Reply, _send_reply

#: The attacks `attack()` knows, in the order of the table above.
ATTACKS: tuple[str, ...] = (
    "drip",
    "gzip-bomb",
    "huge",
    "endless-pages",
    "new-job-flood",
    "duplicate-names",
    "retry-after",
)
_CHUNK = 1 << 20
_tokens = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Attack:
    """One collection's hostile behaviour (see the module's table)."""

    kind: str
    pace: float = 0.05
    size: int = 200_000_000
    per_page: int = 200
    retry_after: str = "1e20"

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ValueError(f"unknown attack {self.kind!r}; choose one of {', '.join(ATTACKS)}")
        if not 0 < self.pace <= 60 or not 0 < self.size <= 1 << 34 or self.per_page <= 0:
            raise ValueError("pace must be in (0, 60] s, size in (0, 16 GiB], per_page above 0")


# What the simulator lends an attack: its real answer for this request, and a maker of
# never-seen resources of the collection (rendered, not stored).
RealAnswer = Callable[[], _Reply]
MakeResource = Callable[[int], dict[str, Any]]


async def serve_attack(
    attack: Attack,
    *,
    collection: str,
    account: str,
    is_list: bool,
    real: RealAnswer,
    make: MakeResource,
    receive: Receive,
    send: Send,
) -> None:
    """Answer one request of an attacked collection."""
    match attack.kind:
        case "drip":
            await _until_gone(_drip(real(), attack.pace, send), receive)
        case "gzip-bomb":
            body = _bomb(attack.size)
            headers = [(b"content-encoding", b"gzip"), (b"content-length", b"%d" % len(body))]
            await _start(send, 200, headers)
            await send({"type": "http.response.body", "body": body})
        case "huge":
            await _until_gone(_stream_huge(attack.size, send), receive)
        case "retry-after":
            reply = _error_reply(429, "simulated hostile peer: slow down")
            hint = (*reply.headers, ("retry-after", attack.retry_after))
            await _send_reply(send, _Reply(429, reply.body, reply.content_type, hint))
        case "endless-pages" if is_list:
            page = {"nextPageToken": f"endless-{next(_tokens)}"}
            await _send_reply(send, _Reply(200, _json_bytes(page)))
        case "new-job-flood" if is_list:
            start = next(_tokens) * attack.per_page
            items = [make(start + index) for index in range(attack.per_page)]
            flood = {collection: items, "nextPageToken": f"flood-{start}"}
            await _send_reply(send, _Reply(200, _json_bytes(flood)))
        case "duplicate-names" if is_list:
            await _send_reply(send, _with_impostors(real(), collection, account))
        case _:
            await _send_reply(send, real())  # a LIST-only attack lets a GET through


async def _start(send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [(b"content-type", b"application/json"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _until_gone(answer: Coroutine[Any, Any, None], receive: Receive) -> None:
    """Run `answer` until it is sent or the client hangs up (a slow answer stops then)."""

    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    tasks = [asyncio.ensure_future(answer), asyncio.ensure_future(gone())]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()


async def _drip(reply: _Reply, pace: float, send: Send) -> None:
    """Honest headers, then the body byte by byte."""
    await _start(send, reply.status, [(b"content-length", b"%d" % len(reply.body))])
    for index in range(len(reply.body)):
        chunk = reply.body[index : index + 1]
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await asyncio.sleep(pace)
    await send({"type": "http.response.body", "body": b""})


@functools.lru_cache(maxsize=4)
def _bomb(size: int) -> bytes:
    """gzip of a JSON object `size` bytes long, compressed a chunk at a time (never held whole)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    head, tail = b'{"pad":"', b'"}'
    parts = [packer.compress(head)]
    zeros = b"0" * _CHUNK
    left = max(size - len(head) - len(tail), 0)
    while left > 0:
        parts.append(packer.compress(zeros[: min(left, _CHUNK)]))
        left -= _CHUNK
    parts.append(packer.compress(tail))
    parts.append(packer.flush())
    return b"".join(parts)


async def _stream_huge(size: int, send: Send) -> None:
    head, tail = b'{"pad":"', b'"}'
    await _start(send, 200, [(b"content-length", b"%d" % size)])
    await send({"type": "http.response.body", "body": head, "more_body": True})
    left = size - len(head) - len(tail)
    zeros = b"0" * _CHUNK
    while left > 0:
        await send(
            {"type": "http.response.body", "body": zeros[: min(left, _CHUNK)], "more_body": True}
        )
        left -= _CHUNK
    await send({"type": "http.response.body", "body": tail})


def _impostor_names(name: str, collection: str, account: str) -> list[str]:
    job_id = name.rsplit("/", 1)[-1]
    prefix = f"accounts/{account}/{collection}/"
    return [
        f"accounts/other-{account}/{collection}/{job_id}",
        f"{name} ",
        prefix + ".",
        prefix + "..",
        f"{prefix}{job_id}/../{job_id}",
    ]


def _with_impostors(reply: _Reply, collection: str, account: str) -> _Reply:
    """The real page, each item followed by look-alikes in another state, and a nameless one."""
    if reply.status != 200:
        return reply
    page: dict[str, Any] = json.loads(reply.body)
    items: list[dict[str, Any]] = []
    for item in page.get(collection, []):
        items.append(item)
        for name in _impostor_names(str(item.get("name", "")), collection, account):
            impostor = copy.deepcopy(item)
            impostor["name"] = name
            impostor["state"] = _other_state(str(item.get("state", "")))
            items.append(impostor)
        nameless = copy.deepcopy(item)
        del nameless["name"]
        items.append(nameless)
    if items:
        page[collection] = items
    return _Reply(200, _json_bytes(page))


def _other_state(state: str) -> str:
    if state.startswith("JOB_STATE_"):
        return "JOB_STATE_FAILED" if state == "JOB_STATE_COMPLETED" else "JOB_STATE_COMPLETED"
    return "FAILED" if state == "READY" else "READY"
