"""Who a resource belongs to: the API's `createdBy` where the kind has one, else the owner of
the resource it comes from, else nobody. Pure data and pure functions.

`PARENTS` is the one table: for a kind without `createdBy`, the snapshot field that names the
resource whose owner it takes (a model's `fineTuningJob`, a deployment's `baseModel`, a
deployed model's `model`). A resource name maps to a watched key through its collection
(`accounts/acme/supervisedFineTuningJobs/j1` -> `sft/j1`), in the snapshot's own account only.

The owner first seen is kept (`first_owner`): the API reports the *deleter* as `createdBy`
on a tombstoned trainer job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Final

from watcher.core.kinds import KINDS, JobKind
from watcher.core.model import JobRef, JobSnapshot

#: Kind -> the snapshot field naming the resource whose owner it takes. A kind that reads
#: `createdBy` needs no entry; a kind with neither has no owner.
PARENTS: Final[Mapping[JobKind, str]] = MappingProxyType(
    {
        JobKind.MODEL: "fine_tuning_job",
        JobKind.DEPLOYMENT: "model",
        JobKind.DEPLOYED_MODEL: "model",
    }
)
#: Kinds that belong to no one: the account is every owner's own.
OWNERLESS: Final = frozenset({JobKind.ACCOUNT})
#: How far a chain of parents is followed (a deployed model -> its model -> its job).
MAX_DEPTH: Final = 4

_COLLECTIONS: Final = {spec.collection: kind for kind, spec in KINDS.items()}
_NAME: Final = re.compile(r"accounts/([^/]+)/([^/]+)/([^/]+)")


def watched_key(name: str, account_id: str) -> str | None:
    """The key (`sft/j1`) of the resource `name` (`accounts/acme/supervisedFineTuningJobs/j1`)
    names in `account_id`; None for another account's, a collection the watcher does not
    know, or not a resource name."""
    match = _NAME.fullmatch(name)
    if match is None or match[1] != account_id or match[2] not in _COLLECTIONS:
        return None
    return JobRef(_COLLECTIONS[match[2]], match[3]).key


def first_owner(snapshot: JobSnapshot | None) -> str:
    """The owner a stored snapshot already has ("" for none); a row stored before owners
    were kept has its `createdBy` as first seen."""
    if snapshot is None:
        return ""
    return snapshot.owner or snapshot.created_by


#: The snapshot the watcher holds under a key, or None.
Lookup = Callable[[str], JobSnapshot | None]


def derive(snapshot: JobSnapshot, known: Lookup, depth: int = MAX_DEPTH) -> str:
    """The owner of `snapshot`: its own (kept or `createdBy`), else its parent's as `known`
    finds it by key, followed up to `depth` parents; "" when none is known."""
    if snapshot.ref.kind in OWNERLESS:
        return ""
    own = first_owner(snapshot)
    field = PARENTS.get(snapshot.ref.kind)
    if own or field is None or depth <= 0:
        return own
    key = watched_key(getattr(snapshot, field), snapshot.account_id)
    parent = known(key) if key is not None else None
    return derive(parent, known, depth - 1) if parent is not None else ""


def owned(previous: JobSnapshot | None, observed: JobSnapshot, known: Lookup) -> JobSnapshot:
    """`observed` with its owner: the one `previous` had, else derived now."""
    owner = first_owner(previous) or derive(observed, known)
    return observed if owner == observed.owner else replace(observed, owner=owner)
