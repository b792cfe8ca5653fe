"""The simulator's hostile peers answer as advertised (so the hostile run measures what it says)."""

from __future__ import annotations

import gzip
import json
import time
from typing import Any

import httpx
import pytest

from fireworks_sim import Simulator
from fireworks_sim.hostile import ATTACKS, Attack
from fireworks_sim.scenarios import HOSTILE_ATTACKS, scenario
from tests.support.account import ACCOUNT, KEY
from tests.support.servers import ServedApp

AUTH = {"Authorization": f"Bearer {KEY}"}
SFT = "supervisedFineTuningJobs"


def url(server: ServedApp, collection: str = SFT, job_id: str = "") -> str:
    tail = f"/{job_id}" if job_id else ""
    return f"{server.url}/v1/accounts/{ACCOUNT}/{collection}{tail}"


def get(server: ServedApp, collection: str = SFT, job_id: str = "") -> httpx.Response:
    return httpx.get(url(server, collection, job_id), headers=AUTH, timeout=10)


def names(response: httpx.Response, collection: str = SFT) -> list[str | None]:
    items: list[dict[str, Any]] = response.json().get(collection, [])
    return [item.get("name") for item in items]


@pytest.mark.parametrize("size", [1_000, 3_000_000])
@pytest.mark.parametrize("kind", ["gzip-bomb", "huge"])
def test_bodies_expand_to_the_size_asked(
    sim: Simulator, server: ServedApp, kind: str, size: int
) -> None:
    sim.attack(SFT, kind, size=size)
    with httpx.stream("GET", url(server), headers=AUTH, timeout=10) as response:
        raw = b"".join(response.iter_raw())
        decoded = gzip.decompress(raw) if kind == "gzip-bomb" else raw
    assert size == len(decoded)
    assert json.loads(decoded)["pad"].startswith("000")
    if kind == "gzip-bomb":
        assert len(raw) < size / 50 + 200  # small on the wire


def test_drip_sends_honest_headers_then_a_byte_at_a_pace(sim: Simulator, server: ServedApp) -> None:
    sim.add_job("a", collection=SFT)
    sim.attack(SFT, "drip", pace=0.002)
    started = time.monotonic()
    with httpx.stream("GET", url(server), headers=AUTH, timeout=10) as response:
        length = int(response.headers["content-length"])
        chunks = list(response.iter_raw())
    assert length == sum(map(len, chunks)) > 100
    assert len(chunks) > length / 2  # byte by byte (the transport may merge a few)
    assert time.monotonic() - started >= length * 0.002 * 0.5


def test_endless_pages_and_floods_never_end_and_never_repeat(
    sim: Simulator, server: ServedApp
) -> None:
    sim.attack(SFT, "endless-pages")
    tokens = {get(server).json()["nextPageToken"] for _ in range(5)}
    assert 5 == len(tokens)
    assert [] == names(get(server))
    sim.attack(SFT, "new-job-flood", per_page=7)
    pages = [names(get(server)) for _ in range(3)]
    assert [7, 7, 7] == [len(page) for page in pages]
    assert 21 == len({name for page in pages for name in page})


def test_impostors_claim_another_state_beside_every_real_item(
    sim: Simulator, server: ServedApp
) -> None:
    sim.add_job("v0", collection=SFT, state="RUNNING")
    sim.attack(SFT, "duplicate-names")
    items = get(server).json()[SFT]
    real = f"accounts/{ACCOUNT}/{SFT}/v0"
    assert [real, f"accounts/other-{ACCOUNT}/{SFT}/v0", f"{real} "] == [
        item.get("name") for item in items[:3]
    ]
    assert {"JOB_STATE_RUNNING"} == {items[0]["state"]}
    assert {"JOB_STATE_COMPLETED"} == {item["state"] for item in items[1:6]}
    assert "name" not in items[-1]
    assert get(server, job_id="v0").json()["name"] == real  # a GET is let through


def test_a_huge_retry_after_and_calm(sim: Simulator, server: ServedApp) -> None:
    sim.add_job("v0", collection=SFT)
    sim.attack(SFT, "retry-after", retry_after="86400")
    refused = get(server, job_id="v0")
    assert (429, "86400") == (refused.status_code, refused.headers["retry-after"])
    sim.calm(SFT)
    assert 200 == get(server, job_id="v0").status_code


def test_attacks_over_the_control_api(sim: Simulator, server: ServedApp) -> None:
    body = {"collection": SFT, "kind": "retry-after", "retry_after": "5"}
    assert 200 == httpx.post(f"{server.url}/_sim/attacks", json=body).status_code
    assert 429 == get(server).status_code
    assert 200 == httpx.request("DELETE", f"{server.url}/_sim/attacks", json={}).status_code
    assert 200 == get(server).status_code
    bad = httpx.post(f"{server.url}/_sim/attacks", json={"collection": SFT, "kind": "nope"})
    assert 400 == bad.status_code


@pytest.mark.parametrize(
    "kwargs", [{"kind": "nope"}, {"kind": "drip", "pace": 0}, {"kind": "huge", "size": -1}]
)
def test_bad_attacks_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"attack|pace"):
        Attack(**kwargs)


def test_the_hostile_scenario_attacks_seven_collections_and_spares_dpo() -> None:
    sim = Simulator(api_key=KEY, account_id=ACCOUNT)
    scenario(sim, "hostile")
    assert {kind for _, kind, _ in HOSTILE_ATTACKS} == set(ATTACKS)
    assert "dpoJobs" not in {collection for collection, _, _ in HOSTILE_ATTACKS}
    assert "JOB_STATE_RUNNING" == sim.job("steady")["state"]
