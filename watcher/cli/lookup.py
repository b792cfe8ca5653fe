"""`watch` on an id the API does not know: is it a typo of the kind? One GET of the same id in
every other kind (no retry, paid from the watch's budget) says where it exists."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from watcher.core.errors import ApiError
from watcher.core.kinds import NOT_FOUND, JobKind
from watcher.core.model import JobRef, JobSnapshot

if TYPE_CHECKING:
    from watcher.config import Settings
    from watcher.core.budget import RequestBudget


#: The kinds an id may belong to (the account is no resource of a collection).
LISTABLE: tuple[JobKind, ...] = tuple(kind for kind in JobKind if kind.spec.listable)


@dataclass(frozen=True, slots=True)
class Elsewhere:
    """Where an id the API answered 404 for exists in other kinds.

    Attributes:
        found: the other kinds that have it.
        unasked: the kinds whose answer said nothing (an error, not a 404 nor a resource).
    """

    found: tuple[JobKind, ...] = ()
    unasked: tuple[JobKind, ...] = ()


def noun(kind: JobKind) -> str:
    """How the typo message names one resource of `kind`: `dpo job`, `deployment`."""
    return f"{kind} job" if kind.spec.label.endswith("job") else str(kind)


def typo_message(ref: JobRef, account: str, elsewhere: Elsewhere) -> str:
    """`no dpo job live2 in account acme; other kinds have: sft/live2` (pure)."""
    text = f"no {noun(ref.kind)} {ref.job_id} in account {account}; "
    if elsewhere.found:
        text += "other kinds have: " + ", ".join(f"{k}/{ref.job_id}" for k in elsewhere.found)
    else:
        text += "no other kind has it"
    if elsewhere.unasked:
        text += " (could not ask: " + ", ".join(str(k) for k in elsewhere.unasked) + ")"
    return text


async def look_elsewhere(
    ref: JobRef,
    get: Callable[[JobRef], Awaitable[JobSnapshot]],
    kinds: Sequence[JobKind] = LISTABLE,
) -> Elsewhere:
    """GET `ref`'s id once in each of `kinds` but its own, all at once; `get` must not retry
    (one request per kind)."""
    answers: dict[JobKind, bool | None] = {}

    async def ask(kind: JobKind) -> None:
        try:
            snapshot = await get(JobRef(kind, ref.job_id))
        except ApiError:
            answers[kind] = None
        else:
            answers[kind] = snapshot.state != NOT_FOUND

    others = [kind for kind in kinds if kind != ref.kind]
    async with anyio.create_task_group() as tg:
        for kind in others:
            tg.start_soon(ask, kind)
    return Elsewhere(
        found=tuple(k for k in others if answers.get(k)),
        unasked=tuple(k for k in others if answers.get(k) is None),
    )


async def ask_other_kinds(settings: Settings, ref: JobRef, budget: RequestBudget) -> Elsewhere:
    """`look_elsewhere` through a client of its own that never retries, paying each request
    from `budget` (the watch's)."""
    import httpx

    from watcher import app
    from watcher.sources.fireworks import FireworksClient
    from watcher.sources.retry import RequestRetry

    timeout = settings.watcher.request_timeout
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout)) as http:
        client = FireworksClient(
            http,
            account_id=settings.fireworks.account_id,
            api_key=app.api_key(settings),
            base_url=settings.fireworks.base_url,
            retry=RequestRetry(attempts=1),
            budget=budget,
            deadline=timeout,
            max_answer_bytes=settings.watcher.max_answer_bytes,
            max_inflight_bytes=settings.watcher.max_inflight_bytes,
        )
        return await look_elsewhere(ref, client.get_job)
