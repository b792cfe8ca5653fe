"""Reading the API's JSON: one resource's payload into a snapshot. Pure functions, no I/O.

The snapshot keeps only the fields its kind reads (`watcher.core.kinds`), so secrets in a
payload (`wandbConfig.apiKey`, `*SignedUrl`, route keys, cloud credentials) never go further;
and each text it keeps is bounded (`STATE_LIMIT`, `TEXT_LIMIT`), since it is stored and may
enter the history with every transition.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from watcher.core.errors import PayloadError
from watcher.core.kinds import UNSPECIFIED, JobKind, Meaning, short_state
from watcher.core.messages import FIELD_LIMIT
from watcher.core.model import JobRef, JobSnapshot
from watcher.core.names import job_id_of
from watcher.core.text import cap, one_line

#: A state name or status code is cut to this many characters. The API's are under 30; a
#: longer one is a bad answer, and each distinct name is stored in the history.
STATE_LIMIT: Final = 64
#: Every other text kept of a payload is cut to this many characters, as a message carries it.
TEXT_LIMIT: Final = FIELD_LIMIT


def _str(value: object) -> str:
    """`value` if it is a string, else "" (a wrong-typed optional field counts as absent)."""
    return value if type(value) is str else ""


def _dict(value: object) -> dict[str, object]:
    """`value` if it is a JSON object, else an empty one."""
    return value if type(value) is dict else _EMPTY


_EMPTY: Final[dict[str, object]] = {}


def parse_job(
    payload: object, *, kind: JobKind, account_id: str, ref: JobRef | None = None
) -> JobSnapshot:
    """Build a `JobSnapshot` from one job's JSON, keeping only the fields the watcher uses.

    Missing and extra fields are fine, and an optional field of the wrong type counts as
    absent, because the API schema grows and proto3 JSON omits default values. This runs
    once per job per LIST page, so it is written flat: plain lookups, no helper layers.

    Args:
        payload: The decoded JSON of one job (a GET body or one LIST item).
        kind: The job kind the payload was fetched as.
        account_id: The account the job belongs to.
        ref: The job's identity when the payload carries no `name` (e.g. a GET whose
            answer lacks it); the `name` wins when both are there.

    Raises:
        PayloadError: The payload is not a JSON object, its `name` is not a resource name of
            a `kind` job of `account_id` (`watcher.core.names`), or it has no name and no
            `ref` is given.
    """
    spec = kind.spec
    if type(payload) is not dict:
        what = "account" if not spec.listable else f"{kind} job"
        msg = f"{what} payload is not a JSON object (got {type(payload).__name__})"
        raise PayloadError(msg)
    get = payload.get
    name = get("name")
    if ref is None or (name is not None and name != ""):
        # The whole name, checked: never a guess from its last segment (watcher.core.names).
        ref = JobRef(kind=kind, job_id=job_id_of(name, kind=kind, account_id=account_id))
    status = _dict(get("status"))
    state = _state(get(spec.state_key), kind)
    # Each kind reads its own fields (watcher.core.kinds); the snapshot keeps nothing else.
    fields = {
        name: cap(field.convert(get(field.key)), TEXT_LIMIT) for name, field in spec.fields.items()
    }
    reason = status_reason(status)
    if not reason and spec.state_is_reason and spec.meaning(state) is Meaning.FAILURE:
        reason = state  # the account's suspension: CREDIT_DEPLETED says why
    return JobSnapshot(
        ref=ref,
        account_id=account_id,
        state=state,
        status_code=cap(_str(status.get("code")), STATE_LIMIT),
        status_message=cap(_str(status.get("message")), TEXT_LIMIT),
        reason=reason,
        **fields,
    )


def _state(raw: object, kind: JobKind) -> str:
    """The short state name in `raw` (the value of the kind's `state_key`).

    Absent or "" is the kind's `absent_state` (proto3 omits the zero value). A value of
    another type reads as UNSPECIFIED where the kind has that state; a kind without one (the
    account, whose every unknown value is a suspension) cannot tell, and the answer is bad.

    Raises:
        PayloadError: `raw` is no string and the kind has no UNSPECIFIED state.
    """
    spec = kind.spec
    if raw is None or raw == "":
        return spec.absent_state
    if type(raw) is str:
        return cap(short_state(raw), STATE_LIMIT)
    if UNSPECIFIED in spec.states:
        return UNSPECIFIED
    msg = f"{spec.label} {spec.state_key} is not a string (got {type(raw).__name__})"
    raise PayloadError(msg)


def status_reason(status: Mapping[str, object]) -> str:
    """The `reason` of the first google.rpc ErrorInfo in `status.details`, or ""."""
    details = status.get("details")
    if type(details) is not list:
        return ""
    for detail in details:
        if type(detail) is dict and _str(detail.get("@type")).endswith("ErrorInfo"):
            return one_line(_str(detail.get("reason")), 80)
    return ""
