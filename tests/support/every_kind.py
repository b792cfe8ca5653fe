"""One job of every kind in the simulator, and the move each makes."""

from __future__ import annotations

from fireworks_sim import Simulator
from watcher.core.kinds import JobKind

#: (kind, state it starts in, state it moves to, the exit code `watch` ends with there).
MOVES: list[tuple[JobKind, str, str, int]] = [
    (JobKind.DPO, "RUNNING", "COMPLETED", 0),
    (JobKind.SFT, "RUNNING", "FAILED", 1),
    (JobKind.RFT, "RUNNING", "EARLY_STOPPED", 0),
    (JobKind.RLOR, "RUNNING", "CANCELLED", 1),
    (JobKind.BATCH_INFERENCE, "VALIDATING", "EXPIRED", 1),
    (JobKind.EVALUATION, "PENDING", "COMPLETED", 0),
    (JobKind.EVALUATOR, "BUILDING", "BUILD_FAILED", 1),
    (JobKind.DEPLOYMENT, "CREATING", "READY", 0),
    (JobKind.DEPLOYED_MODEL, "DEPLOYING", "DEPLOYED", 0),
    (JobKind.MODEL, "UPLOADING", "READY", 0),
    (JobKind.DATASET, "UPLOADING", "READY", 0),
]


def resource_id(kind: JobKind) -> str:
    return f"{kind}-1"


def add_every_kind(sim: Simulator) -> None:
    """One resource of each kind, in its starting state."""
    for kind, start, _, _ in MOVES:
        sim.add_job(resource_id(kind), collection=kind.collection, state=start)


def move_every_kind(sim: Simulator) -> None:
    """Each resource to its next state; failures carry a reason."""
    for kind, _, end, code in MOVES:
        message = f"{kind} went wrong" if code else ""
        sim.set_state(
            resource_id(kind),
            end,
            collection=kind.collection,
            status_code="INTERNAL" if code else "OK",
            status_message=message,
        )
