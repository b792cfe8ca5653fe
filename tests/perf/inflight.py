"""Figures: peak RSS while every kind's LIST page is read side by side (`max_inflight_bytes`).

    python -m tests.perf.inflight [--kinds 1 4 11] [--mb 30] [--shape text|objects] [--rounds 2]

A loopback server (this process, uvicorn in a thread) answers every kind's LIST with one page of
about `--mb` MB: 200 jobs, each carrying a long text (`text`, what a page of big jobs looks like)
or hundreds of small objects (`objects`, where decoding JSON costs most beside the bytes). Each
row runs in a subprocess of its own, which lists the kinds side by side with one
`FireworksClient` (the daemon's shape: one client, every kind's listing at once) for
`--rounds` rounds (each round's pages differ, so none is skipped as unchanged) and prints its
own peak RSS (`ru_maxrss`, which never goes down).

The script works on a tree without the byte budget too (it passes the new key only when the
client knows it), so the same figures can be taken before and after. Printed, never judged.
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import subprocess
import sys
import time
from typing import Any

import anyio
import httpx

from tests.support.servers import ServedApp
from watcher.core.kinds import JobKind
from watcher.sources.fireworks import FireworksClient

KEY = "perf-key"
ACCOUNT = "perf"
MB = 1_000_000
JOBS = 200
PAD_PIECE = 1 << 16
#: The kinds in the order a row takes them (`--kinds 4` lists the first four).
KINDS = tuple(JobKind)
SHAPES = ("pad", "text", "objects")


def _item(collection: str, index: int, tag: str, size: int, shape: str) -> bytes:
    """One job of about `size` bytes; `tag` makes each round's bytes differ."""
    head = f'{{"name":"accounts/{ACCOUNT}/{collection}/job-{index}","state":"JOB_STATE_RUNNING",'
    if shape == "pad":
        return (head + '"status":{"code":"OK"}}').encode()
    if shape == "text":
        message = (tag + "x" * size)[:size]
        return (head + f'"status":{{"code":"OK","message":"{message}"}}}}').encode()
    point = f'{{"step":{index},"loss":0.125,"tag":"{tag}"}}'
    points = ",".join([point] * max(1, size // (len(point) + 1)))
    return (head + f'"status":{{"code":"OK"}},"metrics":[{points}]}}').encode()


class BigPages:
    """Answers every kind's LIST with one page of `JOBS` jobs, about `size` bytes in all,
    generated as it is sent (the server keeps one job's bytes, not the page)."""

    def __init__(self, size: int, shape: str) -> None:
        self.size, self.shape = size, shape
        self.collections = {f"/v1/accounts/{ACCOUNT}/{k.collection}": k.collection for k in KINDS}
        self.served = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        collection = self.collections.get(scope.get("path", ""))
        if scope["type"] != "http" or collection is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        self.served += 1
        tag = f"r{self.served}-"
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {
                "type": "http.response.body",
                "body": b'{"%s":[' % collection.encode(),
                "more_body": True,
            }
        )
        for i in range(JOBS):
            piece = (b"," if i else b"") + _item(collection, i, tag, self.size // JOBS, self.shape)
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        tail = b'],"totalSize":%d' % JOBS
        if self.shape == "pad":  # the page's bytes in one field the client does not read
            tail += b',"pad":"%s' % tag.encode()
            for _ in range(self.size // PAD_PIECE):
                await send({"type": "http.response.body", "body": tail, "more_body": True})
                tail = b"x" * PAD_PIECE
            tail += b'"'
        await send({"type": "http.response.body", "body": tail + b"}"})


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


async def list_side_by_side(
    url: str, kinds: int, rounds: int, inflight: int | None
) -> dict[str, Any]:
    """The child: list `kinds` kinds at once, `rounds` times, with one client."""
    options: dict[str, Any] = {}
    known = inspect.signature(FireworksClient).parameters
    if inflight is not None and "max_inflight_bytes" in known:
        options["max_inflight_bytes"] = inflight
    start = peak_mb()
    listed: dict[str, int] = {}
    failed: list[str] = []
    began = time.perf_counter()
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http:
        client = FireworksClient(http, account_id=ACCOUNT, api_key=KEY, base_url=url, **options)

        async def one(kind: JobKind) -> None:
            try:
                jobs = await client.list_jobs(kind)
            except Exception as exc:  # noqa: BLE001 - a figure, not a judgement
                failed.append(f"{kind}: {type(exc).__name__}: {str(exc)[:80]}")
                return
            listed[str(kind)] = listed.get(str(kind), 0) + len(jobs)

        for _ in range(rounds):
            async with anyio.create_task_group() as tg:
                for kind in KINDS[:kinds]:
                    tg.start_soon(one, kind)
        budget = getattr(client, "inflight", None)
    return {
        "kinds": kinds,
        "peak_rss_mb": round(peak_mb(), 1),
        "rss_before_mb": round(start, 1),
        "seconds_per_round": round((time.perf_counter() - began) / rounds, 2),
        "jobs_listed": sum(listed.values()),
        "budget_high_water_mb": round(budget.high_water / MB, 1) if budget is not None else None,
        "answers_that_waited": budget.waited if budget is not None else None,
        "failed": failed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", type=int, nargs="*", default=[1, 4, 11])
    parser.add_argument("--mb", type=float, default=30.0, help="size of each LIST page")
    parser.add_argument("--shape", choices=SHAPES, default="text")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--inflight", type=int, help="max_inflight_bytes (default: the client's)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the server's URL
    args = parser.parse_args(argv)
    if args.child:
        row = anyio.run(list_side_by_side, args.child, args.kinds[0], args.rounds, args.inflight)
        print(json.dumps(row))
        return 0
    pages = BigPages(int(args.mb * MB), args.shape)
    with ServedApp(pages) as served:
        for kinds in args.kinds:
            command = [sys.executable, "-m", "tests.perf.inflight", "--child", served.url]
            command += ["--kinds", str(kinds), "--rounds", str(args.rounds)]
            if args.inflight is not None:
                command += ["--inflight", str(args.inflight)]
            done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                print(f"{kinds} kinds: failed (rc {done.returncode}): {done.stderr[-800:]}")
                continue
            row = {"shape": args.shape, "page_mb": args.mb, **json.loads(lines[-1])}
            print(" | ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
