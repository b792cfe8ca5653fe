"""Answers read as they stream in, within a size cap: a body is decoded chunk by chunk and
never held past `max_answer_bytes`, however small it was on the wire.

`BoundedBody` is the sans-I/O part (decode, count, cut); `read_answer` feeds it from an httpx
stream and hands back an ordinary `httpx.Response` holding the decoded body.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Final

import httpx

from watcher.core.errors import PayloadError
from watcher.sources.answers import short
from watcher.sources.inflight import HeldBytes

#: The default cap on the decoded size of one answer (a LIST page or a job): 200 jobs with the
#: read mask take well under 1 MiB, and the container's memory limit is 256 MiB.
DEFAULT_MAX_ANSWER_BYTES: Final = 32 * 1024 * 1024
#: The default cap on the decoded bytes of every answer in flight together, held from the
#: first byte until parsed (`watcher.sources.inflight`): eleven kinds listed side by side
#: stay well under the 256 MiB limit.
DEFAULT_MAX_INFLIGHT_BYTES: Final = 64 * 1024 * 1024
#: An error answer is read this far (its `message` is at the start); the rest is dropped.
MAX_ERROR_BODY: Final = 64 * 1024
#: The encodings the client asks for and decodes itself; httpx would add `br`/`zstd` when
#: their packages are installed, and decode without a bound.
ACCEPT_ENCODING: Final = "gzip, deflate"
#: The most bytes one decompression step may produce.
STEP: Final = 256 * 1024
#: Headers that describe the body as sent, not as decoded and kept.
_BODY_HEADERS: Final = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class AnswerTooLarge(PayloadError):
    """An answer whose decoded body exceeds the cap: it was not read further, nor kept."""


class BoundedBody:
    """Decodes a body chunk by chunk as it arrives, holding at most `limit` decoded bytes.

    zlib's `max_length` bounds every step, so a small gzip answer that expands to gigabytes
    costs `limit` bytes, never its expansion. With `truncate` (error answers, whose message
    is at the start) the excess is dropped quietly; otherwise it raises `AnswerTooLarge`.

    Args:
        encoding: The `Content-Encoding` header ("" for none).
        limit: The most decoded bytes kept.
        where: `GET /v1/...`, for messages.
        truncate: Drop the excess instead of raising.
    """

    def __init__(self, encoding: str, limit: int, *, where: str, truncate: bool = False) -> None:
        self._where = where
        self._limit = limit
        self._truncate = truncate
        # One growing buffer, not a list of chunks: freed whole, its memory goes back to
        # the system instead of staying in the allocator's heap.
        self._buffer = bytearray()
        self.size = 0
        self.full = False  # truncated at the limit: nothing more is worth reading
        self.pending = False  # input taken that `step` has not decoded in full yet
        self._input = b""
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        # "deflate" in the wild is zlib-wrapped or raw: its first two bytes tell which.
        self._sniff: bytes | None = b"" if codings == ["deflate"] else None
        self._zlib: zlib._Decompress | None = None
        if len(codings) == 1 and codings[0] in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif codings and codings != ["deflate"]:
            msg = f"{where}: unsupported content-encoding {short(encoding, 40)!r}"
            raise PayloadError(msg)

    def feed(self, raw: bytes) -> None:
        """Take the next raw (still encoded) chunk and decode all of it."""
        self.push(raw)
        while self.pending:
            self.step()

    def push(self, raw: bytes) -> None:
        """Take the next raw chunk without decoding it: `step` does, a bounded piece at a time
        (`read_answer` takes each piece's bytes from the in-flight budget first)."""
        if self.full or not raw:
            return
        self._input = self._input + raw if self._input else raw
        self.pending = True

    @property
    def step_size(self) -> int:
        """The most decoded bytes the next `step` keeps."""
        room = self._limit - self.size
        if self._zlib is None and self._sniff is None:
            return min(len(self._input), room)
        return min(room, STEP)

    def step(self) -> None:
        """Decode one piece of the input taken so far: at most `step_size` bytes are kept."""
        if self.full or not self.pending:
            return
        raw, self._input = self._input, b""
        if self._sniff is not None:
            raw = self._sniff + raw
            if len(raw) < 2:
                self._sniff, self.pending = raw, False
                return
            self._sniff = None
            wrapped = raw[0] & 0x0F == 8 and (raw[0] << 8 | raw[1]) % 31 == 0
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        if self._zlib is None:
            self.pending = False
            self._keep(raw)
            return
        # One byte past the room left tells "too large" without holding more; a step of
        # at most STEP keeps zlib's own output buffer small too.
        room = min(self._limit - self.size + 1, STEP)
        try:
            out = self._zlib.decompress(raw, room)
        except zlib.error as exc:
            msg = f"{self._where}: undecodable body ({short(str(exc), 80)})"
            raise PayloadError(msg) from None
        self._keep(out)
        self._input = self._zlib.unconsumed_tail
        if self._zlib.eof:
            # Bytes after the end of the stream are ignored, as httpx does.
            self._input, self.pending = b"", False
        elif not self._input and len(out) < room:
            # All input taken, and no output left pending (a full step may have some).
            self.pending = False

    def _keep(self, data: bytes) -> None:
        if self.size + len(data) > self._limit:
            if not self._truncate:
                msg = (
                    f"{self._where}: answer larger than max_answer_bytes"
                    f" ({self._limit:,} bytes); not read further"
                )
                raise AnswerTooLarge(msg)
            data = data[: self._limit - self.size]
            self.full = True
            self.pending, self._input = False, b""
        if data:
            self._buffer += data
            self.size += len(data)

    def body(self) -> bytes:
        """The decoded body so far (the whole body once the last chunk was fed)."""
        body = bytes(self._buffer)
        self._buffer = bytearray()
        return body


async def read_answer(
    http: httpx.AsyncClient,
    url: httpx.URL,
    headers: dict[str, str],
    *,
    limit: int,
    path: str,
    held: HeldBytes | None = None,
) -> httpx.Response:
    """GET `url`, its body decoded as it streams in and cut at `limit` decoded bytes.

    A 2xx answer larger than `limit` raises `AnswerTooLarge` as soon as the cap is crossed
    (or at once, when its `Content-Length` says so); other answers are read only as far as
    their error message (`MAX_ERROR_BODY`). httpx errors pass through. With `held`, every
    piece's decoded bytes are taken from the in-flight budget before it is decoded (waiting
    their turn), and stay held for the caller to parse.
    """
    where = f"GET {path}"
    async with http.stream("GET", url, headers=headers) as streamed:
        ok = 200 <= streamed.status_code < 300
        cap = limit if ok else MAX_ERROR_BODY
        encoding = streamed.headers.get("content-encoding", "")
        declared = streamed.headers.get("content-length", "")
        if ok and not encoding and declared.isdigit() and int(declared) > cap:
            # Refused on its word: the body is not even read.
            msg = f"{where}: answer larger than max_answer_bytes ({cap:,} bytes); not read"
            raise AnswerTooLarge(msg)
        try:
            # A response built whole (a test's MockTransport) arrives read and decoded.
            whole: bytes | None = streamed.content
        except httpx.ResponseNotRead:
            whole = None
        body = BoundedBody("" if whole is not None else encoding, cap, where=where, truncate=not ok)
        raws = _one(whole) if whole is not None else streamed.aiter_raw()
        async for raw in raws:
            body.push(raw)
            while body.pending:
                if held is None:
                    body.step()
                    continue
                taken, before = body.step_size, body.size
                await held.take(taken)
                body.step()
                held.give_back(taken - (body.size - before))  # a step may keep less
            if body.full:
                break
        kept = [(k, v) for k, v in streamed.headers.multi_items() if k.lower() not in _BODY_HEADERS]
        extensions = {
            k: v for k, v in streamed.extensions.items() if k in ("reason_phrase", "http_version")
        }
    return httpx.Response(
        streamed.status_code,
        headers=kept,
        content=body.body(),
        request=streamed.request,
        extensions=extensions,
    )


async def _one(whole: bytes) -> AsyncIterator[bytes]:
    yield whole
