"""A Fireworks control-plane API look-alike, for tests and the demo.

`Simulator` is a plain ASGI 3 app that answers the job endpoints the watcher polls
(`GET /v1/accounts/{account}/{collection}[/{job_id}]`) from an in-memory table, with
scripted state timelines, fault injection and a small `/_sim/` control API so a
simulator running in another process can be driven over HTTP.

It deliberately imports nothing from `watcher`: it is written from the API docs, not from
the client, so the two cannot share a wire-format bug. Only the standard library is used;
uvicorn is imported lazily by `serve()`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any
from urllib.parse import parse_qs

#: The job collections the simulator serves; each is also its LIST response key.
COLLECTIONS: tuple[str, ...] = (
    "dpoJobs",
    "supervisedFineTuningJobs",
    "reinforcementFineTuningJobs",
    "batchInferenceJobs",
    "evaluationJobs",
)
STATE_PREFIX = "JOB_STATE_"
#: Entering one of these sets `completedTime`; leaving it (a resume) clears it.
FINAL_STATES: frozenset[str] = frozenset(
    STATE_PREFIX + s for s in ("COMPLETED", "FAILED", "CANCELLED", "EXPIRED", "EARLY_STOPPED")
)
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
DEFAULT_BASE_MODEL = "accounts/fireworks/models/llama-v3p1-8b-instruct"
SIGNED_LOGS_URL = "https://storage.example/logs?X-Goog-Signature=sim-signature"

#: google.rpc.Code numbers, as grpc-gateway puts them in error bodies.
GRPC_CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
_HTTP_TO_GRPC: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

#: Top-level field names a `readMask` may name (what the simulator emits plus documented
#: fields it never fills); anything else is rejected, as a real FieldMask would be.
_MASKABLE_FIELDS: frozenset[str] = frozenset(
    {
        "name",
        "displayName",
        "dataset",
        "createTime",
        "completedTime",
        "updateTime",
        "state",
        "status",
        "createdBy",
        "trainingConfig",
        "wandbConfig",
        "trainerLogsSignedUrl",
        "lossConfig",
        "awsS3Config",
        "azureBlobStorageConfig",
        "rendererHuggingFaceRepoId",
        "reservationTarget",
        "useReservation",
        "jobProgress",
        "outputModel",
        "estimatedCost",
        "evaluator",
        "model",
    }
)
#: `orderBy` field -> sort key. Both the proto (snake_case) and JSON spellings are accepted.
_ORDER_KEYS: dict[str, Callable[[_Job], Any]] = {
    "name": lambda job: job.job_id,
    "create_time": lambda job: job.create_time,
    "createTime": lambda job: job.create_time,
    "created_time": lambda job: job.create_time,
    "update_time": lambda job: job.update_time,
    "display_name": lambda job: job.display_name,
    "state": lambda job: job.state,
}
# grpc-gateway binds query parameters by their JSON and by their proto names.
_PARAM_ALIASES: dict[str, str] = {
    "read_mask": "readMask",
    "page_size": "pageSize",
    "page_token": "pageToken",
    "order_by": "orderBy",
}
_FILTER = re.compile(r'^\s*(state|display_name|displayName)\s*=\s*"?([^"]*)"?\s*$')

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: A scripted step: (seconds after the `script()` call, state, status code, status message).
Step = tuple[float, str, str, str]


@dataclass(frozen=True, slots=True)
class _Reply:
    """One HTTP answer, computed under the lock and sent after it is released."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class _HttpError(Exception):
    """Raised inside a handler; becomes a grpc-gateway style error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class _Fault:
    """A pending injected fault; `remaining` counts down per matching request."""

    remaining: int
    status: int | None
    path_contains: str
    retry_after: str | None
    body: str | None
    content_type: str
    delay: float
    malformed: bool
    truncated: bool


@dataclass(slots=True)
class _Job:
    """One job's mutable record; rendered to API JSON by `Simulator._render`."""

    collection: str
    job_id: str
    state: str
    status_code: str
    status_message: str
    display_name: str
    dataset: str
    base_model: str
    output_model: str
    created_by: str
    create_time: datetime
    update_time: datetime
    completed_time: datetime | None
    epochs: int
    learning_rate: float
    wandb: bool
    # (absolute clock time, state, status code, status message), oldest first.
    steps: list[tuple[float, str, str, str]] = field(default_factory=list)


def full_state(state: str) -> str:
    """`RUNNING` or `JOB_STATE_RUNNING` -> `JOB_STATE_RUNNING` (unknown names pass through)."""
    value = state.strip().upper()
    return value if value.startswith(STATE_PREFIX) else STATE_PREFIX + value


def _rfc3339(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.removesuffix("+00:00").removesuffix(".000000") + "Z"


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _json_bytes(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _error_reply(status: int, message: str) -> _Reply:
    code = GRPC_CODES[_HTTP_TO_GRPC.get(status, "UNKNOWN")]
    return _Reply(status, _json_bytes({"code": code, "message": message, "details": []}))


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


class Simulator:
    """The Fireworks API look-alike: call it as an ASGI app, drive it through its methods.

    Every method is thread-safe, so tests may change jobs while uvicorn serves the app
    from another thread.

    Args:
        api_key: The key requests must present (`Authorization: Bearer` or `X-Api-Key`).
        account_id: The only account the key may read; others answer 403.
        clock: Monotonic seconds; scripted steps fall due against it (inject a fake in tests).
        wandb_api_key: Echoed in every job's `wandbConfig.apiKey`, as the real API may do,
            so tests can prove the watcher never passes it on.
    """

    def __init__(
        self,
        *,
        api_key: str = "sim-key",
        account_id: str = "sim-account",
        clock: Callable[[], float] = time.monotonic,
        wandb_api_key: str = "sim-wandb-secret",
    ) -> None:
        self.api_key = api_key
        self.account_id = account_id
        self.wandb_api_key = wandb_api_key
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._faults: list[_Fault] = []
        self._requests: list[tuple[str, str]] = []

    # -- Python control API ------------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        *,
        collection: str = "dpoJobs",
        state: str = "JOB_STATE_PENDING",
        display_name: str | None = None,
        status_code: str = "OK",
        status_message: str = "",
        base_model: str = DEFAULT_BASE_MODEL,
        output_model: str | None = None,
        dataset: str | None = None,
        created_by: str = "sim-user@example.com",
        create_time: str | None = None,
        epochs: int = 1,
        learning_rate: float = 0.0001,
        wandb: bool = True,
    ) -> dict[str, Any]:
        """Add (or replace) a job and return its JSON.

        Args:
            job_id: The id inside the account, e.g. `my-dpo-job`.
            collection: One of `COLLECTIONS`.
            state: `PENDING` or `JOB_STATE_PENDING`; unknown names are kept as they are.
            display_name: Defaults to "Sim job {job_id}".
            output_model: Defaults to `accounts/{account}/models/{job_id}`.
            dataset: Defaults to `accounts/{account}/datasets/{job_id}-data`.
            create_time: RFC 3339; defaults to now.
            wandb: Whether the job has a `wandbConfig` (with the echoed API key).
        """
        if collection not in COLLECTIONS:
            raise ValueError(f"unknown collection {collection!r}")
        if not job_id or "/" in job_id:
            raise ValueError(f"invalid job id {job_id!r}")
        now = datetime.now(UTC)
        created = _parse_time(create_time) if create_time else now
        account = self.account_id
        job = _Job(
            collection=collection,
            job_id=job_id,
            state=full_state(state),
            status_code=status_code,
            status_message=status_message,
            display_name=f"Sim job {job_id}" if display_name is None else display_name,
            dataset=dataset or f"accounts/{account}/datasets/{job_id}-data",
            base_model=base_model,
            output_model=output_model or f"accounts/{account}/models/{job_id}",
            created_by=created_by,
            create_time=created,
            update_time=now,
            completed_time=now if full_state(state) in FINAL_STATES else None,
            epochs=epochs,
            learning_rate=learning_rate,
            wandb=wandb,
        )
        with self._lock:
            self._jobs[(collection, job_id)] = job
            return self._render(job)

    def set_state(
        self,
        job_id: str,
        state: str,
        *,
        collection: str = "dpoJobs",
        status_code: str = "OK",
        status_message: str = "",
    ) -> dict[str, Any]:
        """Move a job to `state` now and return its JSON; a pending script keeps running.

        Raises:
            KeyError: The job does not exist.
        """
        with self._lock:
            job = self._job(collection, job_id)
            self._advance(job)
            self._apply(job, state, status_code, status_message)
            return self._render(job)

    def remove_job(self, job_id: str, collection: str = "dpoJobs") -> None:
        """Delete a job; later GETs answer 404. Raises KeyError if it does not exist."""
        with self._lock:
            self._job(collection, job_id)
            del self._jobs[(collection, job_id)]

    def script(self, job_id: str, steps: Sequence[Step], collection: str = "dpoJobs") -> None:
        """Replace the job's timeline with `steps`, each `(seconds_from_now, state, code, message)`.

        Steps are applied lazily, whenever the job is read, once `clock()` has passed them,
        so no background task is needed and a fake clock makes them deterministic.
        """
        with self._lock:
            job = self._job(collection, job_id)
            start = self._clock()
            job.steps = sorted(
                (
                    (start + float(delay), state, code, message)
                    for delay, state, code, message in steps
                ),
                key=lambda step: step[0],
            )

    def add_fault(
        self,
        *,
        status: int | None = None,
        times: int = 1,
        path_contains: str = "",
        retry_after: str | None = None,
        body: str | None = None,
        content_type: str = "application/json",
        delay: float = 0.0,
        malformed: bool = False,
        truncated: bool = False,
    ) -> None:
        """Queue a fault for the next `times` API requests whose path (and query) contains `path_contains`.

        Faults are consumed first-in first-out; `/_sim/` requests never match.

        Args:
            status: Answer with this HTTP status and a grpc-style error body (or `body`).
            retry_after: Sent as the `Retry-After` header.
            body: A raw body instead of the error JSON, e.g. an HTML error page.
            content_type: The Content-Type of the faulty answer.
            delay: Seconds to wait before answering (the answer is otherwise normal unless
                another kind is set too); lets a client's timeout fire.
            malformed: Answer 200 with a body that is not JSON (`{"name": `).
            truncated: Answer with the first half of the real body (Content-Length matching
                the half, so every transport delivers it and only the JSON parse fails).
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        fault = _Fault(
            remaining=times,
            status=status,
            path_contains=path_contains,
            retry_after=retry_after,
            body=body,
            content_type=content_type,
            delay=delay,
            malformed=malformed,
            truncated=truncated,
        )
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[tuple[str, str]]:
        """A copy of the `(method, path)` of every API request served, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many API requests (not `/_sim/` ones) were served, faults included."""
        with self._lock:
            return len(self._requests)

    def clear_requests(self) -> None:
        """Forget the served requests (e.g. after setting up, before counting)."""
        with self._lock:
            self._requests.clear()

    def jobs(self, collection: str = "dpoJobs") -> list[dict[str, Any]]:
        """A snapshot of the collection's jobs as API JSON, ordered by name."""
        with self._lock:
            return [self._render(job) for job in self._sorted(collection, "")]

    def job(self, job_id: str, collection: str = "dpoJobs") -> dict[str, Any]:
        """One job's current JSON. Raises KeyError if it does not exist."""
        with self._lock:
            job = self._job(collection, job_id)
            self._advance(job)
            return self._render(job)

    # -- state (every helper below expects the lock to be held) ------------------------

    def _job(self, collection: str, job_id: str) -> _Job:
        try:
            return self._jobs[(collection, job_id)]
        except KeyError:
            raise KeyError(f"no job {collection}/{job_id}") from None

    def _advance(self, job: _Job) -> None:
        now = self._clock()
        while job.steps and job.steps[0][0] <= now:
            _, state, code, message = job.steps.pop(0)
            self._apply(job, state, code, message)

    @staticmethod
    def _apply(job: _Job, state: str, status_code: str, status_message: str) -> None:
        new_state = full_state(state)
        now = datetime.now(UTC)
        if new_state in FINAL_STATES:
            if job.state != new_state or job.completed_time is None:
                job.completed_time = now
        else:
            job.completed_time = None
        job.state = new_state
        job.status_code = status_code
        job.status_message = status_message
        job.update_time = now

    def _sorted(self, collection: str, order_by: str) -> list[_Job]:
        jobs = [job for (coll, _), job in self._jobs.items() if coll == collection]
        for job in jobs:
            self._advance(job)
        keys = [term.split() for term in order_by.split(",") if term.strip()] or [["name"]]
        # Stable sorts applied from the last key to the first give a multi-key order.
        jobs.sort(key=_ORDER_KEYS["name"])
        for term in reversed(keys):
            if (
                term[0] not in _ORDER_KEYS
                or len(term) > 2
                or term[1:] not in ([], ["asc"], ["desc"])
            ):
                raise _HttpError(400, f"invalid orderBy term {' '.join(term)!r}")
            jobs.sort(key=_ORDER_KEYS[term[0]], reverse=term[1:] == ["desc"])
        return jobs

    def _render(self, job: _Job) -> dict[str, Any]:
        """The job as proto3 JSON: empty fields are omitted, as the real gateway does."""
        document: dict[str, Any] = {
            "name": f"accounts/{self.account_id}/{job.collection}/{job.job_id}",
            "displayName": job.display_name,
            "dataset": job.dataset,
            "createTime": _rfc3339(job.create_time),
        }
        if job.completed_time is not None:
            document["completedTime"] = _rfc3339(job.completed_time)
        if job.collection != "dpoJobs":
            # DPO jobs have no updateTime; the other kinds do.
            document["updateTime"] = _rfc3339(job.update_time)
        document["state"] = job.state
        document["status"] = {"code": job.status_code, "message": job.status_message}
        document["createdBy"] = job.created_by
        document["trainingConfig"] = {
            "baseModel": job.base_model,
            "outputModel": job.output_model,
            "epochs": job.epochs,
            "learningRate": job.learning_rate,
            "loraRank": 8,
            "maxContextLength": 8192,
            "region": "US_IOWA_1",
        }
        if job.wandb:
            document["wandbConfig"] = {
                "enabled": True,
                "apiKey": self.wandb_api_key,
                "project": "sim-project",
                "entity": "sim-entity",
                "runId": job.job_id,
                "url": f"https://wandb.ai/sim-entity/sim-project/runs/{job.job_id}",
            }
        document["trainerLogsSignedUrl"] = SIGNED_LOGS_URL
        return {key: value for key, value in document.items() if value not in ("", None)}

    def _take_fault(self, target: str) -> _Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.path_contains in target:
                fault.remaining -= 1
                if fault.remaining == 0:
                    del self._faults[index]
                return fault
        return None

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
        else:
            reply = await self._serve_api(method, path, query, _headers(scope))
        await _send_reply(send, reply)

    async def _serve_api(
        self, method: str, path: str, query: str, headers: dict[str, str]
    ) -> _Reply:
        with self._lock:
            self._requests.append((method, path))
            fault = self._take_fault(f"{path}?{query}" if query else path)
        if fault is not None and fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            if fault.body is None:
                reply = _error_reply(fault.status, f"simulated fault: HTTP {fault.status}")
            else:
                reply = _Reply(fault.status, fault.body.encode(), fault.content_type)
        else:
            with self._lock:
                try:
                    reply = self._api(method, path, query, headers)
                except _HttpError as error:
                    reply = _error_reply(error.status, error.message)
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
        mask = self._mask_paths(params.get("readMask", ""))
        if len(parts) == 6:
            job = self._jobs.get((collection, parts[5]))
            if job is None:
                raise _HttpError(404, f"job accounts/{account}/{collection}/{parts[5]} not found")
            self._advance(job)
            return _Reply(200, _json_bytes(self._render_masked(job, mask)))
        return _Reply(200, _json_bytes(self._list(collection, params, mask)))

    def _authorized(self, headers: dict[str, str]) -> bool:
        expected = self.api_key.encode()
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode("latin-1"), expected
        ):
            return True
        return hmac.compare_digest(headers.get("x-api-key", "").encode("latin-1"), expected)

    @staticmethod
    def _mask_paths(read_mask: str) -> list[str] | None:
        paths = [_camel(p.strip()) for p in read_mask.split(",") if p.strip()]
        if not paths or "*" in paths:
            return None
        for path in paths:
            if path.split(".")[0] not in _MASKABLE_FIELDS:
                raise _HttpError(400, f"invalid readMask path {path!r}")
        return paths

    def _render_masked(self, job: _Job, mask: list[str] | None) -> dict[str, Any]:
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
        offset = _decode_token(params.get("pageToken", ""), order_by, filter_text)
        jobs = [job for job in self._sorted(collection, order_by) if _matches(job, filter_text)]
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

    # -- HTTP: the /_sim/ control API --------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> _Reply:
        parts = path.removeprefix("/_sim/").strip("/").split("/")
        try:
            payload: Any = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise TypeError("the body must be a JSON object")
            result = self._control_route(method, parts, payload)
        except KeyError as error:
            return _error_reply(404, str(error.args[0] if error.args else error))
        except (TypeError, ValueError) as error:
            return _error_reply(400, str(error))
        return _Reply(200, _json_bytes(result))

    def _control_route(self, method: str, parts: list[str], payload: dict[str, Any]) -> object:
        match method, parts:
            case "POST", ["jobs"]:
                return self.add_job(**payload)
            case "GET", ["jobs", collection]:
                return {"jobs": self.jobs(collection)}
            case "POST", ["jobs", collection, job_id, "state"]:
                return self.set_state(job_id, collection=collection, **payload)
            case "POST", ["jobs", collection, job_id, "script"]:
                raw_steps = payload.get("steps")
                if not isinstance(raw_steps, list):
                    raise TypeError("steps must be a list of [seconds, state, code, message]")
                steps = [(float(s), str(st), str(c), str(m)) for s, st, c, m in raw_steps]
                self.script(job_id, steps, collection=collection)
                return {}
            case "DELETE", ["jobs", collection, job_id]:
                self.remove_job(job_id, collection=collection)
                return {}
            case "POST", ["faults"]:
                self.add_fault(**payload)
                return {}
            case "DELETE", ["faults"]:
                self.clear_faults()
                return {}
            case "GET", ["stats"]:
                with self._lock:
                    return {
                        "requests": len(self._requests),
                        "jobs": len(self._jobs),
                        "faults": len(self._faults),
                    }
        raise KeyError(f"no control route {method} /_sim/{'/'.join(parts)}")


def _params(query: str) -> dict[str, str]:
    """Query parameters by their JSON name; a repeated parameter is joined with commas."""
    parsed = parse_qs(query, keep_blank_values=True)
    return {_PARAM_ALIASES.get(key, key): ",".join(values) for key, values in parsed.items()}


def _matches(job: _Job, filter_text: str) -> bool:
    if not filter_text.strip():
        return True
    found = _FILTER.match(filter_text)
    if found is None:
        raise _HttpError(400, "unsupported filter; the simulator knows only state=X")
    field_name, value = found.groups()
    if field_name == "state":
        return job.state == full_state(value)
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


def _headers(scope: Scope) -> dict[str, str]:
    return {
        key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]
    }


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send_reply(send: Send, reply: _Reply) -> None:
    headers = [
        (b"content-type", reply.content_type.encode("latin-1")),
        (b"content-length", str(len(reply.body)).encode()),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers),
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Nothing to set up; answering lets servers run with lifespan on as well as off.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- timelines -----------------------------------------------------------------------

_OOM = "Training failed: CUDA out of memory at step 412"


def demo_timeline(sim: Simulator) -> list[str]:
    """Add four DPO jobs that move within ~15 s, and return their ids.

    `demo-complete` goes PENDING→RUNNING→COMPLETED, `demo-oom` RUNNING→FAILED (INTERNAL,
    out of memory), `demo-cancel` CREATING→PENDING→RUNNING→CANCELLED and `demo-steady`
    stays RUNNING. Steps of one job are at least 4 s apart so a 2 s poll sees each.
    """
    sim.add_job("demo-complete", state="PENDING", display_name="Demo: completes")
    sim.script("demo-complete", [(4, "RUNNING", "OK", ""), (14, "COMPLETED", "OK", "")])
    sim.add_job("demo-oom", state="RUNNING", display_name="Demo: runs out of memory")
    sim.script("demo-oom", [(9, "FAILED", "INTERNAL", _OOM)])
    sim.add_job("demo-cancel", state="CREATING", display_name="Demo: cancelled")
    sim.script(
        "demo-cancel",
        [
            (3, "PENDING", "OK", ""),
            (7, "RUNNING", "OK", ""),
            (12, "CANCELLED", "CANCELLED", "Job cancelled by sim-user@example.com"),
        ],
    )
    sim.add_job("demo-steady", state="RUNNING", display_name="Demo: keeps running")
    return ["demo-complete", "demo-oom", "demo-cancel", "demo-steady"]


# (state, weight, status code, status message)
_POPULATION: tuple[tuple[str, int, str, str], ...] = (
    ("RUNNING", 30, "OK", ""),
    ("COMPLETED", 25, "OK", ""),
    ("PENDING", 15, "OK", ""),
    ("FAILED", 10, "INTERNAL", _OOM),
    ("CANCELLED", 8, "CANCELLED", "Job cancelled by sim-user@example.com"),
    ("CREATING", 5, "OK", ""),
    ("VALIDATING", 3, "OK", ""),
    ("EARLY_STOPPED", 2, "OK", ""),
    ("EXPIRED", 2, "DEADLINE_EXCEEDED", "Job expired"),
)
_BASE_MODELS = (
    DEFAULT_BASE_MODEL,
    "accounts/fireworks/models/qwen2p5-7b-instruct",
    "accounts/fireworks/models/llama-v3p3-70b-instruct",
)


def populate(sim: Simulator, n: int, *, seed: int = 0) -> list[str]:
    """Add `n` DPO jobs `job-00000`... with states drawn deterministically from `seed`.

    Create times are one minute apart from 2025-01-01, so ordering by them is stable too.
    Returns the job ids.
    """
    rng = random.Random(seed)
    epoch = datetime(2025, 1, 1, tzinfo=UTC)
    weights = [weight for _, weight, _, _ in _POPULATION]
    ids: list[str] = []
    for index in range(n):
        state, _, code, message = rng.choices(_POPULATION, weights)[0]
        job_id = f"job-{index:05d}"
        sim.add_job(
            job_id,
            state=state,
            status_code=code,
            status_message=message,
            display_name=f"Populated job {index}",
            base_model=rng.choice(_BASE_MODELS),
            create_time=_rfc3339(epoch + timedelta(minutes=index)),
            epochs=rng.randint(1, 3),
        )
        ids.append(job_id)
    return ids


# -- serving -------------------------------------------------------------------------


def base_url(sock: socket.socket) -> str:
    """`http://host:port` for a bound socket (IPv6 hosts get brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def listen_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0 picks a free one), ready for uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets whose proto is
    # IPPROTO_TCP, and without it every keep-alive answer stalls ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


def serve(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve `sim` with uvicorn until interrupted (blocking).

    The socket is bound and listening before `ready(base_url)` is called, so whoever is
    told the URL can connect at once; port 0 picks a free port.
    """
    import uvicorn  # lazy: only serving needs it, and tests of the app itself do not

    config = uvicorn.Config(
        sim, interface="asgi3", lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    with listen_tcp(host, port) as sock:
        if ready is not None:
            ready(base_url(sock))
        server.run(sockets=[sock])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator alone: `python -m watcher.simulator [--port P] [--jobs N]`."""
    parser = argparse.ArgumentParser(
        prog="python -m watcher.simulator", description="Serve a Fireworks API look-alike."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument(
        "--jobs", type=int, default=0, metavar="N", help="populate N jobs (0: the demo timeline)"
    )
    env_key = os.environ.get("FIREWORKS_API_KEY")
    parser.add_argument("--api-key", default=env_key or "sim-key")
    parser.add_argument("--account", default=os.environ.get("FIREWORKS_ACCOUNT_ID", "sim-account"))
    args = parser.parse_args(argv)

    sim = Simulator(api_key=args.api_key, account_id=args.account)
    count = len(populate(sim, args.jobs) if args.jobs > 0 else demo_timeline(sim))
    # A key taken from the environment may be a real one: never print it.
    shown_key = "(as already set)" if args.api_key == env_key else args.api_key

    def announce(url: str) -> None:
        print(
            f"Fireworks simulator listening on {url} with {count} jobs; point the watcher at it:"
            f" FIREWORKS_BASE_URL={url} FIREWORKS_ACCOUNT_ID={args.account}"
            f" FIREWORKS_API_KEY={shown_key}",
            flush=True,
        )

    previous = None
    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the SIGTERM it caught once it has shut down; make that exit 0.
        previous = signal.signal(signal.SIGTERM, _exit_zero)
    try:
        serve(sim, args.host, args.port, ready=announce)
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _exit_zero(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    raise SystemExit(main())
