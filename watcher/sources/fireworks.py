"""The Fireworks jobs API adapter: HTTP GET/LIST over an injected `httpx.AsyncClient`.

`FireworksClient` sends the requests, retries transient failures and translates every httpx
exception and unusable answer into the `watcher.core.errors.ApiError` tree. The pure parts
are beside it: `parse` (JSON into snapshots), `retry` (when to try again) and `answers`
(error answers as one-line messages).

The snapshot keeps only the fields the watcher uses, so secrets in a job payload
(`wandbConfig.apiKey`, `*SignedUrl`, cloud credentials) never leave this module.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from datetime import datetime
from typing import Final
from urllib.parse import quote

import anyio
import httpx
import structlog

from watcher import __version__
from watcher.core.budget import RequestBudget
from watcher.core.clock import utcnow
from watcher.core.errors import ApiRejected, ApiUnavailable, PayloadError
from watcher.core.kinds import DEFAULT_BASE_URL, NOT_FOUND, JobKind
from watcher.core.model import JobRef, JobSnapshot
from watcher.core.names import shown_name
from watcher.core.text import scrub
from watcher.core.urls import host_port
from watcher.sources.answers import (
    decode_json,
    error_message,
    is_api_error_body,
    request_line,
    short,
)
from watcher.sources.inflight import HeldBytes, InflightBytes, return_big_blocks
from watcher.sources.items import ItemReader
from watcher.sources.pages import JobListing, JobPage, PageMemo, Paging, Seen, pages_needed
from watcher.sources.parse import parse_job
from watcher.sources.retry import (
    DEFAULT_RETRY,
    RequestRetry,
    backoff_delay,
    is_retryable,
    retry_hint,
)
from watcher.sources.stream import (
    ACCEPT_ENCODING,
    DEFAULT_MAX_ANSWER_BYTES,
    DEFAULT_MAX_INFLIGHT_BYTES,
    read_answer,
)

log = structlog.get_logger("watcher")

USER_AGENT: Final = f"fireworks-watcher/{__version__}"
#: The API caps pages at 200 and coerces larger values down.
MAX_PAGE_SIZE: Final = 200

#: Words by which a 400 names the `readMask` (the API's schema may drop a field we ask for).
_MASK_WORDS: Final = ("readmask", "read_mask", "field mask", "fieldmask")


class FireworksClient:
    """Reads Fireworks jobs through an `httpx.AsyncClient` owned by the caller.

    No timeout is set here: build the client with one (e.g.
    `httpx.AsyncClient(timeout=httpx.Timeout(10.0))`); a timeout is then retried like any
    transport error and ends as `ApiUnavailable`. Every method raises only
    `watcher.core.errors.ApiError` subclasses: `ApiUnavailable` (transient, after the retries of
    `retry`), `ApiRejected` (4xx, or no HTTP answer another try could fix, with status 0;
    not retried) or `PayloadError` (an answer that is not the expected JSON).

    Args:
        http: The HTTP client; its transport, timeout and limits are the caller's choice.
        account_id: The Fireworks account whose jobs are read.
        api_key: Sent as `Authorization: Bearer <key>`; never put in messages.
        base_url: The API root, without `/v1`.
        retry: The retry policy for transient failures.
        sleep: Awaited between tries; tests pass a recording fake.
        rand: The jitter source, returning a float in [0, 1).
        now: The clock for HTTP-date `Retry-After` values.
        deadline: Seconds one whole request (headers and body) may take, however its bytes
            trickle in; httpx's own timeout bounds each read only. Past it the try counts
            as a timeout: retried, then `ApiUnavailable`. None: no deadline.
        max_answer_bytes: The most decoded bytes one answer (a page or a job) may have; a
            larger one is not read further and is a `PayloadError` (compressed answers are
            counted as they expand, so a small gzip bomb costs this much, not its expansion).
        max_inflight_bytes: The most decoded bytes every answer in flight holds together,
            from the first byte read until it is parsed; an answer that would pass it waits
            its turn (`watcher.sources.inflight`).

    Attributes:
        inflight: The byte budget every answer in flight shares (its `high_water` and
            `waited` say how full it got and how many answers waited their turn).
        requests_sent: HTTP requests attempted so far, retries included (the server may
            have seen a request that failed in transport, so each counts against the budget).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        account_id: str,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        retry: RequestRetry = DEFAULT_RETRY,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rand: Callable[[], float] = random.random,
        now: Callable[[], datetime] = utcnow,
        budget: RequestBudget | None = None,
        deadline: float | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
    ) -> None:
        self._deadline = deadline
        self.inflight = InflightBytes(max_inflight_bytes, per_answer=max_answer_bytes)
        return_big_blocks()  # answers are the process's big blocks
        try:
            url = httpx.URL(base_url)
        except httpx.InvalidURL as exc:
            # A programming error: the config has validated fireworks.base_url already.
            msg = f"invalid Fireworks base URL: {exc}"
            raise ValueError(msg) from None
        if url.scheme not in ("http", "https") or not url.host:
            msg = "invalid Fireworks base URL: expected http(s)://host[:port]"
            raise ValueError(msg)
        self._http = http
        # Named in connection errors: which host and port was tried (never the key).
        self._authority = host_port(url.host, url.port or (443 if url.scheme == "https" else 80))
        self._account_id = account_id
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._retry = retry
        self._sleep = sleep
        self._rand = rand
        self._now = now
        self._budget = budget
        # Per kind, what the last LIST said of each job (by name): lets a LIST skip parsing
        # jobs whose state and status did not change.
        self._listed: dict[JobKind, dict[str, Seen]] = {}
        # A digest of the last body and the jobs of each LIST page, to skip decoding a page
        # that did not change.
        self._page_memos: dict[tuple[JobKind, int], PageMemo] = {}
        self._items = ItemReader(account_id, self._redact)
        # Kinds whose `readMask` the API refused: they are read whole (and parsed the same).
        self.unmasked: set[JobKind] = set()
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
            "User-Agent": USER_AGENT,
        }
        self.requests_sent = 0

    @property
    def max_answer_bytes(self) -> int:
        """The most decoded bytes one answer may have."""
        return self.inflight.per_answer

    @max_answer_bytes.setter
    def max_answer_bytes(self, size: int) -> None:
        self.inflight.set_limits(self.inflight.limit, per_answer=size)

    def set_answer_limits(self, *, max_answer_bytes: int, max_inflight_bytes: int) -> None:
        """Bound one answer, and every answer in flight together, from now on (SIGHUP)."""
        self.inflight.set_limits(max_inflight_bytes, per_answer=max_answer_bytes)

    def set_request_timeout(self, seconds: float) -> None:
        """Give every request from now on `seconds` per read and in all (SIGHUP)."""
        self._http.timeout = httpx.Timeout(seconds)
        self._deadline = seconds

    def __repr__(self) -> str:
        # Spelled out so the API key can never show up in a repr.
        return f"FireworksClient(account_id={self._account_id!r}, base_url={self._base_url!r})"

    def _collection_path(self, kind: JobKind) -> str:
        return f"/v1/accounts/{quote(self._account_id, safe='')}/{kind.collection}"

    def _resource_path(self, ref: JobRef) -> str:
        """`/v1/` and the resource's name, each part quoted (`watcher.core.kinds` says it)."""
        account, job_id = quote(self._account_id, safe=""), quote(ref.job_id, safe="")
        return "/v1/" + ref.kind.spec.resource_name(account, job_id)

    async def get_job(self, ref: JobRef) -> JobSnapshot:
        """Fetch one job; a 404 gives a snapshot in state `NOT_FOUND` rather than an error.

        Raises:
            PayloadError: The answer is not a job, or a job other than `ref`.
            ApiRejected: `ref`'s id is no path segment (status 0; nothing is sent).
        """
        if ref.job_id in ("", ".", ".."):
            # `quote` keeps dots, and the URL would resolve to the collection (or above it).
            msg = f"{ref.kind} job {shown_name(ref.job_id)} is not a resource id; not requested"
            raise ApiRejected(msg, status_code=0)
        path = self._resource_path(ref)
        async with self.inflight.hold() as held:
            response = await self._send(path, {}, kind=ref.kind, held=held, allow_404=True)
            return self._job_answer(ref, response)

    def _job_answer(self, ref: JobRef, response: httpx.Response) -> JobSnapshot:
        """The snapshot a GET answered (synchronous: parsed while its bytes are held)."""
        if response.status_code == 404:
            # Only the API's own "not found" means the job is gone: an HTML 404 from a proxy or
            # a wrong base_url must not turn every watched job into NOT_FOUND.
            if not is_api_error_body(response):
                raise ApiRejected(error_message(response), status_code=404)
            return JobSnapshot(ref=ref, account_id=self._account_id, state=NOT_FOUND)
        body = decode_json(response)
        snapshot = self._parse(body, kind=ref.kind, ref=ref, where=request_line(response))
        if snapshot.ref != ref:
            msg = f"{request_line(response)}: answered for job {snapshot.ref.job_id!r}"
            raise PayloadError(short(msg))
        return snapshot

    async def list_jobs(
        self, kind: JobKind, *, page_size: int = MAX_PAGE_SIZE
    ) -> list[JobSnapshot]:
        """Every job of `kind` in the account, following `nextPageToken` from the first page.

        A job seen on two pages (the token is offset-like, so pages shift when jobs are
        created meanwhile) is returned once, as last seen.

        Raises:
            PayloadError: A page is not the expected JSON, an item is not a job, or the
                server repeats a page token or never stops paging.
        """
        return (await self.listing(kind, page_size=page_size)).jobs

    async def listing(
        self, kind: JobKind, *, page_size: int = MAX_PAGE_SIZE, max_pages: int | None = None
    ) -> JobListing:
        """List jobs of `kind` page by page and gather them; see `pages` for `max_pages`.

        A job seen on two pages (the token is offset-like, so pages shift when jobs are
        created meanwhile) is returned once, as last seen.
        """
        jobs: dict[str, JobSnapshot] = {}
        last: JobPage | None = None
        async with aclosing(self.pages(kind, page_size=page_size, max_pages=max_pages)) as pages:
            async for last in pages:
                for snapshot in last.jobs:
                    jobs[snapshot.ref.job_id] = snapshot
        assert last is not None  # pages() yields at least one page or raises
        return JobListing(
            list(jobs.values()),
            complete=last.complete,
            total_size=last.total_size,
            pages=last.number,
        )

    async def pages(
        self, kind: JobKind, *, page_size: int = MAX_PAGE_SIZE, max_pages: int | None = None
    ) -> AsyncGenerator[JobPage, None]:
        """LIST `kind` from the first page, yielding each page as it arrives.

        With `max_pages`, the first page's `totalSize` tells how many pages the whole list
        takes; when that is more, paging stops after the first page, which says the list is
        incomplete (the caller then GETs what it still needs).

        Raises:
            PayloadError: A page is not the expected JSON, an item is not a job, or the
                server repeats a page token or never stops paging.
            ApiRejected: The kind has no collection (the account; status 0, nothing sent).
        """
        if not kind.spec.listable:
            raise ApiRejected(f"{kind} is one resource, not a list; not requested", status_code=0)
        path = self._collection_path(kind)
        size = min(max(page_size, 1), MAX_PAGE_SIZE)
        params = {"pageSize": str(size)}
        known = self._listed.get(kind, {})
        fresh: dict[str, Seen] = {}
        paging = Paging(size)
        total: int | None = None
        for number in itertools.count(1):
            async with self.inflight.hold() as held:
                response = await self._send(path, params, kind=kind, held=held)
                page = self._decode_page(kind, number, response, known)
                where = request_line(response)
                del response  # its bytes go back with the budget's share, before the next page
            fresh.update(page.seen)
            jobs = page.jobs
            if number == 1:
                total = page.total_size
            try:
                token = paging.next_token(number, page)
            except PayloadError as exc:
                raise PayloadError(f"{where}: {exc}") from None
            if token is None:
                self._listed[kind] = fresh  # vanished jobs leave the cache with the list
                for key in [k for k in self._page_memos if k[0] == kind and k[1] > number]:
                    del self._page_memos[key]  # the list got shorter
                yield JobPage(jobs, number, total, last=True, complete=True)
                return
            if max_pages is not None and pages_needed(total, size, number) > max_pages:
                known.update(fresh)
                self._listed[kind] = known
                yield JobPage(jobs, number, total, last=True, complete=False)
                return
            yield JobPage(jobs, number, total, last=False, complete=False)
            params["pageToken"] = token  # `Paging` stops at MAX_PAGES

    def _decode_page(
        self, kind: JobKind, number: int, response: httpx.Response, known: Mapping[str, Seen]
    ) -> PageMemo:
        """The jobs of one LIST page; a page whose bytes are the same as last time is not
        decoded again (on a quiet account that is nearly every page)."""
        memo = self._page_memos.get((kind, number))
        digest = hashlib.blake2b(response.content, digest_size=16).digest()
        if memo is not None and memo.digest == digest:
            return memo
        where = request_line(response)
        body = decode_json(response)
        if not isinstance(body, dict):
            msg = f"{where}: list body is not a JSON object (got {type(body).__name__})"
            raise PayloadError(msg)
        items = body.get(kind.collection, [])  # proto3 JSON omits an empty list
        if not isinstance(items, list):
            msg = f"{where}: {kind.collection!r} is not a list"
            raise PayloadError(msg)
        seen: dict[str, Seen] = {}
        read = self._items.read  # a bad item costs only itself (watcher.sources.items)
        jobs = [
            job
            for i, item in enumerate(items)
            if (job := read(item, kind, known, seen, f"{where} item {i}")) is not None
        ]
        self._items.page_done(where)
        total = body.get("totalSize")
        memo = PageMemo(
            digest=digest,
            jobs=jobs,
            seen=seen,
            total_size=total if isinstance(total, int) else None,
            token=body.get("nextPageToken"),
        )
        self._page_memos[(kind, number)] = memo
        return memo

    def _parse(self, item: object, *, kind: JobKind, ref: JobRef | None, where: str) -> JobSnapshot:
        try:
            return parse_job(item, kind=kind, account_id=self._account_id, ref=ref)
        except PayloadError as exc:
            raise PayloadError(f"{where}: {exc}") from None

    def _redact(self, text: str) -> str:
        return scrub(text, [self._api_key])

    async def _send(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        kind: JobKind,
        held: HeldBytes,
        allow_404: bool = False,
    ) -> httpx.Response:
        """GET `path` with the kind's `readMask`; a 400 that names the mask is tried once more
        without it, and the kind is read whole from then on (the API's schema drifts)."""
        if kind in self.unmasked:
            return await self._retrying(path, params, held=held, allow_404=allow_404)
        try:
            masked = {**params, "readMask": kind.spec.read_mask}
            return await self._retrying(path, masked, held=held, allow_404=allow_404)
        except ApiRejected as exc:
            if exc.status_code != 400 or not any(w in str(exc).lower() for w in _MASK_WORDS):
                raise
            self.unmasked.add(kind)
            log.warning("api.read_mask_dropped", kind=str(kind), error=str(exc))
        return await self._retrying(path, params, held=held, allow_404=allow_404)

    async def _retrying(
        self, path: str, params: Mapping[str, str], *, held: HeldBytes, allow_404: bool
    ) -> httpx.Response:
        """GET `path`, retrying as the official SDK does; return a 2xx (or allowed 404) answer.

        408, 409, 429 and 5xx are retried, as are transport errors; `x-should-retry` overrides
        that either way, and `retry-after-ms` / `Retry-After` set the pause. Every try is paid
        for from the budget.
        """
        policy = self._retry
        held.give_back()  # an answer refused before (a `readMask` the API dropped)
        # Built once per call, not per attempt: httpx re-validates every URL character.
        url = httpx.URL(self._base_url + path, params=params)
        for attempt in range(1, policy.attempts + 1):
            last = attempt == policy.attempts
            retry_after: float | None = None
            rejected: int | None = None  # the 4xx status, when that is what a retry answered
            if self._budget is not None:
                # Every request, retries and pages included, is paid for from one budget.
                await self._sleep(self._budget.take())
            self.requests_sent += 1
            try:
                with anyio.fail_after(self._deadline if self._deadline is not None else math.inf):
                    response = await read_answer(
                        self._http,
                        url,
                        self._headers,
                        limit=self.max_answer_bytes,
                        path=path,
                        held=held,
                    )
            except TimeoutError:
                # A dripping answer: every read arrived in time, the whole one did not.
                detail = f"GET {path}: no whole answer within {self._deadline:g} s"
            except httpx.TransportError as exc:
                # Timeouts, connection and protocol errors: the request may or may not have
                # reached the server, and another try is the cure.
                detail = f"GET {path}: {type(exc).__name__}"
                if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    detail += f": cannot connect to {self._authority}"
                if str(exc):
                    detail += f": {short(str(exc))}"
            except httpx.HTTPError as exc:  # e.g. TooManyRedirects: another try will not help
                msg = f"GET {path}: {type(exc).__name__}"
                raise ApiRejected(msg, status_code=0) from None
            else:
                status = response.status_code
                if 200 <= status < 300 or (allow_404 and status == 404):
                    return response
                detail = self._redact(error_message(response))
                transient = is_retryable(status)
                hint = response.headers.get("x-should-retry", "").strip().lower()
                if hint == "false" or (hint != "true" and not transient):
                    if transient:
                        raise ApiUnavailable(detail)
                    raise ApiRejected(detail, status_code=status)
                rejected = None if transient else status
                retry_after = retry_hint(response.headers, now=self._now())
                if retry_after is not None and retry_after > policy.max_retry_after:
                    msg = f"{detail} (retry after {retry_after:g} s)"
                    raise ApiUnavailable(msg, retry_after=retry_after)
            if last:
                tries = "1 attempt" if attempt == 1 else f"{attempt} attempts"
                msg = self._redact(f"{detail} (gave up after {tries})")
                if rejected is not None:
                    raise ApiRejected(msg, status_code=rejected)
                raise ApiUnavailable(msg, retry_after=retry_after)
            held.give_back()  # the failed try's bytes are not held through the pause
            await self._sleep(
                backoff_delay(attempt, policy, retry_after=retry_after, rand=self._rand)
            )
        raise AssertionError("unreachable: RequestRetry.attempts >= 1")  # pragma: no cover
