"""One byte budget for every answer in flight (`max_inflight_bytes`, issue 22).

The budget on its own (tasks that take bytes, no I/O): the oldest answer never waits, the
others keep room for it, an answer past the budget waits its turn, and one cancelled gives
its bytes back. Then the real client over loopback against the simulator: eleven kinds listed
side by side are all read, none dropped, and the bytes held at once never pass the budget; an
answer cancelled mid-read gives its bytes back. And the key itself: bounds, env var, and the
one-line error when it is below `max_answer_bytes`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from fireworks_sim import Simulator
from tests.support.account import ACCOUNT, KEY
from tests.support.servers import ServedApp
from tests.support.waiting import DEADLINE, wait_until
from watcher import config
from watcher.cli import main
from watcher.core.errors import ConfigError
from watcher.core.model import JobKind
from watcher.sources.fireworks import FireworksClient
from watcher.sources.inflight import HeldBytes, InflightBytes
from watcher.sources.items import fingerprint

MIB = 1024 * 1024
#: A job's status message: 30 of them make a LIST page of about 900 KB.
TEXT = 30_000
JOBS = 30


# --- the budget on its own ----------------------------------------------------------------------


async def test_the_oldest_never_waits_and_the_others_keep_room_for_it() -> None:
    """Limit 100, one answer up to 60: the others share 40 while the oldest is read; a take
    past that waits, and goes once the oldest is done and the next oldest inherits the room."""
    budget = InflightBytes(100, per_answer=60)
    oldest_done, young_done = anyio.Event(), anyio.Event()
    took: list[str] = []

    async def answer(name: str, sizes: list[int], done: anyio.Event | None = None) -> None:
        async with budget.hold() as held:
            for size in sizes:
                await held.take(size)
                took.append(f"{name}{size}")
            if done is not None:
                await done.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(answer, "a", [60], oldest_done)  # the oldest: its whole answer
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(answer, "b", [30], young_done)  # held until its page is parsed
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(answer, "c", [20])  # 60 + 30 + 20 > 100: waits its turn
        await anyio.wait_all_tasks_blocked()

        assert (["a60", "b30"], 90, 1) == (took, budget.used, budget.waited)
        oldest_done.set()
        await anyio.wait_all_tasks_blocked()
        # b is the oldest now, with room kept to grow by 30: 30 + 20 + 30 <= 100; c took
        # its 20, was done and gave them back.
        assert (["a60", "b30", "c20"], 30) == (took, budget.used)
        young_done.set()

    assert ["a60", "b30", "c20"] == took
    assert (0, 0, 90) == (budget.used, budget.answers, budget.high_water)


async def test_room_is_kept_for_the_oldest_to_grow_to_a_whole_answer() -> None:
    """The oldest holds nothing yet (its server is slow): a younger answer still takes only
    what leaves the oldest room for a whole answer, so the oldest never waits and the budget
    is never passed, whatever order the bytes arrive in."""
    budget = InflightBytes(100, per_answer=60)
    slow_sent = anyio.Event()
    young: list[HeldBytes] = []

    async def slow() -> None:
        async with budget.hold() as held:
            await slow_sent.wait()
            for _ in range(6):
                await held.take(10)  # never waits: it is the oldest

    async def quick() -> None:
        async with budget.hold() as held:
            young.append(held)
            await held.take(40)
            await held.take(1)  # 41 + room 60 for the oldest > 100

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(quick)
        await anyio.wait_all_tasks_blocked()
        assert (40, 1) == (young[0].size, budget.waited)
        slow_sent.set()

    assert budget.high_water <= 100
    assert 0 == budget.used


async def test_an_answer_cancelled_while_holding_gives_its_bytes_back() -> None:
    """Cancelled mid-read, an answer's bytes come back at once and the one waiting goes on."""
    budget = InflightBytes(100, per_answer=60)
    second_done = anyio.Event()

    async def second() -> None:
        async with budget.hold() as held:
            await held.take(50)  # 50 + 50 + room 10 for the first > 100: waits
        second_done.set()

    first_scope = anyio.CancelScope()

    async def first() -> None:
        with first_scope:
            async with budget.hold() as held:
                await held.take(50)
                await anyio.Event().wait()  # a server that stopped sending

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert (50, 1) == (budget.used, budget.waited)
        first_scope.cancel()
        with anyio.fail_after(DEADLINE):
            await second_done.wait()

    assert (0, 0) == (budget.used, budget.answers)


async def test_a_larger_budget_on_reload_lets_a_waiting_answer_go() -> None:
    """SIGHUP's new `max_inflight_bytes` applies to the answers waiting now, not only later."""
    budget = InflightBytes(100, per_answer=60)
    oldest_done, second_done = anyio.Event(), anyio.Event()

    async def oldest() -> None:
        async with budget.hold() as held:
            await held.take(60)
            await oldest_done.wait()

    async def second() -> None:
        async with budget.hold() as held:
            await held.take(50)  # 60 + 50 > 100: waits
        second_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(oldest)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert not second_done.is_set()
        budget.set_limits(200, per_answer=60)
        with anyio.fail_after(DEADLINE):
            await second_done.wait()
        oldest_done.set()

    assert (0, 110) == (budget.used, budget.high_water)


# --- the client over loopback -------------------------------------------------------------------


#: The kinds with a collection to LIST (the account is one resource).
LISTABLE = tuple(kind for kind in JobKind if kind.spec.listable)


def big_jobs(sim: Simulator, kinds: tuple[JobKind, ...] = LISTABLE) -> None:
    """`JOBS` jobs of each kind, each with a `TEXT`-byte status message (pages of ~900 KB)."""
    for kind in kinds:
        for i in range(JOBS):
            sim.add_job(f"big-{i}", collection=kind.collection, status_message="x" * TEXT)


def big_client(http: httpx.AsyncClient, server: ServedApp, *, inflight: int) -> FireworksClient:
    return FireworksClient(
        http,
        account_id=ACCOUNT,
        api_key=KEY,
        base_url=server.url,
        max_answer_bytes=MIB,
        max_inflight_bytes=inflight,
    )


@pytest.mark.parametrize("inflight", [MIB, 2 * MIB], ids=["one-at-a-time", "two-at-a-time"])
async def test_every_kind_listed_side_by_side_is_read_within_the_budget(
    server: ServedApp, sim: Simulator, inflight: int
) -> None:
    """Eleven kinds of ~900 KB pages listed at once, with room for one or two at a time: all
    eleven listings are read in full (none dropped), and the bytes held at once, from the
    first byte to the parsed page, never passed the budget."""
    big_jobs(sim)
    listed: dict[JobKind, int] = {}
    async with httpx.AsyncClient(timeout=DEADLINE) as http:
        client = big_client(http, server, inflight=inflight)

        async def list_one(kind: JobKind) -> None:
            listed[kind] = len(await client.list_jobs(kind))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for kind in LISTABLE:
                    tg.start_soon(list_one, kind)

    assert dict.fromkeys(LISTABLE, JOBS) == listed
    budget = client.inflight
    assert 0.8 * MIB < budget.high_water <= inflight
    assert (0, 0) == (budget.used, budget.answers)


class Stalled:
    """Sends half of the SFT listing's page, then nothing more until the client hangs up;
    every other request goes to the simulator."""

    def __init__(self, sim: Simulator, page: bytes) -> None:
        self.sim, self.page = sim, page
        self.path = f"/v1/accounts/{ACCOUNT}/{JobKind.SFT.collection}"
        self.hung_up = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.sim(scope, receive, send)
            return
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        half = self.page[: len(self.page) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        self.hung_up.set()


async def test_an_answer_cancelled_mid_read_gives_its_bytes_back(
    server: ServedApp, sim: Simulator
) -> None:
    """A listing whose server stops halfway holds the bytes it read; cancelled, it gives
    them back, and a listing that waited behind it is read in full."""
    big_jobs(sim, (JobKind.DPO,))
    page = b'{"supervisedFineTuningJobs": [{"name": "' + b"x" * 800_000 + b'"}]}'
    stalled = Stalled(sim, page)
    server.app = stalled
    async with httpx.AsyncClient(timeout=DEADLINE) as http:
        client = big_client(http, server, inflight=MIB)  # room for one answer at a time
        budget = client.inflight
        dpo: list[int] = []

        async def list_dpo() -> None:
            dpo.append(len(await client.list_jobs(JobKind.DPO)))

        sft_scope = anyio.CancelScope()

        async def list_sft() -> None:
            with sft_scope:
                await client.list_jobs(JobKind.SFT)

        async with anyio.create_task_group() as tg:
            tg.start_soon(list_sft)
            await anyio.to_thread.run_sync(
                wait_until, lambda: budget.used >= 300_000, "the first half to be held"
            )
            tg.start_soon(list_dpo)
            await anyio.to_thread.run_sync(
                wait_until, lambda: budget.waited >= 1, "the DPO listing to wait its turn"
            )
            assert dpo == []
            sft_scope.cancel()

        assert await anyio.to_thread.run_sync(stalled.hung_up.wait, DEADLINE)

    assert [JOBS] == dpo
    assert (0, 0) == (budget.used, budget.answers)
    assert budget.high_water <= MIB


class FailsOnce:
    """Answers the first DPO listing with a 503 and a 60 KB error body, then the simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.failed = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.failed or scope["type"] != "http":
            await self.sim(scope, receive, send)
            return
        self.failed = True
        body = b'{"code": 14, "message": "' + b"m" * 60_000 + b'"}'
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def test_a_failed_try_holds_no_bytes_through_the_pause_before_the_next(
    server: ServedApp, sim: Simulator
) -> None:
    """A retried answer gives its failed try's bytes back before it pauses: a pause of
    seconds holds nothing (it held the error body, or a half-read page cut by a timeout)."""
    big_jobs(sim, (JobKind.DPO,))
    server.app = FailsOnce(sim)
    held_in_pauses: list[int] = []
    async with httpx.AsyncClient(timeout=DEADLINE) as http:
        client: FireworksClient | None = None

        async def pause(_seconds: float) -> None:
            assert client is not None
            held_in_pauses.append(client.inflight.used)

        client = FireworksClient(
            http, account_id=ACCOUNT, api_key=KEY, base_url=server.url, sleep=pause
        )
        jobs = await client.list_jobs(JobKind.DPO)

    assert (JOBS, [0]) == (len(jobs), held_in_pauses)
    assert client.inflight.high_water > 800_000  # the page itself was held while parsed


# --- what is remembered of a listing ------------------------------------------------------------


def test_a_listing_remembers_a_hash_of_the_fields_never_the_fields() -> None:
    """Between two LISTs the client remembers each job's compared fields to skip parsing it
    again: as a hash, so eleven kinds of 30 MB pages of long status messages do not stay in
    memory (they did: 330 MB), and a change of one character is still told apart."""
    short = ("RUNNING", {"code": "OK", "message": "step 5"})
    long = ("RUNNING", {"code": "OK", "message": "x" * 150_000})
    changed = ("RUNNING", {"code": "OK", "message": "x" * 149_999 + "y"})

    assert fingerprint(short) == fingerprint(short) != fingerprint(long)
    assert fingerprint(long) != fingerprint(changed)
    assert type(fingerprint(long)) is int


# --- the key ------------------------------------------------------------------------------------


def parse(watcher: dict[str, Any], env: dict[str, str] | None = None) -> config.Settings:
    return config.parse(
        {
            "fireworks": {"account_id": ACCOUNT},
            "watcher": watcher,
            "watch": [{"kind": "dpo", "discover": True}],
        },
        {"FIREWORKS_API_KEY": KEY, **(env or {})},
    )


def test_the_key_defaults_to_64_mib_and_may_come_from_the_environment() -> None:
    assert 64 * MIB == parse({}).watcher.max_inflight_bytes
    env = {"FIREWORKS_WATCHER_MAX_INFLIGHT_BYTES": str(48 * MIB)}
    assert 48 * MIB == parse({}, env).watcher.max_inflight_bytes
    assert 40 * MIB == parse({"max_inflight_bytes": 40 * MIB}, env).watcher.max_inflight_bytes


@pytest.mark.parametrize(
    ("watcher", "env", "problem"),
    [
        (
            {"max_answer_bytes": 32 * MIB, "max_inflight_bytes": 16 * MIB},
            {},
            "watcher.max_inflight_bytes: must be >= max_answer_bytes (33554432)",
        ),
        ({"max_inflight_bytes": 1024}, {}, "watcher.max_inflight_bytes: must be >= 65536"),
        ({"max_inflight_bytes": "64MiB"}, {}, "watcher.max_inflight_bytes: must be an integer"),
        (
            {},
            {"FIREWORKS_WATCHER_MAX_INFLIGHT_BYTES": "lots"},
            "watcher.max_inflight_bytes: must be an integer (from FIREWORKS_WATCHER_MAX_INFLIGHT_BYTES)",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(
    watcher: dict[str, Any], env: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(watcher, env)

    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_check_exits_2_when_the_budget_is_below_one_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check` (as `run`) refuses the config with one line naming both keys, exit 2."""
    monkeypatch.setenv("FIREWORKS_API_KEY", KEY)
    path = tmp_path / "watcher.toml"
    path.write_text(
        f'[fireworks]\naccount_id = "{ACCOUNT}"\n\n'
        "[watcher]\nmax_answer_bytes = 1048576\nmax_inflight_bytes = 524288\n\n"
        '[[watch]]\nkind = "dpo"\ndiscover = true\n'
    )

    code = main(["check", "-c", str(path)])

    err = capsys.readouterr().err.strip()
    assert 2 == code
    assert 1 == len(err.splitlines())
    assert "max_inflight_bytes" in err
    assert "max_answer_bytes" in err
