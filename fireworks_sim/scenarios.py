"""Ready-made timelines: the demo, the busy and chaos scenarios, and generated populations."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fireworks_sim.control import _Control
from fireworks_sim.faults import _Chaos
from fireworks_sim.model import (
    DEFAULT_ACCELERATOR,
    DEFAULT_BASE_MODEL,
    _Resource,
    _rfc3339,
    _Spawner,
    _Step,
)

_OOM = "Training failed: CUDA out of memory at step 412"
_CANCELLED_BY = "Job cancelled by sim-user@example.com"


def demo_timeline(sim: _Control) -> list[str]:
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
            (12, "CANCELLED", "CANCELLED", _CANCELLED_BY),
        ],
    )
    sim.add_job("demo-steady", state="RUNNING", display_name="Demo: keeps running")
    return ["demo-complete", "demo-oom", "demo-cancel", "demo-steady"]


def _s(offset: float, state: str, code: str = "OK", message: str = "", **changes: Any) -> _Step:
    """A cycle or script step; `changes` sets record attributes such as `progress`."""
    return _Step(float(offset), state, code, message, tuple(changes.items()))


# (collection, id, add_job kwargs, one-off steps, cycle start, cycle period, cycle steps)
_BusyEntry = tuple[str, str, dict[str, Any], tuple[_Step, ...], float, float, tuple[_Step, ...]]
_BUSY: tuple[_BusyEntry, ...] = (
    (
        "dpoJobs",
        "busy-dpo",
        {},
        (),
        0,
        60,
        (
            _s(0, "PENDING"),
            _s(5, "RUNNING"),
            _s(30, "COMPLETED"),
            _s(40, "RUNNING"),  # resumed
            _s(52, "FAILED", "INTERNAL", _OOM),
        ),
    ),
    (
        "supervisedFineTuningJobs",
        "busy-sft",
        {"progress": 0, "progress_rate": 5.0, "estimated_cost_usd": 12.5},
        (),
        0,
        60,
        (
            _s(0, "PENDING", progress=0.0, epoch=0),
            _s(4, "RUNNING"),
            _s(14, "RUNNING", epoch=1),
            _s(26, "COMPLETED"),
        ),
    ),
    (
        "supervisedFineTuningJobs",
        "busy-sft-quota",
        {"state": "RUNNING", "progress": 0, "progress_rate": 4.0},
        (),
        0,
        55,
        (
            _s(0, "RUNNING", progress=0.0),
            _s(15, "FAILED", "RESOURCE_EXHAUSTED", "Out of GPU quota for NVIDIA_H100_80GB"),
            _s(25, "PENDING"),  # resumed: progress goes on from where it stopped
            _s(30, "RUNNING"),
            _s(45, "COMPLETED"),
        ),
    ),
    (
        "reinforcementFineTuningJobs",
        "busy-rft",
        {"state": "CREATING", "progress": 0, "progress_rate": 2.0},
        (),
        0,
        70,
        (
            _s(0, "CREATING", progress=0.0, accelerator_seconds=None),
            _s(3, "PENDING"),
            _s(8, "RUNNING"),
            _s(40, "RUNNING", epoch=1),
            _s(
                60,
                "CANCELLED",
                "CANCELLED",
                _CANCELLED_BY,
                accelerator_seconds={DEFAULT_ACCELERATOR: 52 * 3600},
            ),
        ),
    ),
    (
        "rlorTrainerJobs",
        "busy-rlor",
        {"state": "CREATING", "progress": 0, "progress_rate": 4.0},
        (),
        0,
        50,
        (
            _s(0, "CREATING", progress=0.0),
            _s(4, "RUNNING"),
            _s(30, "COMPLETED", accelerator_seconds={DEFAULT_ACCELERATOR: 26 * 8}),
        ),
    ),
    (
        "batchInferenceJobs",
        "busy-batch",
        {"state": "VALIDATING", "progress": 0, "progress_rate": 5.0},
        (),
        0,
        45,
        (
            _s(0, "VALIDATING", progress=0.0),
            _s(3, "RUNNING"),
            _s(25, "COMPLETED"),
        ),
    ),
    (
        "batchInferenceJobs",
        "busy-batch-fail",
        {"progress": 0, "progress_rate": 2.0},
        (),
        0,
        40,
        (
            _s(0, "PENDING", progress=0.0),
            _s(5, "RUNNING"),
            _s(20, "FAILED", "INVALID_ARGUMENT", "Row 17 of the input dataset is not JSON"),
        ),
    ),
    (
        "evaluationJobs",
        "busy-eval",
        {},
        (),
        0,
        40,
        (_s(0, "PENDING"), _s(4, "RUNNING"), _s(20, "COMPLETED")),
    ),
    (
        "evaluationJobs",
        "busy-eval-fail",
        {"state": "RUNNING"},
        (),
        0,
        35,
        (_s(0, "RUNNING"), _s(15, "FAILED", "INTERNAL", "Evaluator raised ZeroDivisionError")),
    ),
    (
        "evaluators",
        "busy-evaluator",
        {},
        (_s(8, "ACTIVE"),),
        30,
        60,
        (
            _s(0, "BUILDING"),
            _s(10, "BUILD_FAILED", "FAILED_PRECONDITION", "pip install failed: no numpy==0.0"),
            _s(25, "BUILDING"),
            _s(35, "ACTIVE"),
        ),
    ),
    (
        "deployments",
        "busy-deployment",
        {},
        (_s(10, "READY"),),
        30,
        60,
        (
            _s(0, "UPDATING"),
            _s(10, "READY", replica_count=2),
            _s(30, "UPDATING"),
            _s(40, "READY", replica_count=1),
        ),
    ),
    (
        "deployedModels",
        "busy-lora",
        {"deployment": "accounts/{account}/deployments/busy-deployment"},
        (_s(6, "DEPLOYED"),),
        20,
        60,
        (
            _s(0, "UPDATING"),
            _s(8, "DEPLOYED"),
            _s(40, "UNDEPLOYING"),
            _s(45, "DEPLOYING"),
            _s(50, "DEPLOYED"),
        ),
    ),
    ("models", "busy-model", {}, (_s(5, "READY"),), 0, 0, ()),
    ("datasets", "busy-dataset", {}, (_s(5, "READY"),), 0, 0, ()),
)
# (collection, id prefix, every, keep, add_job kwargs, steps relative to the spawn)
_BusySpawn = tuple[str, str, float, int, dict[str, Any], tuple[_Step, ...]]
_BUSY_SPAWNS: tuple[_BusySpawn, ...] = (
    (
        "dpoJobs",
        "busy-dpo-run",
        45,
        3,
        {},
        (_s(4, "RUNNING"), _s(25, "COMPLETED")),
    ),
    (
        "supervisedFineTuningJobs",
        "busy-sft-run",
        60,
        3,
        {"progress": 0, "progress_rate": 4.0, "estimated_cost_usd": 3.75},
        (_s(3, "RUNNING"), _s(20, "RUNNING", epoch=1), _s(30, "EARLY_STOPPED")),
    ),
    (
        "rlorTrainerJobs",
        "busy-rlor-run",
        50,
        2,
        {"state": "CREATING", "progress": 0, "progress_rate": 5.0},
        (_s(3, "RUNNING"), _s(25, "COMPLETED", accelerator_seconds={DEFAULT_ACCELERATOR: 176})),
    ),
    (
        "deployments",
        "busy-deployment-run",
        90,
        3,
        {},
        (_s(15, "READY"), _s(60, "DELETING"), _s(70, "DELETED")),
    ),
    ("models", "busy-model-run", 60, 3, {}, (_s(10, "READY"),)),
    ("datasets", "busy-dataset-run", 60, 3, {}, (_s(8, "READY"),)),
)


def _busy(sim: _Control) -> list[str]:
    """Resources of every collection that keep moving forever (see `scenario`)."""
    start = sim.clock_seconds()
    added: list[str] = []
    for collection, job_id, kwargs, once, cycle_at, period, cycle in _BUSY:
        options: dict[str, Any] = {
            key: value.format(account=sim.account_id) if isinstance(value, str) else value
            for key, value in kwargs.items()
        }
        sim.add_job(job_id, collection=collection, display_name=f"Busy: {job_id}", **options)
        sim.set_steps(job_id, collection, once, origin=start)
        if cycle:
            sim.set_cycle(job_id, collection, period, cycle, cycle_at)
        added.append(f"{collection}/{job_id}")
    for collection, prefix, every, keep, kwargs, steps in _BUSY_SPAWNS:

        def make(
            index: int,
            at: float,
            collection: str = collection,
            prefix: str = prefix,
            kwargs: dict[str, Any] = kwargs,
            steps: tuple[_Step, ...] = steps,
        ) -> _Resource:
            job = sim.build(
                f"{prefix}-{index:04d}",
                collection=collection,
                at=at,
                display_name=f"Busy: {prefix} #{index}",
                **kwargs,
            )
            job.steps = [replace(step, at=at + step.at) for step in steps]
            return job

        sim.add_spawner(_Spawner(collection, start, float(every), keep, make))
        added.append(f"{collection}/{prefix}-*")
    return added


#: The `hostile` scenario's attacks: (collection, attack, parameters); see `hostile.ATTACKS`.
HOSTILE_ATTACKS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("supervisedFineTuningJobs", "drip", {"pace": 0.05}),
    ("reinforcementFineTuningJobs", "gzip-bomb", {"size": 200_000_000}),
    ("deployments", "huge", {"size": 50_000_000}),
    ("rlorTrainerJobs", "endless-pages", {}),
    ("datasets", "new-job-flood", {"per_page": 200}),
    ("batchInferenceJobs", "duplicate-names", {}),
    ("evaluationJobs", "retry-after", {"retry_after": "1e20"}),
)


def _hostile(sim: _Control) -> list[str]:
    """A real resource in every attacked collection, the attacks, and a DPO job `steady` that
    completes and resumes every 10 s, untouched by any attack."""
    added: list[str] = []
    for collection, attack, params in HOSTILE_ATTACKS:
        sim.add_job(f"real-{attack}", collection=collection)
        sim.attack(collection, attack, **params)
        added.append(f"{collection}/real-{attack}")
    sim.add_job("steady", state="RUNNING", display_name="Steady job")
    sim.repeat("steady", [(0.0, "RUNNING", "OK", ""), (10.0, "COMPLETED", "OK", "")], period=20)
    return [*added, "dpoJobs/steady"]


#: The scenarios `scenario()` (and `--scenario`) know.
SCENARIOS: tuple[str, ...] = ("demo", "busy", "chaos", "hostile")


def scenario(sim: _Control, name: str, *, seed: int = 0) -> list[str]:
    """Load a named scenario into `sim` (on top of what it holds); return what it added.

    - `demo`: `demo_timeline`, four DPO jobs that settle within ~15 s.
    - `busy`: resources of every collection that keep moving forever, worked out lazily
      from the clock: jobs run with progress, complete, fail or are cancelled and are then
      resumed; new runs are spawned every minute or so and old ones retired (RLOR trainers
      via ARCHIVED, deployments via DELETING and DELETED); deployments go
      CREATING→READY→UPDATING→READY, evaluators BUILDING→ACTIVE (and BUILD_FAILED), ...
    - `chaos`: `busy`, plus faults on about one API answer in eight, drawn from `seed`:
      500, 503, 429 with `Retry-After: 1`, a slow answer (`CHAOS_SLOW_SECONDS`) and a
      malformed body. `clear_faults()` stops them.
    - `hostile`: `HOSTILE_ATTACKS` on seven collections (a drip, a gzip bomb, a 50 MB body,
      endless pages, a flood of new resources, impostor names, a huge `Retry-After`) beside a
      healthy DPO job `steady`; `calm()` lifts them.

    Returns `collection/id` entries (`collection/prefix-*` for spawned runs).
    """
    if name == "demo":
        return [f"dpoJobs/{job_id}" for job_id in demo_timeline(sim)]
    if name == "busy":
        return _busy(sim)
    if name == "hostile":
        return _hostile(sim)
    if name == "chaos":
        added = _busy(sim)
        sim.start_chaos(_Chaos(random.Random(seed), rate=0.125))
        return added
    raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")


# (state, weight, status code, status message)
_POPULATION: tuple[tuple[str, int, str, str], ...] = (
    ("RUNNING", 30, "OK", ""),
    ("COMPLETED", 25, "OK", ""),
    ("PENDING", 15, "OK", ""),
    ("FAILED", 10, "INTERNAL", _OOM),
    ("CANCELLED", 8, "CANCELLED", _CANCELLED_BY),
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


def populate(sim: _Control, n: int, *, seed: int = 0) -> list[str]:
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
