"""The simulator's table of resources and the clock that moves them.

`_State` holds the records and works out, lazily and under its lock, what the clock has made
of them: scripted steps and repeating cycles that fell due, progress that grew, resources the
scenarios' spawners added or retired. `control._Control` adds the methods that change it and
`api.Simulator` the ASGI app that reads it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fireworks_sim.faults import _Chaos, _Fault
from fireworks_sim.hostile import Attack
from fireworks_sim.model import (
    _CHANGEABLE,
    _RUNNING,
    ARCHIVED_STATE,
    COLLECTIONS,
    COMPLETED_TIME_COLLECTIONS,
    DEFAULT_ACCELERATOR,
    DEFAULT_BASE_MODEL,
    FINAL_STATES,
    INITIAL_STATES,
    PROGRESS_COLLECTIONS,
    _Account,
    _Cycle,
    _Resource,
    _Spawner,
    _Step,
    full_state,
)
from fireworks_sim.shapes import ROUTE_API_KEY, render
from fireworks_sim.wire import _HttpError

#: `orderBy` field -> sort key. Both the proto (snake_case) and JSON spellings are accepted.
_ORDER_KEYS: dict[str, Callable[[_Resource], Any]] = {
    "name": lambda job: job.job_id,
    "create_time": lambda job: job.create_time,
    "createTime": lambda job: job.create_time,
    "created_time": lambda job: job.create_time,
    "update_time": lambda job: job.update_time,
    "display_name": lambda job: job.display_name,
    "state": lambda job: job.state,
}


class _State:
    """The resources and their timelines; the base of `Simulator` (see there for the args)."""

    def __init__(
        self,
        *,
        api_key: str = "sim-key",
        account_id: str = "sim-account",
        clock: Callable[[], float] = time.monotonic,
        wandb_api_key: str = "sim-wandb-secret",
        route_api_key: str = ROUTE_API_KEY,
        start_time: datetime | None = None,
    ) -> None:
        self.api_key = api_key
        self.account_id = account_id
        self.wandb_api_key = wandb_api_key
        self.route_api_key = route_api_key
        self._clock = clock
        self._clock0 = clock()
        self._wall0 = start_time if start_time is not None else datetime.now(UTC)
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, str], _Resource] = {}
        self._faults: list[_Fault] = []
        self._requests: list[tuple[str, str]] = []
        self._spawners: list[_Spawner] = []
        self._chaos: _Chaos | None = None
        self._attacks: dict[str, Attack] = {}
        # The account itself (`GET /v1/accounts/{id}`): healthy until `suspend`.
        self._accounts: dict[str, _Account] = {
            account_id: _Account(
                account_id,
                display_name=f"Sim account {account_id}",
                email="sim-billing@example.com",
                create_time=self._wall0,
                update_time=self._wall0,
            )
        }

    def now(self) -> datetime:
        """The simulated wall time: `start_time` plus the clock's progress since construction."""
        return self._wall(self._clock())

    def clock_seconds(self) -> float:
        """The clock's reading: the time base of steps, cycles and spawners."""
        return self._clock()

    # -- what the scenarios build with (see `scenarios`) ---------------------------------

    def set_steps(
        self, job_id: str, collection: str, steps: Sequence[_Step], *, origin: float
    ) -> None:
        """Replace a resource's one-off steps with `steps`, their offsets counted from
        `origin` (a `clock_seconds()` reading). Raises KeyError if it does not exist."""
        with self._lock:
            self._job(collection, job_id).steps = [
                replace(step, at=origin + step.at) for step in steps
            ]

    def add_spawner(self, spawner: _Spawner) -> None:
        """Let `spawner` add (and retire) resources from now on; those due already appear."""
        with self._lock:
            self._spawners.append(spawner)
            self._tick()

    def start_chaos(self, chaos: _Chaos) -> None:
        """Mix `chaos`'s random faults into the API's answers (until `clear_faults`)."""
        with self._lock:
            self._chaos = chaos

    # -- building records (no lock needed: nothing shared is touched) ------------------

    def _wall(self, at: float) -> datetime:
        return self._wall0 + timedelta(seconds=at - self._clock0)

    def build(
        self,
        job_id: str,
        *,
        collection: str,
        at: float,
        state: str | None = None,
        display_name: str | None = None,
        status_code: str = "OK",
        status_message: str = "",
        base_model: str = DEFAULT_BASE_MODEL,
        output_model: str | None = None,
        dataset: str | None = None,
        created_by: str = "sim-user@example.com",
        create_time: datetime | None = None,
        epochs: int = 1,
        learning_rate: float = 0.0001,
        wandb: bool = True,
        progress: float | None = None,
        progress_rate: float = 0.0,
        epoch: int | None = None,
        model: str | None = None,
        evaluator: str | None = None,
        deployment: str | None = None,
        replica_count: int | None = None,
        estimated_cost_usd: float | None = None,
        accelerator_seconds: int | Mapping[str, int] | None = None,
        fine_tuning_job: str | None = None,
    ) -> _Resource:
        """A resource record as `add_job` describes it, at clock reading `at`; not added."""
        if collection not in COLLECTIONS:
            raise ValueError(f"unknown collection {collection!r}")
        if not job_id or "/" in job_id:
            raise ValueError(f"invalid job id {job_id!r}")
        knobs = {
            "progress": (progress is not None or progress_rate != 0 or epoch is not None)
            and collection not in PROGRESS_COLLECTIONS,
            "replica_count": replica_count is not None and collection != "deployments",
            "estimated_cost_usd": estimated_cost_usd is not None
            and collection != "supervisedFineTuningJobs",
            "accelerator_seconds": accelerator_seconds is not None
            and collection not in ("reinforcementFineTuningJobs", "rlorTrainerJobs"),
            "evaluator": evaluator is not None
            and collection not in ("reinforcementFineTuningJobs", "evaluationJobs"),
            "deployment": deployment is not None and collection != "deployedModels",
            "fine_tuning_job": fine_tuning_job is not None and collection != "models",
            "model": model is not None
            and collection not in ("batchInferenceJobs", "deployments", "deployedModels"),
        }
        refused = sorted(name for name, bad in knobs.items() if bad)
        if refused:
            raise ValueError(f"{collection} has no field for {', '.join(refused)}")
        account = self.account_id
        wall = self._wall(at)
        initial = full_state(state, collection) if state else INITIAL_STATES[collection]
        if isinstance(accelerator_seconds, int):
            seconds: dict[str, int] | None = {DEFAULT_ACCELERATOR: accelerator_seconds}
        else:
            seconds = None if accelerator_seconds is None else dict(accelerator_seconds)
        if model is None:
            model = (
                f"accounts/{account}/models/{job_id}"
                if collection == "deployedModels"
                else base_model
            )
        has_completed = collection in COMPLETED_TIME_COLLECTIONS and initial in FINAL_STATES
        return _Resource(
            collection=collection,
            job_id=job_id,
            state=initial,
            status_code=status_code,
            status_message=status_message,
            display_name=f"Sim job {job_id}" if display_name is None else display_name,
            dataset=dataset or f"accounts/{account}/datasets/{job_id}-data",
            base_model=base_model,
            output_model=output_model or f"accounts/{account}/models/{job_id}",
            created_by=created_by,
            create_time=create_time or wall,
            update_time=wall,
            completed_time=wall if has_completed else None,
            delete_time=wall
            if collection == "deployments" and initial in ("DELETING", "DELETED")
            else None,
            epochs=epochs,
            learning_rate=learning_rate,
            wandb=wandb,
            model=model,
            evaluator=evaluator or f"accounts/{account}/evaluators/{job_id}-evaluator",
            deployment=deployment or f"accounts/{account}/deployments/{job_id}-deployment",
            progress=float(progress) if progress is not None else (0.0 if progress_rate else None),
            progress_rate=progress_rate,
            progress_clock=at,
            epoch=epoch,
            replica_count=replica_count,
            estimated_cost_usd=estimated_cost_usd,
            accelerator_seconds=seconds,
            fine_tuning_job=fine_tuning_job or "",
        )

    def set_cycle(
        self,
        job_id: str,
        collection: str,
        period: float,
        steps: tuple[_Step, ...],
        start: float = 0.0,
    ) -> None:
        """Repeat `steps` (offsets in `[0, period)`, each may change record attributes too)
        every `period` s from `start` s on; see `repeat`. Raises KeyError if it does not exist."""
        if period <= 0 or not steps:
            raise ValueError("a cycle needs a positive period and at least one step")
        if any(not 0 <= step.at < period for step in steps):
            raise ValueError("every step offset must be within [0, period)")
        for step in steps:
            unknown = {name for name, _ in step.changes} - _CHANGEABLE
            if unknown:
                raise ValueError(f"a step cannot change {sorted(unknown)}")
        with self._lock:
            job = self._job(collection, job_id)
            now = self._clock()
            job.cycle = _Cycle(now + start, float(period), steps)

    # -- state (every helper below expects the lock to be held) ------------------------

    def _job(self, collection: str, job_id: str) -> _Resource:
        try:
            return self._jobs[(collection, job_id)]
        except KeyError:
            raise KeyError(f"no job {collection}/{job_id}") from None

    def _advance(self, job: _Resource, now: float) -> None:
        """Apply every step due by `now` (refilling from the cycle) and accrue progress."""
        while True:
            if not job.steps and job.cycle is not None:
                self._refill(job, now)
            if not job.steps or job.steps[0].at > now:
                break
            step = job.steps.pop(0)
            self._accrue(job, step.at)
            self._apply(job, step)
        self._accrue(job, now)

    @staticmethod
    def _refill(job: _Resource, now: float) -> None:
        cycle = job.cycle
        assert cycle is not None
        # Far behind (a clock jump): skip whole cycles; each cycle sets its own states.
        behind = math.floor((now - cycle.origin) / cycle.period) - 1
        if behind > 0:
            cycle.origin += behind * cycle.period
        job.steps = [replace(step, at=cycle.origin + step.at) for step in cycle.steps]
        cycle.origin += cycle.period

    def _accrue(self, job: _Resource, at: float) -> None:
        """Grow progress at its rate while RUNNING, from the last accrual up to `at`."""
        if at <= job.progress_clock:
            return
        old = job.progress
        rate = job.progress_rate
        if old is not None and rate > 0 and job.state == _RUNNING and old < 100:
            new = min(100.0, old + rate * (at - job.progress_clock))
            if math.floor(new) != math.floor(old):
                # updateTime is when the (integer) percent last changed, not when it was read.
                job.update_time = self._wall(job.progress_clock + (math.floor(new) - old) / rate)
            job.progress = new
        job.progress_clock = at

    def _apply(self, job: _Resource, step: _Step) -> None:
        new_state = full_state(step.state, job.collection)
        changed = (new_state, step.status_code, step.status_message) != (
            job.state,
            job.status_code,
            job.status_message,
        )
        wall = self._wall(step.at)
        if new_state in FINAL_STATES and job.collection in COMPLETED_TIME_COLLECTIONS:
            if job.state != new_state or job.completed_time is None:
                job.completed_time = wall
        else:
            job.completed_time = None
        if new_state in ("DELETING", "DELETED") and job.collection == "deployments":
            job.delete_time = job.delete_time or wall
        else:
            job.delete_time = None
        job.state = new_state
        job.status_code = step.status_code
        job.status_message = step.status_message
        for name, value in step.changes:
            if getattr(job, name) != value:
                setattr(job, name, value)
                changed = True
        if changed:
            job.update_time = wall

    def _tick(self) -> None:
        """Let the spawners add (and retire) the resources due by now."""
        now = self._clock()
        for spawner in self._spawners:
            if now < spawner.origin:
                continue
            due = math.floor((now - spawner.origin) / spawner.every) + 1
            first = max(spawner.next_index, due - spawner.keep)
            for index in range(first, due):
                job = spawner.make(index, spawner.origin + index * spawner.every)
                self._jobs[(spawner.collection, job.job_id)] = job
                spawner.live.append((index, job.job_id))
            spawner.next_index = max(spawner.next_index, due)
            kept: list[tuple[int, str]] = []
            for index, job_id in spawner.live:
                key = (spawner.collection, job_id)
                age = due - 1 - index  # generations since this one was spawned
                if age < spawner.keep or key not in self._jobs:
                    if key in self._jobs:
                        kept.append((index, job_id))
                    continue
                job = self._jobs[key]
                if spawner.collection == "rlorTrainerJobs" and age < 2 * spawner.keep:
                    if job.state != ARCHIVED_STATE:
                        retired = spawner.origin + (index + spawner.keep) * spawner.every
                        retired = max(retired, job.progress_clock)
                        self._advance(job, retired)
                        job.steps.clear()
                        job.cycle = None
                        self._apply(job, _Step(retired, ARCHIVED_STATE))
                    kept.append((index, job_id))
                else:
                    del self._jobs[key]
            spawner.live = kept

    def _sorted(self, collection: str, order_by: str) -> list[_Resource]:
        now = self._clock()
        jobs = [job for (coll, _), job in self._jobs.items() if coll == collection]
        for job in jobs:
            self._advance(job, now)
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

    def _render(self, job: _Resource) -> dict[str, Any]:
        """The resource as proto3 JSON in its collection's SDK shape; empty fields omitted."""
        return render(self, job)
