"""Tests for the Fireworks API adapter: parsing, retry arithmetic and the HTTP client.

The client talks to `httpx.MockTransport` handlers (small stateful classes), and a recording
fake `sleep` makes backoff instant and observable.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from watcher import __version__
from watcher.core.errors import ApiRejected, ApiUnavailable, PayloadError
from watcher.core.kinds import NOT_FOUND
from watcher.core.model import JobKind, JobRef, JobSnapshot
from watcher.sources.answers import error_message
from watcher.sources.fireworks import FireworksClient
from watcher.sources.parse import parse_job
from watcher.sources.retry import RequestRetry, backoff_delay, parse_retry_after


@pytest.fixture
def anyio_backend() -> str:
    """Run the async tests on asyncio only."""
    return "asyncio"


ACCOUNT = "acme"
API_KEY = "fw_SECRET_key_0123456789"
BASE_URL = "http://127.0.0.1:8000"  # MockTransport sends nothing; loopback in case it ever did
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
DPO_REF = JobRef(kind=JobKind.DPO, job_id="my-dpo-job")
DPO_PATH = "/v1/accounts/acme/dpoJobs/my-dpo-job"
WANDB_KEY = "wandb-SECRET-4242"
SIGNED_URL = "https://storage.example/logs?X-Goog-Signature=SIGNED-SECRET"


def dpo_payload(**overrides: object) -> dict[str, object]:
    """A DPO job shaped like the documented GET example (seed), with real-looking values."""
    payload: dict[str, object] = {
        "name": "accounts/acme/dpoJobs/my-dpo-job",
        "displayName": "DPO run 7",
        "dataset": "accounts/acme/datasets/prefs",
        "createTime": "2025-03-01T10:00:00Z",
        "completedTime": "2025-03-01T11:30:00Z",
        "state": "JOB_STATE_COMPLETED",
        "status": {"code": "OK", "message": ""},
        "createdBy": "ana@example.com",
        "trainingConfig": {
            "outputModel": "accounts/acme/models/out",
            "baseModel": "accounts/fireworks/models/llama-v3p1-8b-instruct",
            "learningRate": 0.0001,
            "region": "REGION_UNSPECIFIED",
        },
        "wandbConfig": {
            "enabled": True,
            "apiKey": WANDB_KEY,
            "project": "p",
            "url": "https://wandb.ai/acme/p/runs/1",
        },
        "trainerLogsSignedUrl": SIGNED_URL,
    }
    payload.update(overrides)
    return payload


# --- fakes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer; a fresh `httpx.Response` is built each time it is served."""

    status: int = 200
    body: object = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def build(self) -> httpx.Response:
        """The answer as an httpx response (JSON unless raw `content` is given)."""
        if self.content is not None:
            return httpx.Response(self.status, content=self.content, headers=self.headers)
        return httpx.Response(self.status, json=self.body, headers=self.headers)


class ScriptedApi:
    """Serves its answers in order (the last one repeats) and records every request."""

    def __init__(self, *answers: Reply | Exception) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer.build()


class PagedApi:
    """A LIST endpoint: maps the `pageToken` query value ("" for none) to a page body."""

    def __init__(self, pages: Mapping[str, object]) -> None:
        self.pages = pages
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json=self.pages[request.url.params.get("pageToken", "")])


class RecordingSleep:
    """Stands in for `anyio.sleep`: records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@asynccontextmanager
async def client_for(
    handler: ScriptedApi | PagedApi,
    sleep: RecordingSleep | None = None,
    retry: RequestRetry | None = None,
) -> AsyncIterator[FireworksClient]:
    """A FireworksClient over a MockTransport, with fixed jitter (0.5) and clock (NOW)."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        yield FireworksClient(
            http,
            account_id=ACCOUNT,
            api_key=API_KEY,
            base_url=BASE_URL,
            retry=retry or RequestRetry(),
            sleep=sleep or RecordingSleep(),
            rand=lambda: 0.5,
            now=lambda: NOW,
        )


# --- parse_job -----------------------------------------------------------------------------


PARSE_CASES: list[tuple[JobKind, dict[str, object], dict[str, str]]] = [
    (
        JobKind.DPO,
        dpo_payload(),
        {
            "job_id": "my-dpo-job",
            "state": "COMPLETED",
            "status_code": "OK",
            "display_name": "DPO run 7",
            "base_model": "accounts/fireworks/models/llama-v3p1-8b-instruct",
            "output_model": "accounts/acme/models/out",
            "dataset": "accounts/acme/datasets/prefs",
            "created_by": "ana@example.com",
            "create_time": "2025-03-01T10:00:00Z",
            "completed_time": "2025-03-01T11:30:00Z",
            "wandb_url": "https://wandb.ai/acme/p/runs/1",
        },
    ),
    (
        JobKind.SFT,
        {
            "name": "accounts/acme/supervisedFineTuningJobs/sft-1",
            "state": "JOB_STATE_RUNNING",
            "baseModel": "accounts/fireworks/models/qwen3-8b",
            "outputModel": "accounts/acme/models/sft-out",
            "dataset": "accounts/acme/datasets/chat",
            "jobProgress": {"percent": 40},
            "metricsFileSignedUrl": SIGNED_URL,
        },
        {
            "job_id": "sft-1",
            "state": "RUNNING",
            "base_model": "accounts/fireworks/models/qwen3-8b",
            "output_model": "accounts/acme/models/sft-out",
            "dataset": "accounts/acme/datasets/chat",
        },
    ),
    (
        JobKind.BATCH_INFERENCE,
        {
            "name": "accounts/acme/batchInferenceJobs/bij-9",
            "state": "JOB_STATE_PENDING",
            "model": "accounts/fireworks/models/llama-v3p1-70b-instruct",
            "inputDatasetId": "accounts/acme/datasets/prompts",
            "outputDatasetId": "accounts/acme/datasets/answers",
        },
        {
            "job_id": "bij-9",
            "state": "PENDING",
            "base_model": "accounts/fireworks/models/llama-v3p1-70b-instruct",
            "dataset": "accounts/acme/datasets/prompts",
        },
    ),
    (
        JobKind.EVALUATION,
        {
            "name": "accounts/acme/evaluationJobs/ev-1",
            "state": "JOB_STATE_FAILED",
            "status": {"code": "INTERNAL", "message": "evaluator crashed"},
            "inputDataset": "accounts/acme/datasets/eval",
        },
        {
            "job_id": "ev-1",
            "state": "FAILED",
            "status_code": "INTERNAL",
            "status_message": "evaluator crashed",
            "dataset": "accounts/acme/datasets/eval",
        },
    ),
    (
        JobKind.DPO,
        dpo_payload(state="JOB_STATE_SOMETHING_NEW"),
        {"state": "SOMETHING_NEW"},
    ),
    (
        JobKind.DPO,
        {"name": "accounts/acme/dpoJobs/bare"},
        {"job_id": "bare", "state": "UNSPECIFIED", "status_code": "", "base_model": ""},
    ),
    (
        JobKind.DPO,
        {
            "name": "accounts/acme/dpoJobs/typo",
            "state": 3,
            "status": "OK",
            "displayName": ["x"],
            "trainingConfig": [],
            "wandbConfig": {"url": 7},
            "createTime": 1700000000,
            "dataset": None,
            "createdBy": {"email": "x"},
        },
        {
            "job_id": "typo",
            "state": "UNSPECIFIED",
            "status_code": "",
            "display_name": "",
            "base_model": "",
            "wandb_url": "",
            "create_time": "",
            "dataset": "",
            "created_by": "",
        },
    ),
    (
        JobKind.DPO,
        {
            "name": "accounts/acme/dpoJobs/mixed",
            "status": {"code": 5, "message": "m"},
            "trainingConfig": {"baseModel": 1},
            "baseModel": "flat-model",  # not a DPO field: DPO reads trainingConfig only
        },
        {"status_code": "", "status_message": "m", "base_model": ""},
    ),
]
PARSE_IDS = [
    "dpo-seed",
    "sft-flat-fields",
    "batch-model",
    "evaluation",
    "unknown-state",
    "missing-everything",
    "wrong-types",
    "partly-wrong-types",
]


@pytest.mark.parametrize(("kind", "payload", "expected"), PARSE_CASES, ids=PARSE_IDS)
def test_parse_job_fields(
    kind: JobKind, payload: dict[str, object], expected: dict[str, str]
) -> None:
    """Each listed field is read from its place for the kind; wrong types count as absent."""
    snapshot = parse_job(payload, kind=kind, account_id=ACCOUNT)

    actual = {
        key: snapshot.ref.job_id if key == "job_id" else getattr(snapshot, key) for key in expected
    }
    assert expected == actual
    assert kind == snapshot.ref.kind
    assert ACCOUNT == snapshot.account_id


@pytest.mark.parametrize(
    "payload",
    [
        dpo_payload(),
        dpo_payload(
            awsS3Config={"credentialsSecret": "AWS-SECRET"},
            metricsFileSignedUrl=SIGNED_URL,
            status={"code": "OK", "message": "done", "details": [{"apiKey": WANDB_KEY}]},
        ),
    ],
    ids=["seed", "more-secrets"],
)
def test_parse_job_drops_secrets(payload: dict[str, object]) -> None:
    """The W&B key, signed URLs and cloud credentials appear nowhere in the snapshot."""
    text = repr(parse_job(payload, kind=JobKind.DPO, account_id=ACCOUNT))

    assert [] == [s for s in (WANDB_KEY, "SIGNED-SECRET", "AWS-SECRET") if s in text]


def test_parse_job_keeps_ok_status_code() -> None:
    """A status code the server sends, even the default "OK", is kept as sent."""
    snapshot = parse_job(dpo_payload(), kind=JobKind.DPO, account_id=ACCOUNT)

    assert ("COMPLETED", "OK", "") == snapshot.observable()


def test_parse_job_uses_ref_without_name() -> None:
    """A payload without `name` takes its identity from the caller's ref."""
    payload = dpo_payload()
    del payload["name"]

    snapshot = parse_job(payload, kind=JobKind.DPO, account_id=ACCOUNT, ref=DPO_REF)

    assert DPO_REF == snapshot.ref


def test_parse_job_prefers_name_over_ref() -> None:
    """When both are there, the payload's `name` gives the identity."""
    other = JobRef(kind=JobKind.DPO, job_id="other")

    snapshot = parse_job(dpo_payload(), kind=JobKind.DPO, account_id=ACCOUNT, ref=other)

    assert DPO_REF == snapshot.ref


@pytest.mark.parametrize(
    "payload",
    [None, [], "job", 3, {}, {"name": ""}, {"name": "accounts/acme/dpoJobs/"}, {"name": 42}],
    ids=["null", "list", "string", "number", "empty", "blank-name", "trailing-slash", "int-name"],
)
def test_parse_job_rejects_unidentifiable(payload: object) -> None:
    """Anything that is not an object with a usable name (and no ref) is a PayloadError."""
    with pytest.raises(PayloadError) as info:
        parse_job(payload, kind=JobKind.DPO, account_id=ACCOUNT)

    assert 1 == len(str(info.value).splitlines())


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
JSON_LEAF = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
PLAUSIBLE_KEYS = sorted(
    {key for kind in JobKind for key in kind.spec.read_mask.split(",")}
    | {"baseModel", "model", "outputModel", "code", "message", "url", "apiKey"}
)
#: JSON whose objects use the API's own keys, so nested lookups meet every shape.
PLAUSIBLE_VALUE = st.recursive(
    JSON_LEAF,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(PLAUSIBLE_KEYS), children, max_size=4)
    ),
    max_leaves=8,
)
NAMES = (
    st.from_regex(r"accounts/[a-z]{1,4}/dpoJobs/[a-z-]{0,6}", fullmatch=True)
    | st.text(max_size=12)
    | PLAUSIBLE_VALUE
)
PLAUSIBLE_JOB = st.fixed_dictionaries(
    {},
    optional={key: NAMES if key == "name" else PLAUSIBLE_VALUE for key in PLAUSIBLE_KEYS},
)


def _parse_or_payload_error(payload: object, kind: JobKind) -> None:
    try:
        snapshot = parse_job(payload, kind=kind, account_id=ACCOUNT)
    except PayloadError:
        return
    assert isinstance(snapshot, JobSnapshot)
    assert all(isinstance(getattr(snapshot, f), str) for f in ("state", "status_code", "dataset"))


@settings(database=None, max_examples=500, deadline=None)
@given(payload=JSON, kind=st.sampled_from(JobKind))
def test_parse_job_total_on_any_json(payload: object, kind: JobKind) -> None:
    """On any JSON value parse_job returns a snapshot or raises PayloadError, nothing else."""
    _parse_or_payload_error(payload, kind)


@settings(database=None, max_examples=500, deadline=None)
@given(payload=PLAUSIBLE_JOB, kind=st.sampled_from(JobKind))
def test_parse_job_total_on_plausible_dicts(payload: dict[str, object], kind: JobKind) -> None:
    """On dicts with the real keys and arbitrary values parse_job raises only PayloadError."""
    _parse_or_payload_error(payload, kind)


# --- backoff and Retry-After ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "rand", "retry_after", "expected"),
    [
        (1, 0.5, None, 0.25),
        (2, 0.5, None, 0.5),
        (3, 0.5, None, 1.0),
        (3, 0.0, None, 0.0),
        (4, 0.999, None, 3.996),
        (10, 0.5, None, 4.0),  # ceiling capped at max_delay 8
        (10_000, 0.5, None, 4.0),  # no float overflow
        (1, 0.5, 7.0, 7.0),  # the server hint wins when longer
        (5, 0.5, 1.0, 4.0),  # the backoff wins when longer
        (1, 0.5, 90.0, 60.0),  # capped by max_retry_after
        (0, 1.5, None, 0.5),  # out-of-range inputs are clamped
    ],
    ids=[
        "first",
        "second",
        "third",
        "zero-jitter",
        "fourth",
        "capped",
        "huge-attempt",
        "retry-after-wins",
        "backoff-wins",
        "retry-after-capped",
        "clamped",
    ],
)
def test_backoff_delay(
    attempt: int, rand: float, retry_after: float | None, expected: float
) -> None:
    """Full jitter over an exponential ceiling, with a server hint as a floor and a cap."""
    actual = backoff_delay(attempt, RequestRetry(), retry_after=retry_after, rand=lambda: rand)

    assert expected == pytest.approx(actual)


def test_retry_policy_rejects_zero_attempts() -> None:
    """A policy that would never send is refused at construction."""
    with pytest.raises(ValueError, match="attempts"):
        RequestRetry(attempts=0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("5", 5.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-3", None),
        ("inf", None),
        ("nan", None),
        ("1e999", None),
        ("soon", None),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),
        ("Sat, 01 Mar 2025 12:00:10 -0000", 10.0),
        ("Sat, 99 Foo 2025 99:00:10 GMT", None),
    ],
    ids=[
        "absent",
        "empty",
        "blank",
        "seconds",
        "padded",
        "fraction",
        "zero",
        "negative",
        "inf",
        "nan",
        "overflow",
        "garbage",
        "http-date",
        "past-date",
        "naive-date",
        "bad-date",
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Seconds or an HTTP-date become seconds from now; anything unreadable is None."""
    assert expected == parse_retry_after(value, now=NOW)


def test_parse_retry_after_naive_now() -> None:
    """A naive `now` is taken as UTC rather than failing on the subtraction."""
    value = format_datetime(NOW + timedelta(seconds=5), usegmt=True)

    assert 5.0 == parse_retry_after(value, now=NOW.replace(tzinfo=None))


@settings(database=None)
@given(value=st.none() | st.text() | st.from_regex(r"\A-?[0-9.e+]{1,12}\Z"), now=st.datetimes())
def test_parse_retry_after_never_raises(value: str | None, now: datetime) -> None:
    """On any text parse_retry_after returns None or a non-negative number."""
    result = parse_retry_after(value, now=now)

    assert result is None or result >= 0


@settings(database=None)
@given(when=st.datetimes(timezones=st.just(UTC)), now=st.datetimes(timezones=st.just(UTC)))
def test_parse_retry_after_dates_never_negative(when: datetime, now: datetime) -> None:
    """Any well-formed HTTP-date gives a non-negative delay, whatever the clock says."""
    result = parse_retry_after(format_datetime(when, usegmt=True), now=now)

    assert result is not None
    assert result >= 0


# --- error_message -------------------------------------------------------------------------


def _error_response(
    status: int, body: object = None, content: bytes | None = None
) -> httpx.Response:
    request = httpx.Request("GET", f"{BASE_URL}{DPO_PATH}?pageToken=tok&readMask=name")
    if content is not None:
        return httpx.Response(status, content=content, request=request)
    return httpx.Response(status, json=body, request=request)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            _error_response(404, {"code": 5, "message": "dpo job not found"}),
            f"GET {DPO_PATH}: HTTP 404 NOT_FOUND: dpo job not found",
        ),
        (
            _error_response(403, {"error": {"code": 403, "message": "permission denied"}}),
            f"GET {DPO_PATH}: HTTP 403 Forbidden: permission denied",
        ),
        (
            _error_response(400, {"message": "bad\nfilter\t value"}),
            f"GET {DPO_PATH}: HTTP 400 Bad Request: bad filter value",
        ),
        (
            _error_response(502, content=b"<html><body>Bad gateway</body></html>"),
            f"GET {DPO_PATH}: HTTP 502 Bad Gateway",
        ),
        (_error_response(500, {"details": []}), f"GET {DPO_PATH}: HTTP 500 Internal Server Error"),
        (_error_response(500, ["message"]), f"GET {DPO_PATH}: HTTP 500 Internal Server Error"),
        (
            httpx.Response(503, json={"message": "down"}),
            "HTTP: HTTP 503 Service Unavailable: down",
        ),
    ],
    ids=[
        "grpc-gateway",
        "error-object",
        "multi-line",
        "html",
        "no-message",
        "not-object",
        "no-request",
    ],
)
def test_error_message(response: httpx.Response, expected: str) -> None:
    """Method, path, status and the server's message; never the query string or the body."""
    assert expected == error_message(response)


def test_error_message_truncates_long_server_message() -> None:
    """A long server message is cut to 200 characters so the line stays readable."""
    message = error_message(_error_response(400, {"message": "x" * 1000}))

    assert 200 == len(message.rpartition(": ")[2])


# --- FireworksClient: GET ------------------------------------------------------------------


async def test_get_job_ok() -> None:
    """A 200 answer becomes a snapshot for the requested job."""
    api = ScriptedApi(Reply(body=dpo_payload()))
    async with client_for(api) as client:
        snapshot = await client.get_job(DPO_REF)

    assert (DPO_REF, "COMPLETED") == (snapshot.ref, snapshot.state)
    assert 1 == client.requests_sent


async def test_get_job_sends_auth_and_read_mask() -> None:
    """GET goes to the job's path with Bearer auth, JSON accept, our User-Agent and readMask."""
    api = ScriptedApi(Reply(body=dpo_payload()))
    async with client_for(api) as client:
        await client.get_job(DPO_REF)

    (request,) = api.requests
    assert ("GET", DPO_PATH) == (request.method, request.url.path)
    assert f"Bearer {API_KEY}" == request.headers["Authorization"]
    assert "application/json" == request.headers["Accept"]
    assert f"fireworks-watcher/{__version__}" == request.headers["User-Agent"]
    assert {
        "readMask": (
            "name,state,status,displayName,createTime,createdBy,completedTime,trainingConfig,"
            "dataset,wandbConfig"
        )
    } == dict(request.url.params)


@pytest.mark.parametrize("kind", list(JobKind), ids=str)
async def test_get_job_read_mask_per_kind(kind: JobKind) -> None:
    """Each kind's GET carries that kind's readMask and the path its table entry says
    (`accounts/acme/dpoJobs/j1`; the account's own is `accounts/j1`)."""
    ref = JobRef(kind=kind, job_id="j1")
    name = kind.spec.resource_name("acme", "j1")
    api = ScriptedApi(Reply(body={"name": name}))
    async with client_for(api) as client:
        await client.get_job(ref)

    (request,) = api.requests
    assert (f"/v1/{name}", kind.spec.read_mask) == (
        request.url.path,
        request.url.params["readMask"],
    )


async def test_get_job_not_found() -> None:
    """A 404 is a NOT_FOUND snapshot, not an error."""
    api = ScriptedApi(Reply(404, {"code": 5, "message": "not found"}))
    async with client_for(api) as client:
        snapshot = await client.get_job(DPO_REF)

    assert JobSnapshot(ref=DPO_REF, account_id=ACCOUNT, state=NOT_FOUND) == snapshot


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(404, content=b"<html><h1>404 Not Found</h1></html>"), id="html"),
        pytest.param(Reply(404, content=b"no such route"), id="text"),
    ],
)
async def test_get_job_foreign_404_is_an_error(reply: Reply) -> None:
    """A 404 that is not the API's own answer (a proxy, a wrong base_url) is no NOT_FOUND."""
    async with client_for(ScriptedApi(reply)) as client:
        with pytest.raises(ApiRejected) as info:
            await client.get_job(DPO_REF)

    assert 404 == info.value.status_code


async def test_get_job_empty_404_is_not_found() -> None:
    """An empty 404 body is the API saying the job is gone."""
    async with client_for(ScriptedApi(Reply(404, content=b""))) as client:
        snapshot = await client.get_job(DPO_REF)

    assert NOT_FOUND == snapshot.state


@pytest.mark.parametrize("status", [400, 401, 403, 405, 412, 422], ids=str)
async def test_get_job_rejected_without_retry(status: int) -> None:
    """4xx answers are ApiRejected at once with the status code and the server's message."""
    api = ScriptedApi(Reply(status, {"code": 16, "message": "computer says no"}))
    sleep = RecordingSleep()
    async with client_for(api, sleep) as client:
        with pytest.raises(ApiRejected) as info:
            await client.get_job(DPO_REF)

    assert status == info.value.status_code
    assert (status in (401, 403)) == info.value.is_auth
    assert str(info.value).startswith(f"GET {DPO_PATH}: HTTP {status} ")
    assert str(info.value).endswith(": computer says no")
    assert (1, []) == (len(api.requests), sleep.delays)


async def test_get_job_redirect_is_rejected() -> None:
    """A redirect is not followed and is not a job: ApiRejected with its status."""
    api = ScriptedApi(Reply(301, content=b"", headers={"Location": "https://elsewhere/"}))
    async with client_for(api) as client:
        with pytest.raises(ApiRejected) as info:
            await client.get_job(DPO_REF)

    assert 301 == info.value.status_code


async def test_get_job_other_job_is_payload_error() -> None:
    """An answer naming a different job than the one asked for is a PayloadError."""
    api = ScriptedApi(Reply(body=dpo_payload(name="accounts/acme/dpoJobs/someone-else")))
    async with client_for(api) as client:
        with pytest.raises(PayloadError, match="someone-else"):
            await client.get_job(DPO_REF)


async def test_get_job_without_name_uses_ref() -> None:
    """A GET answer without `name` belongs to the requested job."""
    payload = dpo_payload()
    del payload["name"]
    api = ScriptedApi(Reply(body=payload))
    async with client_for(api) as client:
        snapshot = await client.get_job(DPO_REF)

    assert DPO_REF == snapshot.ref


async def test_get_job_quotes_path_segments() -> None:
    """A job id with URL-special characters stays inside its own path segment."""
    ref = JobRef(kind=JobKind.DPO, job_id="a/b?c")
    api = ScriptedApi(Reply(body={"state": "JOB_STATE_RUNNING"}))
    async with client_for(api) as client:
        await client.get_job(ref)

    assert b"/v1/accounts/acme/dpoJobs/a%2Fb%3Fc" == api.requests[0].url.raw_path.split(b"?")[0]


# --- FireworksClient: LIST -----------------------------------------------------------------


def _job(job_id: str, state: str = "JOB_STATE_RUNNING") -> dict[str, object]:
    return {"name": f"accounts/acme/dpoJobs/{job_id}", "state": state}


async def test_list_jobs_follows_pages() -> None:
    """LIST follows nextPageToken across three pages and returns every job in order."""
    api = PagedApi(
        {
            "": {"dpoJobs": [_job("a"), _job("b")], "nextPageToken": "t1", "totalSize": 5},
            "t1": {"dpoJobs": [_job("c"), _job("d")], "nextPageToken": "t2"},
            "t2": {"dpoJobs": [_job("e", "JOB_STATE_FAILED")], "nextPageToken": ""},
        }
    )
    async with client_for(api) as client:
        jobs = await client.list_jobs(JobKind.DPO)

    assert ["a", "b", "c", "d", "e"] == [job.ref.job_id for job in jobs]
    assert "FAILED" == jobs[-1].state
    assert [None, "t1", "t2"] == [r.url.params.get("pageToken") for r in api.requests]
    assert {"/v1/accounts/acme/dpoJobs"} == {r.url.path for r in api.requests}
    assert {("200", JobKind.DPO.spec.read_mask)} == {
        (r.url.params["pageSize"], r.url.params["readMask"]) for r in api.requests
    }
    assert 3 == client.requests_sent


async def test_list_jobs_starts_over_each_call() -> None:
    """Every call lists from the first page; no token is carried between calls."""
    api = PagedApi({"": {"dpoJobs": [_job("a")], "nextPageToken": "t1"}, "t1": {}})
    async with client_for(api) as client:
        await client.list_jobs(JobKind.DPO)
        await client.list_jobs(JobKind.DPO)

    assert [None, "t1", None, "t1"] == [r.url.params.get("pageToken") for r in api.requests]


async def test_list_jobs_dedupes_shifted_pages() -> None:
    """A job repeated on the next page (offset tokens shift) is returned once, as last seen."""
    api = PagedApi(
        {
            "": {"dpoJobs": [_job("a"), _job("b")], "nextPageToken": "t1"},
            "t1": {"dpoJobs": [_job("b", "JOB_STATE_COMPLETED"), _job("c")]},
        }
    )
    async with client_for(api) as client:
        jobs = await client.list_jobs(JobKind.DPO)

    assert [("a", "RUNNING"), ("b", "COMPLETED"), ("c", "RUNNING")] == [
        (job.ref.job_id, job.state) for job in jobs
    ]


@pytest.mark.parametrize(("page_size", "sent"), [(500, "200"), (50, "50"), (0, "1")], ids=str)
async def test_list_jobs_page_size_bounds(page_size: int, sent: str) -> None:
    """pageSize is kept within the API's 1..200."""
    api = PagedApi({"": {}})
    async with client_for(api) as client:
        await client.list_jobs(JobKind.SFT, page_size=page_size)

    assert sent == api.requests[0].url.params["pageSize"]


async def test_list_jobs_missing_key_is_empty() -> None:
    """proto3 JSON omits an empty list: a body without the collection key means no jobs."""
    api = PagedApi({"": {"totalSize": 0}})
    async with client_for(api) as client:
        assert [] == await client.list_jobs(JobKind.BATCH_INFERENCE)


@pytest.mark.parametrize(
    ("pages", "match"),
    [
        (
            {"": {"dpoJobs": [_job("a")], "nextPageToken": "t1"}, "t1": {"nextPageToken": "t1"}},
            "repeated",
        ),
        ({"": ["not", "an", "object"]}, "not a JSON object"),
        ({"": {"dpoJobs": {"a": 1}}}, "not a list"),
        ({"": {"dpoJobs": [], "nextPageToken": 2}}, "nextPageToken"),
    ],
    ids=[
        "repeated-token",
        "body-not-object",
        "list-not-list",
        "token-not-string",
    ],
)
async def test_list_jobs_bad_pages(pages: dict[str, object], match: str) -> None:
    """A malformed page or a repeated token ends the listing with PayloadError (a bad item
    costs only itself: tests/integration/test_names.py)."""
    async with client_for(PagedApi(pages)) as client:
        with pytest.raises(PayloadError, match=match):
            await client.list_jobs(JobKind.DPO)


async def test_list_jobs_not_found_is_rejected() -> None:
    """A 404 on the collection (unknown account) is ApiRejected, not an empty list."""
    api = ScriptedApi(Reply(404, {"code": 5, "message": "account not found"}))
    async with client_for(api) as client:
        with pytest.raises(ApiRejected) as info:
            await client.list_jobs(JobKind.DPO)

    assert 404 == info.value.status_code


# --- FireworksClient: retries --------------------------------------------------------------


async def test_retry_then_success_on_503() -> None:
    """A 503 is retried after a jittered backoff and the next success is returned."""
    api = ScriptedApi(Reply(503, {"message": "busy"}), Reply(body=dpo_payload()))
    sleep = RecordingSleep()
    async with client_for(api, sleep) as client:
        snapshot = await client.get_job(DPO_REF)

    assert "COMPLETED" == snapshot.state
    assert [0.25] == sleep.delays
    assert 2 == client.requests_sent


@pytest.mark.parametrize(
    ("retry_after", "waited"),
    [
        ("7", 7.0),
        (format_datetime(NOW + timedelta(seconds=12), usegmt=True), 12.0),
        ("0", 0.25),
        ("not-a-date", 0.25),
    ],
    ids=["seconds", "http-date", "zero-uses-backoff", "garbage-uses-backoff"],
)
async def test_429_honours_retry_after(retry_after: str, waited: float) -> None:
    """A 429's Retry-After (seconds or HTTP-date) is waited when longer than the backoff."""
    api = ScriptedApi(
        Reply(429, {"message": "slow down"}, headers={"Retry-After": retry_after}),
        Reply(body=dpo_payload()),
    )
    sleep = RecordingSleep()
    async with client_for(api, sleep) as client:
        await client.get_job(DPO_REF)

    assert [waited] == sleep.delays


async def test_long_retry_after_is_not_waited() -> None:
    """A Retry-After beyond max_retry_after ends the call at once, carrying the hint."""
    api = ScriptedApi(Reply(429, {"message": "quota"}, headers={"Retry-After": "600"}))
    sleep = RecordingSleep()
    async with client_for(api, sleep) as client:
        with pytest.raises(ApiUnavailable) as info:
            await client.get_job(DPO_REF)

    assert (600.0, [], 1) == (info.value.retry_after, sleep.delays, len(api.requests))


@pytest.mark.parametrize("status", [408, 409, 429, 500, 501, 502, 503, 504, 507], ids=str)
async def test_retries_exhausted(status: int) -> None:
    """Transient statuses are tried `attempts` times, then raise ApiUnavailable."""
    api = ScriptedApi(Reply(status, {"message": "try later"}, headers={"Retry-After": "2"}))
    sleep = RecordingSleep()
    async with client_for(api, sleep) as client:
        with pytest.raises(ApiUnavailable) as info:
            await client.get_job(DPO_REF)

    assert (3, [2.0, 2.0]) == (client.requests_sent, sleep.delays)
    assert 2.0 == info.value.retry_after
    assert str(info.value).startswith(f"GET {DPO_PATH}: HTTP {status} ")
    assert str(info.value).endswith("try later (gave up after 3 attempts)")


async def test_backoff_grows_between_tries() -> None:
    """Without a server hint the waits follow the doubling jittered backoff."""
    api = ScriptedApi(Reply(500, {}))
    sleep = RecordingSleep()
    async with client_for(api, sleep, RequestRetry(attempts=5)) as client:
        with pytest.raises(ApiUnavailable) as info:
            await client.list_jobs(JobKind.RFT)

    assert [0.25, 0.5, 1.0, 2.0] == sleep.delays
    assert info.value.retry_after is None


@pytest.mark.parametrize(
    ("status", "hint", "error", "requests"),
    [
        pytest.param(503, "false", ApiUnavailable, 1, id="503 told not to retry"),
        pytest.param(429, "false", ApiUnavailable, 1, id="429 told not to retry"),
        pytest.param(400, "true", ApiRejected, 3, id="400 told to retry"),
        pytest.param(500, "TRUE", ApiUnavailable, 3, id="500 told to retry (any case)"),
        pytest.param(400, "maybe", ApiRejected, 1, id="400 with a nonsense hint"),
    ],
)
async def test_x_should_retry_overrides_the_status(
    status: int, hint: str, error: type[Exception], requests: int
) -> None:
    """`x-should-retry: true|false` decides retries as the official SDK lets it."""
    api = ScriptedApi(Reply(status, {"message": "m"}, headers={"x-should-retry": hint}))
    async with client_for(api) as client:
        with pytest.raises(error):
            await client.get_job(DPO_REF)

    assert requests == len(api.requests)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5, id="ms first"),
        pytest.param({"retry-after-ms": "soon", "Retry-After": "4"}, 4.0, id="bad ms"),
        pytest.param({"retry-after-ms": "-5", "Retry-After": "3"}, 3.0, id="negative ms"),
        pytest.param({"retry-after-ms": "250"}, 0.25, id="ms alone"),
    ],
)
async def test_retry_after_ms_is_honoured_first(headers: dict[str, str], expected: float) -> None:
    """`retry-after-ms` sets the pause before `Retry-After`; an unusable one is skipped."""
    api = ScriptedApi(Reply(429, {}, headers=headers), Reply(body=dpo_payload()))
    sleep = RecordingSleep()
    async with client_for(api, sleep) as client:
        await client.get_job(DPO_REF)

    assert [expected] == sleep.delays


MASK_ERROR = {"code": 3, "message": "invalid readMask path 'trainingConfig'"}


async def test_read_mask_drift_is_survived_and_remembered() -> None:
    """A 400 naming the readMask is tried once without it; the kind is read whole from then."""
    api = ScriptedApi(Reply(400, MASK_ERROR), Reply(body=dpo_payload()), Reply(body=dpo_payload()))
    async with client_for(api) as client:
        first = await client.get_job(DPO_REF)
        second = await client.get_job(DPO_REF)

    masks = [r.url.params.get("readMask") for r in api.requests]
    assert [JobKind.DPO.spec.read_mask, None, None] == masks
    assert (DPO_REF, DPO_REF) == (first.ref, second.ref)
    assert {JobKind.DPO} == client.unmasked


async def test_read_mask_drift_on_a_list() -> None:
    """A LIST whose readMask is refused is listed again without it, from the first page."""
    page = {"dpoJobs": [dpo_payload()], "totalSize": 1}
    api = ScriptedApi(Reply(400, MASK_ERROR), Reply(body=page))
    async with client_for(api) as client:
        jobs = await client.list_jobs(JobKind.DPO)

    assert [DPO_REF] == [job.ref for job in jobs]
    assert [True, False] == ["readMask" in r.url.params for r in api.requests]


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(400, {"code": 3, "message": "bad filter"}), id="another 400"),
        pytest.param(Reply(403, {"code": 7, "message": "readMask denied"}), id="403"),
    ],
)
async def test_other_rejections_keep_the_mask(reply: Reply) -> None:
    """Only a 400 that names the readMask drops it; other rejections are raised at once."""
    api = ScriptedApi(reply)
    async with client_for(api) as client:
        with pytest.raises(ApiRejected):
            await client.get_job(DPO_REF)

    assert (1, set()) == (len(api.requests), client.unmasked)


def test_error_message_names_the_grpc_code() -> None:
    """A grpc-gateway code number becomes its name: `HTTP 400 INVALID_ARGUMENT: ...`."""
    response = _error_response(400, MASK_ERROR)

    assert (
        f"GET {DPO_PATH}: HTTP 400 INVALID_ARGUMENT: invalid readMask path 'trainingConfig'"
        == error_message(response)
    )


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectTimeout(""),
        httpx.RemoteProtocolError("peer closed connection"),
    ],
    ids=["connect", "read-timeout", "connect-timeout", "protocol"],
)
async def test_transport_errors_retried_then_unavailable(error: Exception) -> None:
    """Transport errors never escape as httpx exceptions: retried, then ApiUnavailable."""
    api = ScriptedApi(error)
    sleep = RecordingSleep()
    async with client_for(api, sleep) as client:
        with pytest.raises(ApiUnavailable) as info:
            await client.get_job(DPO_REF)

    assert (3, [0.25, 0.5]) == (len(api.requests), sleep.delays)
    assert str(info.value).startswith(f"GET {DPO_PATH}: {type(error).__name__}")


async def test_transport_error_then_success() -> None:
    """A timeout followed by a good answer is invisible to the caller."""
    api = ScriptedApi(httpx.ReadTimeout("timed out"), Reply(body=dpo_payload()))
    async with client_for(api) as client:
        snapshot = await client.get_job(DPO_REF)

    assert (DPO_REF, 2) == (snapshot.ref, client.requests_sent)


# --- FireworksClient: bad bodies -----------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        json.dumps(dpo_payload()).encode()[:40],
        b"<!DOCTYPE html><html><body>Login</body></html>",
        b"",
        b"\xff\xfe\xfa garbage",
        b"[" * 100_000,
    ],
    ids=["malformed", "truncated", "html", "empty", "bad-encoding", "too-deep"],
)
async def test_non_json_200_is_payload_error(content: bytes) -> None:
    """A 200 whose body is not JSON is a one-line PayloadError that does not quote the body."""
    api = ScriptedApi(Reply(content=content))
    async with client_for(api) as client:
        with pytest.raises(PayloadError) as info:
            await client.get_job(DPO_REF)

    message = str(info.value)
    assert 1 == len(message.splitlines())
    assert message.startswith(f"GET {DPO_PATH}: HTTP 200 OK: body is not JSON")
    assert "<html" not in message


async def test_html_on_5xx_is_unavailable() -> None:
    """An HTML error page on a 502 is still a transient ApiUnavailable."""
    api = ScriptedApi(Reply(502, content=b"<html><h1>502 Bad Gateway</h1></html>"))
    async with client_for(api) as client:
        with pytest.raises(ApiUnavailable) as info:
            await client.get_job(DPO_REF)

    assert f"GET {DPO_PATH}: HTTP 502 Bad Gateway (gave up after 3 attempts)" == str(info.value)


async def test_payload_error_does_not_quote_the_job() -> None:
    """A malformed LIST item is reported by position, never by its (secret-bearing) content."""
    item = {"wandbConfig": {"apiKey": WANDB_KEY}}
    async with client_for(PagedApi({"": {"dpoJobs": [item]}})) as client:
        with capture_logs() as logs:
            assert [] == await client.list_jobs(JobKind.DPO)

    assert ["api.bad_answer"] == [entry["event"] for entry in logs]
    assert WANDB_KEY not in repr(logs)


# --- secrets -------------------------------------------------------------------------------


ECHO = {"message": f"bad key {API_KEY}; header was Authorization: Bearer {API_KEY}"}


@pytest.mark.parametrize(
    "answer",
    [
        Reply(401, ECHO),
        Reply(403, {"error": ECHO}),
        Reply(503, ECHO),
        Reply(501, ECHO),
        httpx.ConnectError(f"cannot connect with {API_KEY}"),
        Reply(content=f"not json {API_KEY}".encode()),
    ],
    ids=["401-echo", "403-echo", "503-echo", "501-echo", "transport-echo", "payload"],
)
async def test_error_messages_never_contain_api_key(answer: Reply | Exception) -> None:
    """Even when the server echoes the key back, no error message carries it."""
    async with client_for(ScriptedApi(answer)) as client:
        with pytest.raises(Exception) as info:  # noqa: PT011 - any error type, same check
            await client.get_job(DPO_REF)

    assert isinstance(info.value, (ApiRejected, ApiUnavailable, PayloadError))
    assert API_KEY not in str(info.value)
    assert 1 == len(str(info.value).splitlines())


async def test_client_repr_hides_api_key() -> None:
    """The client's repr names the account and URL, not the key."""
    async with client_for(ScriptedApi(Reply())) as client:
        assert API_KEY not in repr(client)


@pytest.mark.parametrize("base_url", ["ftp://api.fireworks.ai", "not a url", "http://"], ids=str)
async def test_bad_base_url_is_refused(base_url: str) -> None:
    """A base URL that is not http(s)://host is refused at construction (the config has
    validated it before, so this is a programming error)."""
    kwargs: dict[str, Any] = {"account_id": ACCOUNT, "api_key": API_KEY, "base_url": base_url}
    async with httpx.AsyncClient(transport=httpx.MockTransport(ScriptedApi(Reply()))) as http:
        with pytest.raises(ValueError, match="invalid Fireworks base URL"):
            FireworksClient(http, **kwargs)
