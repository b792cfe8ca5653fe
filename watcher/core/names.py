"""Resource names and ids: what makes one job one job. Pure functions, no I/O.

A job's identity is its whole resource name, `accounts/{account}/{collection}/{id}`, taken
exactly as written: nothing is trimmed, and no segment is guessed. A name that names another
account or collection, or whose id is not one path segment of safe characters, is not a job of
this watcher: normalising it instead (the last segment, stripped) let `…/v0`, `…/v0 ` and
`accounts/OTHER/…/v0` all become job `v0`, and a job named `.` sent its GET to the collection.

The id rule: a letter or digit, then letters, digits, `.`, `_` and `-`, at most
`MAX_ID_LENGTH` characters. The ids people choose are documented narrower (1-63 of `a-z`,
`0-9`, `-`); ids the API makes itself are not documented, so the rule is the widest one that is
still exactly one safe path segment (never `.` or `..`, no space, slash, `%` or control
character), and the one `[[watch]].jobs` is checked by.
"""

from __future__ import annotations

import re
from typing import Final

from watcher.core.errors import PayloadError
from watcher.core.kinds import JobKind

#: Twice the documented 63: room for ids the API composes (a deployed model's id holds its
#: model's), and still a bound on what a name may cost in logs and in the store.
MAX_ID_LENGTH: Final = 128
#: How much of a rejected name a log line shows.
SHOWN_NAME_LENGTH: Final = 80
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
ID_RULE: Final = (
    f"a letter or digit, then up to {MAX_ID_LENGTH - 1} letters, digits, '.', '_' or '-'"
)


def is_valid_id(value: str) -> bool:
    """Whether `value` is a well-formed resource id (see the module docstring)."""
    return len(value) <= MAX_ID_LENGTH and _ID.fullmatch(value) is not None


def name_problem(name: object, *, kind: JobKind, account_id: str) -> str | None:
    """What is wrong with `name` as the resource name of a `kind` job of `account_id`, or None.

    The answer is a short phrase naming no part of the value (the caller shows it, bounded).
    """
    if name is None or name == "":
        return "has no name"
    if type(name) is not str:
        return f"has a name that is not a string ({type(name).__name__})"
    prefix = kind.spec.name_prefix(account_id)
    # Checked before any splitting: a 100 MB name costs one comparison, not a scan.
    if len(name) > len(prefix) + MAX_ID_LENGTH:
        return f"has a name of {len(name)} characters (an id has at most {MAX_ID_LENGTH})"
    if name.startswith(prefix):
        job_id = name[len(prefix) :]
        return None if is_valid_id(job_id) else f"has an id that is not {ID_RULE}"
    if not kind.spec.listable:  # the account: `accounts/{id}`, and the prefix did not match
        return f"has a name that is not {prefix}ID"
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "accounts":
        return f"has a name that is not accounts/{account_id}/{kind.collection}/ID"
    if parts[1] != account_id:
        return "names another account"
    return f"names another collection than {kind.collection}"


def job_id_of(name: object, *, kind: JobKind, account_id: str) -> str:
    """The id in `name`, a valid resource name of a `kind` job of `account_id`.

    Raises:
        PayloadError: `name` is not one (the message shows it escaped and cut short).
    """
    problem = name_problem(name, kind=kind, account_id=account_id)
    if problem is not None:
        shown = f" {shown_name(name)}" if type(name) is str and name else ""
        msg = f"{kind} job{shown} {problem}"
        raise PayloadError(msg)
    assert type(name) is str  # name_problem returned None
    return name.rpartition("/")[2]


def shown_name(name: str, limit: int = SHOWN_NAME_LENGTH) -> str:
    """`name` quoted for a log line: cut to `limit` characters, then every control, non-ASCII
    and quote character escaped, so an API-made name cannot forge lines or drive a terminal."""
    cut = name if len(name) <= limit else name[:limit] + "..."
    escaped = cut.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped}"'
