"""The Fireworks API itself: the ASGI app, with routing, auth, readMask, LIST paging and errors."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs

from fireworks_sim.control import _Control
from fireworks_sim.faults import _take_fault
from fireworks_sim.hostile import Attack, serve_attack
from fireworks_sim.model import COLLECTIONS, _Resource, full_state
from fireworks_sim.scenarios import scenario
from fireworks_sim.shapes import ACCOUNT_FIELDS, FIELDS, render_account
from fireworks_sim.wire import (
    Receive,
    Scope,
    Send,
    _error_reply,
    _headers,
    _HttpError,
    _json_bytes,
    _lifespan,
    _read_body,
    _Reply,
    _send_reply,
)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# grpc-gateway binds query parameters by their JSON and by their proto names.
_PARAM_ALIASES: dict[str, str] = {
    "read_mask": "readMask",
    "page_size": "pageSize",
    "page_token": "pageToken",
    "order_by": "orderBy",
    "show_deleted": "showDeleted",
}
_FILTER = re.compile(r'^\s*(state|display_name|displayName)\s*=\s*"?([^"]*)"?\s*$')


class Simulator(_Control):
    """The Fireworks API look-alike: call it as an ASGI app, drive it through its methods.

    Every method is thread-safe, so tests may change resources while uvicorn serves the app
    from another thread. The methods say "job" for any resource, deployments included.

    Args:
        api_key: The key requests must present (`Authorization: Bearer` or `X-Api-Key`).
        account_id: The only account the key may read; others answer 403.
        clock: Monotonic seconds; scripted steps fall due against it, progress moves with it
            and every timestamp derives from it (inject a fake in tests).
        wandb_api_key: Echoed in `wandbConfig.apiKey` (kinds that have it), as the real API
            may do, so tests can prove the watcher never passes it on.
        route_api_key: Echoed in every deployment's `directRouteApiKeys`, for the same reason.
        start_time: The wall time that `clock()` at construction stands for (default: now).
    """

    # -- HTTP: the API -----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI 3 entry point."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are no part of the API
        path: str = scope["path"]
        query: str = scope.get("query_string", b"").decode("latin-1")
        method: str = scope["method"]
        if path.startswith("/_sim/"):
            body = await _read_body(receive)
            reply = self._control(method, path, body)
        elif (attack := self._attack_on(path)) is not None:
            await self._serve_attacked(attack, method, path, query, _headers(scope), receive, send)
            return
        else:
            reply = await self._serve_api(method, path, query, _headers(scope))
        await _send_reply(send, reply)

    def _control_route(self, method: str, parts: list[str], payload: dict[str, Any]) -> object:
        # `POST /_sim/scenario` is routed here: the scenarios are built on the control API.
        if (method, parts) == ("POST", ["scenario"]):
            return {"resources": scenario(self, **payload)}
        return super()._control_route(method, parts, payload)

    def _attack_on(self, path: str) -> Attack | None:
        parts = path.split("/")
        if len(parts) < 5 or parts[:3] != ["", "v1", "accounts"]:
            return None
        with self._lock:
            return self._attacks.get(parts[4])

    async def _serve_attacked(
        self,
        attack: Attack,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        receive: Receive,
        send: Send,
    ) -> None:
        collection = path.split("/")[4]
        with self._lock:
            self._requests.append((method, path))

        def make(index: int) -> dict[str, Any]:
            with self._lock:
                job = self.build(f"flood-{index}", collection=collection, at=self._clock())
                return self._render(job)

        await serve_attack(
            attack,
            collection=collection,
            account=self.account_id,
            is_list=len(path.rstrip("/").split("/")) == 5,
            real=lambda: self._answer(method, path, query, headers),
            make=make,
            receive=receive,
            send=send,
        )

    def _answer(self, method: str, path: str, query: str, headers: dict[str, str]) -> _Reply:
        with self._lock:
            try:
                return self._api(method, path, query, headers)
            except _HttpError as error:
                return _error_reply(error.status, error.message)

    async def _serve_api(
        self, method: str, path: str, query: str, headers: dict[str, str]
    ) -> _Reply:
        with self._lock:
            self._requests.append((method, path))
            fault = _take_fault(self._faults, self._chaos, f"{path}?{query}" if query else path)
        if fault is not None and fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            if fault.body is None:
                reply = _error_reply(fault.status, f"simulated fault: HTTP {fault.status}")
            else:
                reply = _Reply(fault.status, fault.body.encode(), fault.content_type)
        else:
            reply = self._answer(method, path, query, headers)
            if fault is not None and fault.malformed:
                reply = _Reply(200, b'{"name": ', fault.content_type)
            elif fault is not None and fault.truncated:
                reply = replace(reply, body=reply.body[: len(reply.body) // 2])
        if fault is not None and fault.retry_after is not None:
            reply = replace(reply, headers=(*reply.headers, ("retry-after", fault.retry_after)))
        return reply

    def _api(self, method: str, path: str, query: str, headers: dict[str, str]) -> _Reply:
        if not self._authorized(headers):
            raise _HttpError(401, "request is missing a valid API key")
        parts = path.split("/")
        if len(parts) == 4 and parts[:3] == ["", "v1", "accounts"] and parts[3]:
            return self._get_account(method, parts[3], query)
        if len(parts) not in (5, 6) or parts[:3] != ["", "v1", "accounts"]:
            raise _HttpError(404, f"no route for {path}")
        if method != "GET":
            raise _HttpError(405, f"method {method} is not allowed here")
        account, collection = parts[3], parts[4]
        if account != self.account_id:
            raise _HttpError(403, f"permission denied for account {account!r}")
        if collection not in COLLECTIONS:
            raise _HttpError(404, f"no route for {path}")
        params = _params(query)
        mask = self._mask_paths(params.get("readMask", ""), collection)
        self._tick()
        if len(parts) == 6:
            job = self._jobs.get((collection, parts[5]))
            if job is None:
                raise _HttpError(404, f"job accounts/{account}/{collection}/{parts[5]} not found")
            self._advance(job, self._clock())
            return _Reply(200, _json_bytes(self._render_masked(job, mask)))
        return _Reply(200, _json_bytes(self._list(collection, params, mask)))

    def _get_account(self, method: str, account_id: str, query: str) -> _Reply:
        """`GET /v1/accounts/{id}`: the account itself (the key reads its own account only)."""
        if method != "GET":
            raise _HttpError(405, f"method {method} is not allowed here")
        if account_id != self.account_id:
            raise _HttpError(403, f"permission denied for account {account_id!r}")
        mask = self._mask_paths(_params(query).get("readMask", ""), "accounts")
        document = render_account(self._account(account_id))
        return _Reply(200, _json_bytes(document if mask is None else _mask(document, mask)))

    def _authorized(self, headers: dict[str, str]) -> bool:
        expected = self.api_key.encode()
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode("latin-1"), expected
        ):
            return True
        return hmac.compare_digest(headers.get("x-api-key", "").encode("latin-1"), expected)

    @staticmethod
    def _mask_paths(read_mask: str, collection: str) -> list[str] | None:
        paths = [_camel(p.strip()) for p in read_mask.split(",") if p.strip()]
        if not paths or "*" in paths:
            return None
        known = ACCOUNT_FIELDS if collection == "accounts" else FIELDS[collection]
        for path in paths:
            if path.split(".")[0] not in known:
                raise _HttpError(400, f"invalid readMask path {path!r} for {collection}")
        return paths

    def _render_masked(self, job: _Resource, mask: list[str] | None) -> dict[str, Any]:
        document = self._render(job)
        return document if mask is None else _mask(document, mask)

    def _list(
        self, collection: str, params: dict[str, str], mask: list[str] | None
    ) -> dict[str, Any]:
        try:
            size = int(params.get("pageSize") or DEFAULT_PAGE_SIZE)
        except ValueError:
            raise _HttpError(400, "pageSize must be an integer") from None
        if size < 0:
            raise _HttpError(400, "pageSize must not be negative")
        size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        order_by = params.get("orderBy", "")
        filter_text = params.get("filter", "")
        show_deleted = params.get("showDeleted", "").lower()
        if show_deleted not in ("", "true", "false", "1", "0"):
            raise _HttpError(400, "showDeleted must be true or false")
        offset = _decode_token(params.get("pageToken", ""), order_by, filter_text)
        jobs = [
            job
            for job in self._sorted(collection, order_by)
            if _matches(job, filter_text)
            and (job.state != "DELETED" or show_deleted in ("true", "1"))
        ]
        page = jobs[offset : offset + size]
        # proto3 JSON omits an empty list, an empty token and a zero count.
        out: dict[str, Any] = {}
        if page:
            out[collection] = [self._render_masked(job, mask) for job in page]
        if offset + size < len(jobs):
            out["nextPageToken"] = _encode_token(offset + size, order_by, filter_text)
        if jobs:
            out["totalSize"] = len(jobs)
        return out


def _mask(document: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """Keep only the FieldMask `paths` (dotted paths reach into nested objects)."""
    out: dict[str, Any] = {}
    for path in paths:
        source: Any = document
        target = out
        parts = path.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(source, dict) or part not in source:
                break
            if depth == len(parts) - 1:
                target[part] = source[part]
            else:
                source = source[part]
                target = target.setdefault(part, {})
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _params(query: str) -> dict[str, str]:
    """Query parameters by their JSON name; a repeated parameter is joined with commas."""
    parsed = parse_qs(query, keep_blank_values=True)
    return {_PARAM_ALIASES.get(key, key): ",".join(values) for key, values in parsed.items()}


def _matches(job: _Resource, filter_text: str) -> bool:
    if not filter_text.strip():
        return True
    found = _FILTER.match(filter_text)
    if found is None:
        raise _HttpError(400, "unsupported filter; the simulator knows only state=X")
    field_name, value = found.groups()
    if field_name == "state":
        return job.state == full_state(value, job.collection)
    return job.display_name == value


def _encode_token(offset: int, order_by: str, filter_text: str) -> str:
    # The token binds orderBy and filter: the docs require them unchanged while paging.
    raw = json.dumps([offset, order_by, filter_text]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, order_by: str, filter_text: str) -> int:
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        offset, token_order, token_filter = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise _HttpError(400, "invalid pageToken") from None
    if not isinstance(offset, int) or offset < 0:
        raise _HttpError(400, "invalid pageToken")
    if (token_order, token_filter) != (order_by, filter_text):
        raise _HttpError(400, "orderBy and filter must match the call that gave the pageToken")
    return offset
