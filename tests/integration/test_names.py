"""A job's identity is its whole resource name, checked (issue 10, item 8).

The validator is table-tested; then, over loopback against a tiny API of our own, a LIST page
full of bad and repeated names beside a real job: only the bad items are dropped, each with one
warning, the real job's FAILED is announced once, nothing flaps, and no GET leaves its job's
path. A GET answer that names another job is a bad answer, and `[[watch]].jobs` follows the
same id rule at config time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from structlog.testing import capture_logs

from tests.support.account import ACCOUNT, KEY
from tests.support.servers import JsonReceiver, Message, Scope, ServedApp
from watcher import app, config
from watcher.core.errors import ApiRejected, ConfigError, PayloadError
from watcher.core.kinds import KINDS, JobKind
from watcher.core.model import JobRef
from watcher.core.names import (
    MAX_ID_LENGTH,
    is_valid_id,
    job_id_of,
    name_problem,
    shown_name,
)
from watcher.sources.fireworks import FireworksClient
from watcher.sources.items import WARNINGS_PER_PAGE

#: Seconds a test (daemons, real backoff, real deadlines): not in the everyday run.
pytestmark = pytest.mark.slow

DPO = f"accounts/{ACCOUNT}/dpoJobs"
COLLECTION_PATH = f"/v1/{DPO}"
ESC = "\x1b"

# --- the validator -------------------------------------------------------------------------

VALID_IDS = [
    "v0",
    "my-dpo-job",
    "job-00001",  # the simulator's ids
    "b.1_x",  # accepted by [[watch]].jobs before this rule, so still accepted
    "Mixed-Case9",
    "x" * MAX_ID_LENGTH,
]
INVALID_IDS = {
    "empty": "",
    "dot": ".",
    "dot-dot": "..",
    "leading-dot": ".hidden",
    "leading-hyphen": "-x",
    "trailing-space": "v0 ",
    "leading-space": " v0",
    "inner-space": "a b",
    "tab": "v0\t",
    "newline": "v0\nforged log line",
    "slash": "a/b",
    "backslash": "a\\b",
    "percent": "a%2Fb",
    "query": "a?b",
    "escape": f"v0{ESC}[2J",
    "nul": "v0\x00",
    "rtl-override": "v0\u202e",
    "non-ascii": "jöb",
    "too-long": "x" * (MAX_ID_LENGTH + 1),
}


@pytest.mark.parametrize("job_id", VALID_IDS)
def test_valid_ids(job_id: str) -> None:
    """Ids of the documented form, the simulator's and those config accepted before pass."""
    assert is_valid_id(job_id)
    assert job_id == job_id_of(f"{DPO}/{job_id}", kind=JobKind.DPO, account_id=ACCOUNT)


@pytest.mark.parametrize("job_id", INVALID_IDS.values(), ids=INVALID_IDS.keys())
def test_invalid_ids(job_id: str) -> None:
    """An id that is not one safe path segment is refused, in a name as on its own."""
    assert not is_valid_id(job_id)
    assert name_problem(f"{DPO}/{job_id}", kind=JobKind.DPO, account_id=ACCOUNT) is not None


BAD_NAMES: dict[str, tuple[object, str]] = {
    "absent": (None, "has no name"),
    "empty": ("", "has no name"),
    "number": (42, "not a string (int)"),
    "object": ({"name": DPO + "/v0"}, "not a string (dict)"),
    "other-account": ("accounts/OTHER/dpoJobs/v0", "names another account"),
    "account-case": (f"accounts/{ACCOUNT.upper()}/dpoJobs/v0", "names another account"),
    "other-collection": (f"accounts/{ACCOUNT}/supervisedFineTuningJobs/v0", "another collection"),
    "collection-case": (f"accounts/{ACCOUNT}/DpoJobs/v0", "another collection"),
    "no-id": (DPO, "is not accounts/acme/dpoJobs/ID"),
    "trailing-slash": (f"{DPO}/", "has an id that is not"),
    "extra-segment": (f"{DPO}/v0/checkpoints/1", "has an id that is not"),
    "leading-slash": (f"/{DPO}/v0", "is not accounts/acme/dpoJobs/ID"),
    "leading-space": (f" {DPO}/v0", "is not accounts/acme/dpoJobs/ID"),
    "other-root": (f"projects/{ACCOUNT}/dpoJobs/v0", "is not accounts/acme/dpoJobs/ID"),
    "bare-id": ("v0", "is not accounts/acme/dpoJobs/ID"),
    "huge": (
        f"{DPO}/" + "x" * 10_000_000,
        "has a name of 10000022 characters (an id has at most 128)",
    ),
}


@pytest.mark.parametrize(("name", "problem"), BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_bad_names(name: object, problem: str) -> None:
    """Every way a name can fail to be this account's job of this kind has its own phrase."""
    found = name_problem(name, kind=JobKind.DPO, account_id=ACCOUNT)

    assert found is not None
    assert problem in found


@pytest.mark.parametrize("kind", [k for k in JobKind if k.spec.listable])
def test_every_kind_has_its_own_collection(kind: JobKind) -> None:
    """A name is a job of a kind only under that kind's collection, for every kind that has
    one (the account is `accounts/{id}`: `tests/unit/test_kinds.py`)."""
    own = f"accounts/{ACCOUNT}/{kind.collection}/x-1"
    others = [
        f"accounts/{ACCOUNT}/{s.collection}/x-1"
        for k, s in KINDS.items()
        if k != kind and s.listable
    ]

    assert "x-1" == job_id_of(own, kind=kind, account_id=ACCOUNT)
    assert all(
        "another collection" in str(name_problem(n, kind=kind, account_id=ACCOUNT)) for n in others
    )


@pytest.mark.parametrize(
    "name", [f"{DPO}/{i}" for i in INVALID_IDS.values()] + ["accounts/O/dpoJobs/v0"]
)
def test_refusal_shows_a_safe_short_name(name: str) -> None:
    """The error names the kind and shows the name cut short and escaped: one printable line."""
    with pytest.raises(PayloadError) as info:
        job_id_of(name, kind=JobKind.DPO, account_id=ACCOUNT)
    message = str(info.value)

    assert message.startswith('dpo job "accounts/')
    assert message.isprintable()
    assert message.isascii()
    assert len(message) < 250


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("v0", '"v0"'),
        ("v0 ", '"v0 "'),
        (f"{ESC}]0;title\x07", '"\\x1b]0;title\\x07"'),
        ('a"b', '"a\\"b"'),
        ("\u202e", '"\\u202e"'),
        ("y" * 100, '"' + "y" * 80 + '..."'),
    ],
    ids=["plain", "space", "osc", "quote", "rtl", "long"],
)
def test_shown_name(name: str, shown: str) -> None:
    """Quoted, so a trailing space shows; escaped, so nothing reaches a terminal raw; cut."""
    assert shown == shown_name(name)


# --- a tiny API over loopback --------------------------------------------------------------


class PageApi:
    """A DPO collection: `pages` maps the `pageToken` ("" for none) to a LIST body; a GET of
    one job answers `jobs[id]`, or the API's own 404. Every request's path is recorded."""

    def __init__(self) -> None:
        self.pages: dict[str, object] = {"": {}}
        self.jobs: dict[str, object] = {}
        self.requests: list[tuple[str, dict[str, list[str]]]] = []

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        path: str = scope["path"]
        query = parse_qs(scope["query_string"].decode())
        self.requests.append((path, query))
        status: int = 404
        body: object = {"code": 5, "message": "not found"}  # the API's own "not found"
        if path == COLLECTION_PATH:
            status, body = 200, self.pages[query.get("pageToken", [""])[0]]
        elif path.startswith(COLLECTION_PATH + "/"):
            job = self.jobs.get(path.removeprefix(COLLECTION_PATH + "/"))
            if job is not None:
                status, body = 200, job
        content = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})


@pytest.fixture
def api(server: ServedApp) -> PageApi:
    """A fresh tiny API behind the module's loopback server."""
    fresh = PageApi()
    server.app = fresh
    return fresh


@asynccontextmanager
async def client_at(server: ServedApp) -> AsyncIterator[FireworksClient]:
    """The real client over loopback."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as http:
        yield FireworksClient(http, account_id=ACCOUNT, api_key=KEY, base_url=server.url)


def job(name: object, state: str = "RUNNING") -> dict[str, Any]:
    """A LIST item or GET answer (`name` None leaves the field out)."""
    item: dict[str, Any] = {"state": f"JOB_STATE_{state}"}
    if name is not None:
        item["name"] = name
    return item


def dropped(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The `error` of every dropped-item warning (a bad answer, named by request and item)."""
    return [e["error"] for e in logs if e["event"] == "api.bad_answer" and "where" in e]


def whole_answers_refused(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The `error` of every answer the fetcher skipped whole (or a crashed cycle)."""
    bad = ("api.bad_answer", "cycle.crashed")
    return [str(e.get("error")) for e in logs if e["event"] in bad and "where" not in e]


#: LIST items that are not jobs of this account and kind, each beside a real one.
BAD_ITEMS: dict[str, object] = {
    **{f"name-{key}": job(name, "COMPLETED") for key, (name, _) in BAD_NAMES.items()},
    **{f"id-{key}": job(f"{DPO}/{i}", "COMPLETED") for key, i in INVALID_IDS.items()},
    "not-an-object": "accounts/acme/dpoJobs/v0",
    "list": [job(f"{DPO}/v0")],
    "null": None,
}


@pytest.mark.parametrize("item", BAD_ITEMS.values(), ids=BAD_ITEMS.keys())
async def test_a_bad_item_costs_only_itself(server: ServedApp, api: PageApi, item: object) -> None:
    """The bad item is dropped with one warning, however often it is listed; the real jobs on
    its page (before and after it) are read."""
    api.pages[""] = {"dpoJobs": [job(f"{DPO}/v0"), item, job(f"{DPO}/real", "FAILED")]}
    async with client_at(server) as client:
        with capture_logs() as logs:
            polls = [await client.list_jobs(JobKind.DPO) for _ in range(3)]

    assert [[("v0", "RUNNING"), ("real", "FAILED")]] * 3 == [
        [(s.ref.job_id, s.state) for s in jobs] for jobs in polls
    ]
    [warning] = dropped(logs)
    assert warning.startswith("dpo job ")
    assert warning.isprintable()
    assert len(warning) < 250
    assert [] == whole_answers_refused(logs)


@pytest.mark.parametrize("bad", [WARNINGS_PER_PAGE + 1, 200])
async def test_a_page_of_impostors_costs_a_few_log_lines(
    server: ServedApp, api: PageApi, bad: int
) -> None:
    """Each dropped item is news once, but a page of hundreds of them is not hundreds of lines:
    the first few are named, one more line counts the rest."""
    impostors = [job(f"accounts/other/dpoJobs/flood-{i}") for i in range(bad)]
    api.pages[""] = {"dpoJobs": [job(f"{DPO}/real", "FAILED"), *impostors]}
    async with client_at(server) as client:
        with capture_logs() as logs:
            jobs = await client.list_jobs(JobKind.DPO)

    assert ["real"] == [s.ref.job_id for s in jobs]
    warnings = dropped(logs)
    assert WARNINGS_PER_PAGE + 1 == len(warnings)
    assert f"{bad - WARNINGS_PER_PAGE} more items dropped" == warnings[-1]


async def test_first_of_two_names_on_a_page_stands(server: ServedApp, api: PageApi) -> None:
    """Two items of one name on a page: the first is the job, the second is dropped (once)."""
    api.pages[""] = {"dpoJobs": [job(f"{DPO}/v0"), job(f"{DPO}/v0", "COMPLETED")]}
    async with client_at(server) as client:
        with capture_logs() as logs:
            polls = [await client.list_jobs(JobKind.DPO) for _ in range(3)]

    assert [["RUNNING"]] * 3 == [[s.state for s in jobs] for jobs in polls]
    assert [f'dpo job "{DPO}/v0" is listed twice on a page'] == dropped(logs)


ANSWER_NAMES = {
    "other-account": "accounts/OTHER/dpoJobs/job-a",
    "trailing-space": f"{DPO}/job-a ",
    "other-job": f"{DPO}/job-b",
    "other-collection": f"accounts/{ACCOUNT}/supervisedFineTuningJobs/job-a",
    "dot": f"{DPO}/.",
    "number": 42,
}


@pytest.mark.parametrize("name", ANSWER_NAMES.values(), ids=ANSWER_NAMES.keys())
async def test_get_answer_for_another_name_is_a_bad_answer(
    server: ServedApp, api: PageApi, name: object
) -> None:
    """A GET of job-a answered with another name is a PayloadError, never a new identity."""
    api.jobs["job-a"] = job(name, "FAILED")
    async with client_at(server) as client:
        with pytest.raises(PayloadError):
            await client.get_job(JobRef(JobKind.DPO, "job-a"))


@pytest.mark.parametrize("name", [f"{DPO}/job-a", None], ids=["exact", "absent"])
async def test_get_answer_with_its_own_name_or_none(
    server: ServedApp, api: PageApi, name: str | None
) -> None:
    """The answer's own exact name, or none at all, is the job asked for."""
    api.jobs["job-a"] = job(name, "FAILED")
    async with client_at(server) as client:
        snapshot = await client.get_job(JobRef(JobKind.DPO, "job-a"))

    assert (JobRef(JobKind.DPO, "job-a"), "FAILED") == (snapshot.ref, snapshot.state)


@pytest.mark.parametrize("job_id", ["", ".", ".."], ids=["empty", "dot", "dot-dot"])
async def test_no_get_leaves_the_job_path(server: ServedApp, api: PageApi, job_id: str) -> None:
    """A ref that is no path segment (a state file from before this check) is not requested:
    its URL would resolve to the collection or above."""
    async with client_at(server) as client:
        with pytest.raises(ApiRejected, match="not a resource id"):
            await client.get_job(JobRef(JobKind.DPO, job_id))

    assert [] == api.requests


# --- the daemon over five polls ------------------------------------------------------------

POLL_1_ONLY = [job(f"{DPO}/."), job(f"{DPO}/.."), job(f"{DPO}/gone")]
EVERY_POLL = [
    job(f"{DPO}/v0"),
    job("accounts/OTHER/dpoJobs/v0", "COMPLETED"),
    job(f"{DPO}/v0 ", "COMPLETED"),
    job(f"{DPO}/v0", "COMPLETED"),
    job(f"{DPO}/a/b", "COMPLETED"),
    job(f"{DPO}/a b", "COMPLETED"),
    job(f"{DPO}/v0{ESC}[2J", "COMPLETED"),
    job(None, "COMPLETED"),
    job(42, "COMPLETED"),
    "not a job",
]


def listing(real_state: str, *, first: bool) -> dict[str, object]:
    """Two pages: the real job and every bad item, then `v0` again as a page shift repeats it."""
    page_1 = [job(f"{DPO}/real", real_state), *EVERY_POLL, *(POLL_1_ONLY if first else [])]
    page_2 = [job(f"{DPO}/v0", "COMPLETED"), job(f"{DPO}/other")]
    return {
        "": {"dpoJobs": page_1, "nextPageToken": "p2"},
        "p2": {"dpoJobs": page_2, "nextPageToken": ""},
    }


async def test_daemon_announces_once_and_never_flaps(
    server: ServedApp, api: PageApi, tmp_path: Path, receiver: JsonReceiver
) -> None:
    """A baseline, then the real job FAILs beside every kind of bad and repeated name: over
    five more polls the FAILED (and the vanished job's NOT_FOUND) is announced once, `v0` never
    moves, each bad item is warned of once, and the only GET is the vanished job's own."""
    settings = config.parse(
        {
            "fireworks": {"account_id": ACCOUNT, "base_url": server.url},
            "watcher": {
                "poll_interval": 1,
                "state_path": str(tmp_path / "state.db"),
                "watch_account": False,  # this API is one DPO collection, no account
            },
            "watch": [{"kind": "dpo", "discover": True}],
            "channel": [{"name": "team", "urls": [receiver.url()]}],
        },
        {"FIREWORKS_API_KEY": KEY},
    )
    api.pages = listing("RUNNING", first=True)
    transitions: list[list[tuple[str, str, str]]] = []
    async with app.open_watcher(settings) as watcher:
        with capture_logs() as logs:
            baseline = await watcher.run_once(force=True)
            api.pages = listing("FAILED", first=False)
            for _ in range(5):
                report = await watcher.run_once(force=True)
                transitions.append(
                    [(t.ref.job_id, t.old_state, t.new_state) for t in report.transitions]
                )

    # First sightings, not announced: exactly the four real jobs, no name made of a bad one.
    assert {"real", "v0", "gone", "other"} == {t.ref.job_id for t in baseline.transitions}
    assert 0 == baseline.sent
    assert [
        [("real", "RUNNING", "FAILED"), ("gone", "RUNNING", "NOT_FOUND")],
        [],
        [],
        [],
        [],
    ] == transitions
    messages = await receiver.wait_for_async(2)
    assert ["FAILED" in m["title"] for m in messages] == [True, False]
    warnings = dropped(logs)
    # Each bad item once (`gone` is no bad item): the first few by name, the rest counted.
    assert WARNINGS_PER_PAGE + 1 == len(warnings)
    assert f"{len(EVERY_POLL) - 1 + 2 - WARNINGS_PER_PAGE} more items dropped" == warnings[-1]
    assert all(w.isprintable() and ESC not in w for w in warnings)
    assert [] == whole_answers_refused(logs)
    gets = [path for path, query in api.requests if "pageSize" not in query]
    assert [f"{COLLECTION_PATH}/gone"] == gets
    assert 2 == len(receiver.messages)


# --- config -------------------------------------------------------------------------------


def watching(*jobs: str) -> dict[str, object]:
    return {
        "fireworks": {"account_id": ACCOUNT},
        "watch": [{"kind": "dpo", "jobs": ["fine", *jobs]}],
        "channel": [{"name": "team", "urls": ["json://127.0.0.1/hook"]}],
    }


@pytest.mark.parametrize("job_id", INVALID_IDS.values(), ids=INVALID_IDS.keys())
@pytest.mark.parametrize("as_name", [False, True], ids=["id", "name"])
def test_config_refuses_bad_job_ids(job_id: str, *, as_name: bool) -> None:
    """A `[[watch]].jobs` entry breaking the id rule, bare or in a full name, is one line
    naming its key."""
    with pytest.raises(ConfigError) as info:
        config.parse(watching(f"{DPO}/{job_id}" if as_name else job_id), {"FIREWORKS_API_KEY": KEY})
    message = str(info.value)

    assert "watch[0].jobs[1]" in message
    assert "\n" not in message
    assert len(message) < 400


@pytest.mark.parametrize("job_id", VALID_IDS)
def test_config_accepts_good_job_ids(job_id: str) -> None:
    """The ids LIST items may have are the ids a watch may name."""
    settings = config.parse(watching(job_id, f"{DPO}/{job_id}"), {"FIREWORKS_API_KEY": KEY})

    assert {JobRef(JobKind.DPO, "fine"), JobRef(JobKind.DPO, job_id)} == set(settings.refs())
