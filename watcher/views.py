"""What the state store says about the jobs, read in one pass: for `status` (text and
`--json`) and for the status page and its JSON API (`web.page`), which say it the same way.

`read_overview` is the only reader; the `*_doc` functions turn what it read into the JSON
documents (plain values, no secrets: URLs are masked, links are http(s) or nothing).
`StoreStatus` serves the page from the daemon's own store, on the daemon's event loop, whichever
thread the web server asks from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import anyio
import anyio.to_thread

from watcher.core.conditions import Condition, ConditionName, Since, subject_account
from watcher.core.lease import POLLER
from watcher.core.messages import api_time, console_url
from watcher.core.messages import iso_time as iso
from watcher.core.model import JobRef, JobSnapshot
from watcher.core.notices import key_headline, key_rejections
from watcher.core.progress import eta_seconds, percent
from watcher.core.text import mask_url, web_link
from watcher.core.timeline import Move, Timeline, timeline, window_start
from watcher.core.transitions import move_label

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from watcher.backends import StateDb
    from watcher.core.delivery import Delivery, Event
    from watcher.core.lease import Lease, Replica
    from watcher.core.silences import Silence
    from watcher.stores.history_table import Entry, Silenced

#: Replicas whose heartbeat is older than this are not listed (a lease check is every few s).
REPLICAS_SEEN: Final = timedelta(minutes=5)
#: History events a job page shows (the latest).
JOB_HISTORY: Final = 500
#: Silenced deliveries the page lists (all are counted).
SILENCED_SHOWN: Final = 20
#: Each job's last transition is found among the latest `LAST_MOVES` events of the last
#: `LAST_MOVES_WITHIN`: a bounded read, so a job that last moved before them shows none.
LAST_MOVES: Final = 2000
LAST_MOVES_WITHIN: Final = timedelta(days=30)

Doc = dict[str, Any]


@dataclass
class Overview:
    """Everything `status` and the page read, in one pass over the store."""

    jobs: list[JobSnapshot] = field(default_factory=list)
    since: dict[str, Since] = field(default_factory=dict)
    polled: dict[str, datetime] = field(default_factory=dict)
    conditions: list[Condition] = field(default_factory=list)
    undelivered: list[Delivery] = field(default_factory=list)
    silences: list[Silence] = field(default_factory=list)
    silenced_count: int = 0
    silenced: list[Silenced] = field(default_factory=list)
    bad_rows: list[tuple[str, str]] = field(default_factory=list)
    where: str = ""
    lease: Lease | None = None
    replicas: list[Replica] = field(default_factory=list)
    last_moves: dict[str, Event] = field(default_factory=dict)

    def job_conditions(self, key: str) -> list[Condition]:
        return [c for c in self.conditions if c.subject == key]

    def unreadable(self) -> list[tuple[str, str]]:
        return sorted(
            (c.subject, c.detail) for c in self.conditions if c.name is ConditionName.UNREADABLE
        )


async def read_overview(
    store: StateDb, now: datetime, *, silenced_limit: int, into: Overview | None = None
) -> Overview:
    """Read everything `Overview` holds from `store` (into `into`, whose `bad_rows` the
    store's `on_unreadable` may be filling)."""
    state = into if into is not None else Overview()
    state.where = store.display
    state.jobs = sorted((await store.last_all()).values(), key=lambda s: s.ref.key)
    state.since = await store.since_all()
    state.polled = await store.polled_all()
    state.conditions = await store.open_conditions()
    state.undelivered = await store.undelivered()
    state.silences = await store.silences(now)
    state.silenced_count, state.silenced = await store.silenced(limit=silenced_limit)
    state.lease = await store.lease(POLLER)
    state.replicas = await store.replicas(seen_within=REPLICAS_SEEN)
    entries, _ = await store.history(since=now - LAST_MOVES_WITHIN, limit=LAST_MOVES)
    state.last_moves = {e.event.job_key: e.event for e in entries if is_move(e.event)}
    return state


def is_move(event: Event) -> bool:
    """A transition of a job (not a notice, not a first sighting)."""
    return not event.notice and bool(event.old_state)


# -- documents ------------------------------------------------------------------------------


def link(url: str) -> str | None:
    """`url` when it is an absolute http(s) link, else None: the API's text never becomes a
    `javascript:` href (the same rule as messages: `text.web_link`)."""
    return web_link(url)


def page_path(kind: str, job_id: str) -> str:
    """The job's page, its id quoted as one path segment."""
    return f"/jobs/{quote(kind, safe='')}/{quote(job_id, safe='')}"


def condition_doc(c: Condition) -> Doc:
    return {
        "subject": c.subject,
        "condition": str(c.name),
        "opened_at": iso(c.opened_at),
        "detail": c.detail,
    }


def key_rejected_doc(conditions: list[Condition]) -> list[Doc]:
    """The accounts whose API key the API rejects: the first thing `status` says, and the
    page's header (empty when every key is accepted)."""
    return [
        {
            "account": subject_account(c.subject),
            "message": key_headline(c),
            "since": iso(c.opened_at),
            "detail": c.detail,
        }
        for c in key_rejections(conditions)
    ]


def job_doc(s: JobSnapshot, state: Overview, now: datetime) -> Doc:
    """One job as `status --json` and `/api/v1/jobs` show it."""
    since = state.since.get(s.ref.key)
    done = percent(s.progress) if s.progress else None
    eta = eta_seconds(s, since, done, now) if since is not None and done is not None else None
    return {
        "job": s.ref.key,
        "kind": str(s.ref.kind),
        "job_id": s.ref.job_id,
        "display_name": s.display_name,
        "state": s.state,
        "meaning": str(s.meaning),
        "status_code": s.status_code,
        "status_message": s.status_message,
        "reason": s.reason,
        "progress": s.progress,
        "percent": done,
        "eta_seconds": None if eta is None else round(eta),
        "update_time": s.update_time,
        "create_time": s.create_time,
        "state_since": iso(since.state) if since else None,
        "moved_at": iso(since.moved) if since else None,
        "polled_at": iso(state.polled.get(s.ref.key)),
        "wandb_url": link(s.wandb_url),
        "console_url": link(console_url(s)),
        "page": page_path(str(s.ref.kind), s.ref.job_id),
        "last_transition": move_doc(state.last_moves.get(s.ref.key)),
        "conditions": [condition_doc(c) for c in state.job_conditions(s.ref.key)],
    }


def move_doc(event: Event | None) -> Doc | None:
    if event is None:
        return None
    fields = event.field_map()
    return {
        "old_state": event.old_state,
        "new_state": event.new_state,
        "change": _change(event, fields),
        "at": iso(event.observed_at),
        "reason": fields.get("reason") or fields.get("status_message", ""),
    }


def _change(event: Event, fields: Mapping[str, str]) -> str:
    """`RUNNING → FAILED`, or `status changed: …` within one state (`move_label`)."""
    code, message = fields.get("status_code", ""), fields.get("status_message", "")
    return move_label(event.old_state, event.new_state, code, message)


def delivery_doc(d: Delivery) -> Doc:
    return {
        "id": d.id,
        "status": d.status,
        "job": d.entry.job_key,
        "channel": d.entry.channel,
        "url": mask_url(d.entry.url_display),
        "old_state": d.entry.old_state,
        "new_state": d.entry.new_state,
        "created_at": d.entry.created_at.isoformat(),
        "attempts": d.attempts,
        "next_attempt_at": d.next_attempt_at.isoformat(),
        "last_error": d.last_error,
    }


def silence_doc(s: Silence) -> Doc:
    return {
        "id": s.id,
        "job": s.job,
        "kind": s.kind,
        "owner": s.owner,
        "state": s.state,
        "channel": s.channel,
        "comment": s.comment,
        "created_at": iso(s.created_at),
        "ends_at": iso(s.end()),
    }


def silenced_doc(d: Silenced) -> Doc:
    return {
        "id": d.id,
        "job": d.job_key,
        "channel": d.channel,
        "url": mask_url(d.url_display),
        "old_state": d.old_state,
        "new_state": d.new_state,
        "created_at": iso(d.created_at),
        "silence_id": d.silence_id,
    }


def lease_doc(lease: Lease | None) -> Doc | None:
    if lease is None:
        return None
    return {"holder": lease.holder, "epoch": lease.epoch, "expires_at": iso(lease.expires_at)}


def replica_doc(r: Replica) -> Doc:
    return {
        "holder": r.holder,
        "role": r.role,
        "started_at": iso(r.started_at),
        "seen_at": iso(r.seen_at),
    }


def status_document(state: Overview, now: datetime) -> Doc:
    """`status --json`."""
    return {
        "state_path": state.where,
        "now": iso(now),
        "lease": lease_doc(state.lease),
        "replicas": [replica_doc(r) for r in state.replicas],
        "key_rejected": key_rejected_doc(state.conditions),
        "jobs": [job_doc(s, state, now) for s in state.jobs],
        "conditions": [condition_doc(c) for c in state.conditions],
        "unreadable": [{"target": t, "error": e} for t, e in state.unreadable()],
        "undelivered": [delivery_doc(d) for d in state.undelivered],
        "silences": [silence_doc(s) for s in state.silences],
        "silenced_count": state.silenced_count,
        "silenced": [silenced_doc(d) for d in state.silenced],
        "unreadable_rows": [{"row": row, "error": error} for row, error in state.bad_rows],
    }


def overview_document(state: Overview, now: datetime, watcher: Mapping[str, Any]) -> Doc:
    """Everything the page at `/` shows, and the `/api/v1` lists slice: `watcher` is the
    daemon's own facts (role, last poll, readiness). `revision` changes when anything but
    the clock does, so the page's script knows when to fetch it again."""
    doc: Doc = {
        "now": iso(now),
        "watcher": {**watcher, "lease": lease_doc(state.lease), "state": state.where},
        "key_rejected": key_rejected_doc(state.conditions),
        "jobs": [job_doc(s, state, now) for s in state.jobs],
        "conditions": [condition_doc(c) for c in state.conditions],
        "silences": [silence_doc(s) for s in state.silences],
        "deliveries": [delivery_doc(d) for d in state.undelivered],
        "silenced_count": state.silenced_count,
    }
    doc["revision"] = revision(doc)
    return doc


def revision(doc: Doc) -> str:
    """A digest of what the page shows, leaving out what moves with the clock alone."""
    ticking = {"now", "eta_seconds", "expires_at"}

    def still(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: still(v) for k, v in value.items() if k not in ticking}
        if isinstance(value, list):
            return [still(v) for v in value]
        return value

    text = json.dumps(still(doc), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def history_doc(entry: Entry) -> Doc:
    fields = entry.event.field_map()
    return {
        "id": entry.id,
        "observed_at": iso(entry.event.observed_at),
        "old_state": entry.event.old_state,
        "new_state": entry.event.new_state,
        "change": _change(entry.event, fields),
        "notice": entry.event.kind or ("notice" if entry.event.notice else ""),
        "reason": fields.get("reason", ""),
        "status_message": fields.get("status_message", ""),
        "deliveries": [
            {
                "channel": t.channel,
                "url": mask_url(t.url_display),
                "status": t.status,
                "attempts": t.attempts,
                "delivered_at": iso(t.delivered_at),
                "last_error": t.last_error,
            }
            for t in entry.deliveries
        ],
    }


def job_timeline(
    job: JobSnapshot, since: Since | None, entries: list[Entry], now: datetime
) -> Timeline:
    """The job's last day (or less, when it is younger) from its transitions."""
    moves = [_move(e.event) for e in entries if is_move(e.event)]
    first = since.state if since is not None and not since.entered else None
    start = window_start(now, created=api_time(job.create_time), first_seen=first)
    return timeline(moves, state=job.state, start=start, now=now, meaning=job.ref.kind.spec.meaning)


def _move(event: Event) -> Move:
    fields = event.field_map()
    return Move(
        event.observed_at,
        event.old_state,
        event.new_state,
        fields.get("status_code", ""),
        fields.get("status_message", ""),
    )


# -- the page's source ----------------------------------------------------------------------


class StoreStatus:
    """`ports.StatusSource` over the daemon's store. The web server runs on a loop of its own
    (so a flood of requests never queues the poller): each read hops to the daemon's loop
    through `portal`, from a worker thread of the server's."""

    def __init__(
        self,
        store: StateDb,
        *,
        portal: BlockingPortal,
        watcher: Callable[[], Mapping[str, Any]],
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._portal = portal
        self._watcher = watcher
        self._clock = clock

    async def overview(self) -> Doc:
        """See `overview_document`."""
        return await anyio.to_thread.run_sync(self._portal.call, self._overview)

    async def job(self, key: str) -> tuple[Doc, Timeline] | None:
        """The job's document with its history (the latest `JOB_HISTORY` events of the last
        day), and its timeline; None when the store has no such job."""
        return await anyio.to_thread.run_sync(self._portal.call, self._job, key)

    async def _overview(self) -> Doc:
        now = self._clock()
        state = await read_overview(self._store, now, silenced_limit=SILENCED_SHOWN)
        return overview_document(state, now, self._watcher())

    async def _job(self, key: str) -> tuple[Doc, Timeline] | None:
        now = self._clock()
        state = Overview()
        ref = JobRef.from_key(key)
        job = None if ref is None else await self._store.last(ref)
        if job is None:
            return None
        state.jobs = [job]
        state.since = await self._store.since_all(job=key)
        state.polled = await self._store.polled_all(job=key)
        state.conditions = [c for c in await self._store.open_conditions() if c.subject == key]
        entries, more = await self._store.history(
            since=now - timedelta(hours=24), job=lambda k: k == key, limit=JOB_HISTORY
        )
        moved = [e.event for e in entries if is_move(e.event)]
        if moved:
            state.last_moves = {key: moved[-1]}
        doc = {
            "now": iso(now),
            "job": job_doc(job, state, now),
            "history": [history_doc(e) for e in reversed(entries)],
            "history_truncated": more,
        }
        return doc, job_timeline(job, state.since.get(key), entries, now)
