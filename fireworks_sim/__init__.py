"""A Fireworks control-plane API look-alike, for tests and the demo.

`Simulator` is a plain ASGI 3 app that answers the GET and LIST endpoints the watcher polls
(`GET /v1/accounts/{account}/{collection}[/{id}]`) for every collection in `COLLECTIONS`,
from an in-memory table, with scripted and repeating timelines, moving progress, fault
injection, ready-made scenarios and a small `/_sim/` control API so a simulator running in
another process can be driven over HTTP.

Every collection answers in the shape of the official SDK's model for that resource
(`fireworks-ai` 1.2.30, `fireworks/types/`): only keys the model defines, every required key,
proto3 JSON values (int64 as strings, empty values omitted). The shapes are written by hand
(`shapes`); `tests/contract/test_sdk_oracle.py` proves them against the SDK, a test-only dependency.

| kind | collection (= LIST key) | SDK model | states |
|---|---|---|---|
| dpo | dpoJobs | DpoJob | JOB_STATE_* |
| sft | supervisedFineTuningJobs | SupervisedFineTuningJob | JOB_STATE_* |
| rft | reinforcementFineTuningJobs | ReinforcementFineTuningJob | JOB_STATE_* |
| rlor | rlorTrainerJobs | ReinforcementFineTuningStep | JOB_STATE_* (ARCHIVED after delete) |
| batch-inference | batchInferenceJobs | BatchInferenceJob | JOB_STATE_* |
| evaluation | evaluationJobs | EvaluationJobGetResponse | JOB_STATE_* |
| evaluator | evaluators | EvaluatorGetResponse | BUILDING, ACTIVE, BUILD_FAILED |
| deployment | deployments | Deployment | CREATING, READY, UPDATING, DELETING, DELETED, FAILED |
| deployed-model | deployedModels | shared.DeployedModel | DEPLOYING, DEPLOYED, UPDATING, UNDEPLOYING |
| model | models | Model | UPLOADING, READY |
| dataset | datasets | Dataset | UPLOADING, READY |
| account | (`GET /v1/accounts/{id}`, no LIST) | Account | `suspendState`: UNSUSPENDED, CREDIT_DEPLETED... |

One injected clock drives everything: `clock()` (monotonic seconds) decides when scripted
steps fall due and how far progress has moved, and every timestamp is
`start_time + (clock() - clock() at construction)`. Nothing runs in the background: timelines,
repeating cycles and the scenarios' newly spawned resources are all worked out lazily, on read.

The `/_sim/` control API (no key needed; JSON bodies; answers JSON or a grpc-style error):

| method and path | body | effect |
|---|---|---|
| `POST /_sim/jobs` | `add_job` keyword arguments, `job_id` included | add or replace a resource |
| `GET /_sim/jobs/{collection}` | | `{"jobs": [...]}`, as `jobs()` |
| `GET /_sim/jobs/{collection}/{id}` | | one resource, as `job()` |
| `POST /_sim/jobs/{collection}/{id}/state` | `state`, `status_code`, `status_message` | `set_state` |
| `POST /_sim/jobs/{collection}/{id}/progress` | `percent`, `epoch`, `rate` | `set_progress` |
| `POST /_sim/jobs/{collection}/{id}/script` | `{"steps": [[s, state, code, msg], ...]}` | `script` |
| `POST /_sim/jobs/{collection}/{id}/repeat` | `steps` as above, `period`, `start` | `repeat` |
| `DELETE /_sim/jobs/{collection}/{id}` | optional `{"purge": true}` | `remove_job` |
| `POST /_sim/faults` | `add_fault` keyword arguments | queue a fault |
| `DELETE /_sim/faults` | | `clear_faults` |
| `POST /_sim/scenario` | `{"name": "demo" or "busy" or "chaos", "seed": 0}` | `scenario` |
| `POST /_sim/attacks` | `attack` keyword arguments | a hostile peer for one collection |
| `DELETE /_sim/attacks` | optional `collection` | `calm` |
| `GET /_sim/accounts/{id}` | | the account, as `account()` |
| `POST /_sim/accounts/{id}/suspend` | `state` (`CREDIT_DEPLETED`...), `status_message` | `suspend` |
| `POST /_sim/accounts/{id}/unsuspend` | optional `{"resume": false}` | `unsuspend` |
| `GET /_sim/requests` | | `{"requests": [[method, path], ...]}`, the last 10,000 |
| `GET /_sim/stats` | | `{"requests": n, "jobs": n, "faults": n}` |

It deliberately imports nothing from `watcher` (nor the SDK): it is written from the API docs
and the SDK's models, not from the client, so the two cannot share a wire-format bug. Only the
standard library is used; uvicorn is imported lazily by `serve()`.

Modules, each importing only those above it (the scenarios use the control API's public
methods; `api` routes `POST /_sim/scenario` to them):

| module | role |
|---|---|
| `model` | collections, states, the resource records, steps, cycles, spawners, time |
| `wire` | HTTP plumbing: replies, grpc-gateway style errors, ASGI receive and send |
| `faults` | queued faults and the `chaos` scenario's random ones |
| `shapes` | each collection's SDK shape: `FIELDS` and one renderer per collection |
| `state` | the table of resources and the lazy clock that moves them |
| `control` | the Python control API and the `/_sim/` routes |
| `scenarios` | `demo_timeline`, `scenario` (demo, busy, chaos, hostile), `populate` |
| `api` | `Simulator`, the ASGI app: routing, auth, readMask, LIST paging, errors |
| `serve` | `listen_tcp`, `base_url`, `serve` (uvicorn) |
| `cli` | `main`, run by `python -m fireworks_sim` and `fireworks-watcher simulate` |
"""

from __future__ import annotations

from fireworks_sim.api import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Simulator
from fireworks_sim.cli import main
from fireworks_sim.faults import CHAOS_SLOW_SECONDS
from fireworks_sim.model import (
    ACCOUNT_STATES,
    ARCHIVED_STATE,
    COLLECTIONS,
    COMPLETED_TIME_COLLECTIONS,
    DEFAULT_ACCELERATOR,
    DEFAULT_BASE_MODEL,
    FINAL_STATES,
    INITIAL_STATES,
    JOB_COLLECTIONS,
    KINDS,
    PROGRESS_COLLECTIONS,
    STATE_PREFIX,
    STATES,
    SUSPEND_STATES,
    UPDATE_TIME_COLLECTIONS,
    WANDB_COLLECTIONS,
    Step,
    full_state,
)
from fireworks_sim.scenarios import SCENARIOS, demo_timeline, populate, scenario
from fireworks_sim.serve import base_url, listen_tcp, serve
from fireworks_sim.shapes import FIELDS, ROUTE_API_KEY, SIGNED_LOGS_URL, SIGNED_METRICS_URL
from fireworks_sim.wire import GRPC_CODES

__all__ = [
    "ACCOUNT_STATES",
    "ARCHIVED_STATE",
    "CHAOS_SLOW_SECONDS",
    "COLLECTIONS",
    "COMPLETED_TIME_COLLECTIONS",
    "DEFAULT_ACCELERATOR",
    "DEFAULT_BASE_MODEL",
    "DEFAULT_PAGE_SIZE",
    "FIELDS",
    "FINAL_STATES",
    "GRPC_CODES",
    "INITIAL_STATES",
    "JOB_COLLECTIONS",
    "KINDS",
    "MAX_PAGE_SIZE",
    "PROGRESS_COLLECTIONS",
    "ROUTE_API_KEY",
    "SCENARIOS",
    "SIGNED_LOGS_URL",
    "SIGNED_METRICS_URL",
    "STATES",
    "STATE_PREFIX",
    "SUSPEND_STATES",
    "UPDATE_TIME_COLLECTIONS",
    "WANDB_COLLECTIONS",
    "Simulator",
    "Step",
    "base_url",
    "demo_timeline",
    "full_state",
    "listen_tcp",
    "main",
    "populate",
    "scenario",
    "serve",
]
