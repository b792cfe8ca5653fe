"""The control API: the Python methods that drive the simulator, and `/_sim/` over HTTP.

The `/_sim/` routes map one to one onto the methods (see the table in `fireworks_sim`), so a
simulator running in another process can be driven as a test drives one in its own.

The account's own health: `suspend(account_id=None, state="CREDIT_DEPLETED")` sets its
`suspendState` (and pauses its RUNNING jobs), `unsuspend(account_id=None, resume=True)` lifts
it (and resumes them), `account(account_id=None)` is its JSON; over HTTP
`POST /_sim/accounts/{id}/suspend` (`{"state": ...}`), `POST /_sim/accounts/{id}/unsuspend`
and `GET /_sim/accounts/{id}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fireworks_sim.faults import _Fault
from fireworks_sim.hostile import Attack
from fireworks_sim.model import (
    _RUNNING,
    ARCHIVED_STATE,
    COLLECTIONS,
    DEFAULT_BASE_MODEL,
    JOB_COLLECTIONS,
    PAUSED_STATE,
    PROGRESS_COLLECTIONS,
    Step,
    _Account,
    _parse_time,
    _Step,
)
from fireworks_sim.shapes import render_account
from fireworks_sim.state import _State
from fireworks_sim.wire import _error_reply, _json_bytes, _Reply


class _Control(_State):
    """The Python control API (thread-safe) and the `/_sim/` routes; the base of `Simulator`."""

    def add_job(
        self,
        job_id: str,
        *,
        collection: str = "dpoJobs",
        state: str | None = None,
        display_name: str | None = None,
        status_code: str = "OK",
        status_message: str = "",
        base_model: str = DEFAULT_BASE_MODEL,
        output_model: str | None = None,
        dataset: str | None = None,
        created_by: str = "sim-user@example.com",
        create_time: str | None = None,
        epochs: int = 1,
        learning_rate: float = 0.0001,
        wandb: bool = True,
        progress: int | None = None,
        progress_rate: float = 0.0,
        epoch: int | None = None,
        model: str | None = None,
        evaluator: str | None = None,
        deployment: str | None = None,
        replica_count: int | None = None,
        estimated_cost_usd: float | None = None,
        accelerator_seconds: int | Mapping[str, int] | None = None,
        fine_tuning_job: str | None = None,
    ) -> dict[str, Any]:
        """Add (or replace) a resource and return its JSON.

        Knobs a collection's SDK model has no field for raise ValueError when given
        (`progress`, `progress_rate`, `epoch`, `replica_count`, `estimated_cost_usd`,
        `accelerator_seconds`, `evaluator`, `deployment`, `model`, `fine_tuning_job`); the older ones
        (`base_model`, `epochs`, `wandb`...) are simply not rendered there.

        Args:
            job_id: The id inside the account, e.g. `my-dpo-job`.
            collection: One of `COLLECTIONS`.
            state: `PENDING` or `JOB_STATE_PENDING` (bare names such as `READY` outside job
                collections); defaults to `INITIAL_STATES[collection]`; unknown names are
                kept as they are.
            display_name: Defaults to "Sim job {job_id}".
            output_model: Defaults to `accounts/{account}/models/{job_id}`.
            dataset: The training/input dataset; defaults to
                `accounts/{account}/datasets/{job_id}-data`.
            create_time: RFC 3339; defaults to the simulated now.
            wandb: Whether the job has a `wandbConfig` (with the echoed API key).
            progress: `jobProgress.percent` (sft, rft, rlor, batch-inference).
            progress_rate: Percent per clock second that `progress` grows while the job is
                RUNNING, capped at 100 (progress starts at 0 if not given).
            epoch: `jobProgress.epoch`.
            model: The served model: `model` of batch jobs and deployed models, `baseModel`
                of deployments (defaults: `base_model`, or `accounts/{account}/models/{id}`
                for a deployed model).
            evaluator: rft and evaluation jobs; defaults to
                `accounts/{account}/evaluators/{job_id}-evaluator`.
            deployment: A deployed model's deployment; defaults to
                `accounts/{account}/deployments/{job_id}-deployment`.
            replica_count: A deployment's `replicaCount`; by default 1 while READY or
                UPDATING, else 0.
            estimated_cost_usd: An SFT job's `estimatedCost` (google.type.Money, USD).
            accelerator_seconds: rft/rlor `acceleratorSeconds`: seconds of
                `DEFAULT_ACCELERATOR`, or a mapping accelerator type -> seconds.
            fine_tuning_job: A model's `fineTuningJob`: the resource name of the job that
                made it (`accounts/{account}/supervisedFineTuningJobs/{id}`); none by default.
        """
        now = self._clock()
        job = self.build(
            job_id,
            collection=collection,
            at=now,
            state=state,
            display_name=display_name,
            status_code=status_code,
            status_message=status_message,
            base_model=base_model,
            output_model=output_model,
            dataset=dataset,
            created_by=created_by,
            create_time=_parse_time(create_time) if create_time else None,
            epochs=epochs,
            learning_rate=learning_rate,
            wandb=wandb,
            progress=progress,
            progress_rate=progress_rate,
            epoch=epoch,
            model=model,
            evaluator=evaluator,
            deployment=deployment,
            replica_count=replica_count,
            estimated_cost_usd=estimated_cost_usd,
            accelerator_seconds=accelerator_seconds,
            fine_tuning_job=fine_tuning_job,
        )
        with self._lock:
            self._jobs[(collection, job_id)] = job
            return self._render(job)

    def set_state(
        self,
        job_id: str,
        state: str,
        *,
        collection: str = "dpoJobs",
        status_code: str = "OK",
        status_message: str = "",
    ) -> dict[str, Any]:
        """Move a resource to `state` now and return its JSON; a pending script keeps running.

        Raises:
            KeyError: The resource does not exist.
        """
        with self._lock:
            job = self._job(collection, job_id)
            now = self._clock()
            self._advance(job, now)
            self._apply(job, _Step(now, state, status_code, status_message))
            return self._render(job)

    def set_progress(
        self,
        job_id: str,
        percent: float,
        *,
        collection: str,
        epoch: int | None = None,
        rate: float | None = None,
    ) -> dict[str, Any]:
        """Set a job's `jobProgress.percent` (clamped to 0-100) now and return its JSON.

        Args:
            collection: One of `PROGRESS_COLLECTIONS`.
            epoch: Also set `jobProgress.epoch`.
            rate: Also set the percent per clock second it grows while RUNNING.

        Raises:
            KeyError: The resource does not exist.
            ValueError: The collection has no `jobProgress`.
        """
        if collection not in PROGRESS_COLLECTIONS:
            raise ValueError(f"{collection} has no jobProgress")
        changes: list[tuple[str, Any]] = [("progress", min(100.0, max(0.0, float(percent))))]
        if epoch is not None:
            changes.append(("epoch", epoch))
        if rate is not None:
            changes.append(("progress_rate", float(rate)))
        with self._lock:
            job = self._job(collection, job_id)
            now = self._clock()
            self._advance(job, now)
            step = _Step(now, job.state, job.status_code, job.status_message, tuple(changes))
            self._apply(job, step)
            return self._render(job)

    def remove_job(
        self,
        job_id: str,
        collection: str = "dpoJobs",
        *,
        purge: bool = False,
        deleted_by: str | None = None,
    ) -> None:
        """Delete a resource; later GETs answer 404. Raises KeyError if it does not exist.

        An RLOR trainer is first kept as `JOB_STATE_ARCHIVED`, as the gateway shows deleted
        trainers in their retention window; removing it again (or `purge=True`) drops it.
        The archived trainer's `createdBy` then names `deleted_by` when given, as the API
        reports the deleter there.
        """
        with self._lock:
            job = self._job(collection, job_id)
            if collection == "rlorTrainerJobs" and not purge and job.state != ARCHIVED_STATE:
                now = self._clock()
                self._advance(job, now)
                job.steps.clear()
                job.cycle = None
                if deleted_by is not None:
                    job.created_by = deleted_by
                self._apply(job, _Step(now, ARCHIVED_STATE))
                return
            del self._jobs[(collection, job_id)]

    def script(self, job_id: str, steps: Sequence[Step], collection: str = "dpoJobs") -> None:
        """Replace the job's timeline with `steps`, each `(seconds_from_now, state, code, message)`.

        Steps are applied lazily, whenever the job is read, once `clock()` has passed them,
        so no background task is needed and a fake clock makes them deterministic. Any
        `repeat` cycle of the job stops.
        """
        with self._lock:
            job = self._job(collection, job_id)
            start = self._clock()
            self._advance(job, start)
            job.cycle = None
            job.steps = sorted(
                (_Step(start + float(delay), st, code, msg) for delay, st, code, msg in steps),
                key=lambda step: step.at,
            )

    def repeat(
        self,
        job_id: str,
        steps: Sequence[Step],
        *,
        period: float,
        collection: str = "dpoJobs",
        start: float = 0.0,
    ) -> None:
        """Repeat `steps` (offsets in `[0, period)` seconds) every `period` seconds, forever.

        The first cycle begins `start` seconds from now, after any scripted steps still
        pending; like `script`, nothing runs in the background.
        """
        cycle_steps = tuple(
            sorted(
                (_Step(float(delay), st, code, msg) for delay, st, code, msg in steps),
                key=lambda step: step.at,
            )
        )
        self.set_cycle(job_id, collection, period, cycle_steps, start)

    # -- the account's own health ---------------------------------------------------------

    def account(self, account_id: str | None = None) -> dict[str, Any]:
        """The account's JSON as `GET /v1/accounts/{id}` answers it (default: the simulator's).

        Raises:
            KeyError: The simulator serves no such account.
        """
        with self._lock:
            return render_account(self._account(account_id))

    def suspend(
        self,
        account_id: str | None = None,
        *,
        state: str = "CREDIT_DEPLETED",
        status_message: str = "",
    ) -> dict[str, Any]:
        """Suspend the account now (`suspendState` = `state`) and return its JSON.

        Every job of a job collection that is RUNNING becomes `JOB_STATE_PAUSED` (status
        FAILED_PRECONDITION, "account suspended (STATE)"), as the API pauses jobs of a
        suspended account; `unsuspend` resumes them. A job that starts RUNNING later (a
        script) is not paused. Suspending a suspended account changes only its state.

        Args:
            state: One of `SUSPEND_STATES` but UNSUSPENDED; other names are served as given.
            status_message: The account's `status.message`.

        Raises:
            KeyError: The simulator serves no such account.
            ValueError: `state` is UNSUSPENDED (that is `unsuspend`).
        """
        value = state.strip().upper()
        if value in ("", "UNSUSPENDED"):
            raise ValueError("suspend needs a suspend state; unsuspend() lifts it")
        with self._lock:
            account = self._account(account_id)
            now = self._clock()
            account.suspend_state = value
            account.status_message = status_message
            account.update_time = self._wall(now)
            message = f"account suspended ({value})"
            for (collection, job_id), job in self._jobs.items():
                if collection not in JOB_COLLECTIONS:
                    continue
                self._advance(job, now)
                if job.state == _RUNNING:
                    self._apply(job, _Step(now, PAUSED_STATE, "FAILED_PRECONDITION", message))
                    account.paused.append((collection, job_id))
            return render_account(account)

    def unsuspend(self, account_id: str | None = None, *, resume: bool = True) -> dict[str, Any]:
        """End the account's suspension now (`suspendState` = UNSUSPENDED); return its JSON.

        With `resume`, the jobs the suspension paused and that are still PAUSED run again.

        Raises:
            KeyError: The simulator serves no such account.
        """
        with self._lock:
            account = self._account(account_id)
            now = self._clock()
            if account.suspend_state != "UNSUSPENDED":
                account.suspend_state = "UNSUSPENDED"
                account.status_message = ""
                account.update_time = self._wall(now)
            paused, account.paused = account.paused, []
            for key in paused if resume else ():
                job = self._jobs.get(key)
                if job is None:
                    continue
                self._advance(job, now)
                if job.state == PAUSED_STATE:
                    self._apply(job, _Step(now, _RUNNING))
            return render_account(account)

    def _account(self, account_id: str | None) -> _Account:
        """The account record (the lock must be held)."""
        key = self.account_id if account_id is None else account_id
        try:
            return self._accounts[key]
        except KeyError:
            raise KeyError(f"no account {key}") from None

    def add_fault(
        self,
        *,
        status: int | None = None,
        times: int = 1,
        path_contains: str = "",
        retry_after: str | None = None,
        body: str | None = None,
        content_type: str = "application/json",
        delay: float = 0.0,
        malformed: bool = False,
        truncated: bool = False,
    ) -> None:
        """Queue a fault for the next `times` API requests whose path (and query) contains `path_contains`.

        Faults are consumed first-in first-out; `/_sim/` requests never match.

        Args:
            status: Answer with this HTTP status and a grpc-style error body (or `body`).
            retry_after: Sent as the `Retry-After` header.
            body: A raw body instead of the error JSON, e.g. an HTML error page.
            content_type: The Content-Type of the faulty answer.
            delay: Seconds to wait before answering (the answer is otherwise normal unless
                another kind is set too); lets a client's timeout fire.
            malformed: Answer 200 with a body that is not JSON (`{"name": `).
            truncated: Answer with the first half of the real body (Content-Length matching
                the half, so every transport delivers it and only the JSON parse fails).
        """
        if times < 1:
            raise ValueError("times must be at least 1")
        fault = _Fault(
            remaining=times,
            status=status,
            path_contains=path_contains,
            retry_after=retry_after,
            body=body,
            content_type=content_type,
            delay=delay,
            malformed=malformed,
            truncated=truncated,
        )
        with self._lock:
            self._faults.append(fault)

    def attack(
        self,
        collection: str,
        kind: str,
        *,
        pace: float = 0.05,
        size: int = 200_000_000,
        per_page: int = 200,
        retry_after: str = "1e20",
    ) -> None:
        """Answer every request of `collection` as a hostile peer would, until `calm()`.

        `kind` is one of `hostile.ATTACKS`: drip (a byte every `pace` s), gzip-bomb and huge
        (`size` decoded bytes), endless-pages, new-job-flood (`per_page` new resources a page),
        duplicate-names, retry-after (429 with `retry_after`).
        """
        if collection not in COLLECTIONS:
            raise ValueError(f"unknown collection {collection!r}")
        attack = Attack(kind, pace=pace, size=size, per_page=per_page, retry_after=retry_after)
        with self._lock:
            self._attacks[collection] = attack

    def calm(self, collection: str | None = None) -> None:
        """Lift the attack on `collection`, or on every collection."""
        with self._lock:
            if collection is None:
                self._attacks.clear()
            else:
                self._attacks.pop(collection, None)

    def clear_faults(self) -> None:
        """Drop every pending fault (and stop the `chaos` scenario's random ones)."""
        with self._lock:
            self._faults.clear()
            self._chaos = None

    @property
    def requests(self) -> list[tuple[str, str]]:
        """A copy of the `(method, path)` of every API request served, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many API requests (not `/_sim/` ones) were served, faults included."""
        with self._lock:
            return len(self._requests)

    def clear_requests(self) -> None:
        """Forget the served requests (e.g. after setting up, before counting)."""
        with self._lock:
            self._requests.clear()

    def jobs(self, collection: str = "dpoJobs") -> list[dict[str, Any]]:
        """A snapshot of the collection's resources as API JSON, ordered by name."""
        with self._lock:
            self._tick()
            return [self._render(job) for job in self._sorted(collection, "")]

    def job(self, job_id: str, collection: str = "dpoJobs") -> dict[str, Any]:
        """One resource's current JSON. Raises KeyError if it does not exist."""
        with self._lock:
            self._tick()
            job = self._job(collection, job_id)
            self._advance(job, self._clock())
            return self._render(job)

    # -- HTTP: the /_sim/ control API --------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> _Reply:
        parts = path.removeprefix("/_sim/").strip("/").split("/")
        try:
            payload: Any = json.loads(body) if body.strip() else {}
            if not isinstance(payload, dict):
                raise TypeError("the body must be a JSON object")
            result = self._control_route(method, parts, payload)
        except KeyError as error:
            return _error_reply(404, str(error.args[0] if error.args else error))
        except (TypeError, ValueError) as error:
            return _error_reply(400, str(error))
        return _Reply(200, _json_bytes(result))

    def _control_route(self, method: str, parts: list[str], payload: dict[str, Any]) -> object:
        match method, parts:
            case "POST", ["jobs"]:
                return self.add_job(**payload)
            case "GET", ["jobs", collection]:
                return {"jobs": self.jobs(collection)}
            case "GET", ["jobs", collection, job_id]:
                return self.job(job_id, collection)
            case "POST", ["jobs", collection, job_id, "state"]:
                return self.set_state(job_id, collection=collection, **payload)
            case "POST", ["jobs", collection, job_id, "progress"]:
                return self.set_progress(job_id, collection=collection, **payload)
            case "POST", ["jobs", collection, job_id, "script"]:
                self.script(job_id, _steps(payload.pop("steps", None)), collection=collection)
                return {}
            case "POST", ["jobs", collection, job_id, "repeat"]:
                steps = _steps(payload.pop("steps", None))
                self.repeat(job_id, steps, collection=collection, **payload)
                return {}
            case "DELETE", ["jobs", collection, job_id]:
                self.remove_job(job_id, collection, **payload)
                return {}
            case "GET", ["accounts", account_id]:
                return self.account(account_id)
            case "POST", ["accounts", account_id, "suspend"]:
                return self.suspend(account_id, **payload)
            case "POST", ["accounts", account_id, "unsuspend"]:
                return self.unsuspend(account_id, **payload)
            case "POST", ["faults"]:
                self.add_fault(**payload)
                return {}
            case "DELETE", ["faults"]:
                self.clear_faults()
                return {}
            case "POST", ["attacks"]:
                self.attack(**payload)
                return {}
            case "DELETE", ["attacks"]:
                self.calm(**payload)
                return {}
            case "GET", ["requests"]:
                return {"requests": [list(request) for request in self.requests[-10_000:]]}
            case "GET", ["stats"]:
                with self._lock:
                    return {
                        "requests": len(self._requests),
                        "jobs": len(self._jobs),
                        "faults": len(self._faults),
                    }
        raise KeyError(f"no control route {method} /_sim/{'/'.join(parts)}")


def _steps(raw_steps: object) -> list[Step]:
    if not isinstance(raw_steps, list):
        raise TypeError("steps must be a list of [seconds, state, code, message]")
    return [(float(s), str(st), str(c), str(m)) for s, st, c, m in raw_steps]
