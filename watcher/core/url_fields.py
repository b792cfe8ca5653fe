"""Channel URLs with message fields (`json://host/hook?:owner={owner}`): which fields a URL
uses, their values for one message, and the target identity those values make. Pure.

A templated URL is one target per set of values: its rows' `url_key` is the template's key
and a short hash of the values (`<key>#<hash>`), so two owners are two lanes, each with its
own pace and backoff. The rendered URL (it carries the template's secrets) is never stored:
the notifier renders it again from the template and the row's event when it sends.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from watcher.core.delivery import Channel, Event, OutboxEntry, Target
from watcher.core.messages import MESSAGE_FIELDS, OWNER_MENTION
from watcher.core.people import People, scheme_of

#: Fields from the people directory: the owner's Slack and Discord ids and name.
DIRECTORY_FIELDS: Final = ("owner_slack", "owner_discord", "owner_name")
#: Every name a URL may use.
URL_FIELDS: Final = (*MESSAGE_FIELDS, *DIRECTORY_FIELDS)
#: `{name}` in a URL (apprise URLs use no braces of their own).
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
#: Between a template's key and the hash of its values in a row's `url_key`.
SEPARATOR: Final = "#"


def placeholders(url: str) -> tuple[str, ...]:
    """The field names `url` uses, in order of first use."""
    return tuple(dict.fromkeys(_PLACEHOLDER.findall(url)))


def unknown(url: str) -> str | None:
    """The first name in `url` that is not a field (`{ownr}`), or None."""
    return next((name for name in placeholders(url) if name not in URL_FIELDS), None)


def template_key(url_key: str) -> str:
    """The configured URL's key of a row's `url_key` (itself for a plain URL)."""
    return url_key.partition(SEPARATOR)[0]


def url_values(fields: Mapping[str, str], people: People, scheme: str = "") -> dict[str, str]:
    """Every value a URL may use for a message with these event fields: the fields, and the
    owner's directory entries (empty when the owner is not in the directory).
    `{owner_mention}` is the mention the target's `scheme` understands."""
    values = {name: fields.get(name, "") for name in MESSAGE_FIELDS}
    owner = values["owner"]
    person = people.find(owner)
    values[OWNER_MENTION] = (people.mention(owner, scheme) or owner) if owner else ""
    values["owner_slack"] = person.slack if person else ""
    values["owner_discord"] = person.discord if person else ""
    values["owner_name"] = person.name if person else ""
    return values


#: Characters a value keeps in a URL: RFC 3986's unreserved ones, and `@` (e-mail addresses).
_KEPT: Final = frozenset(string.ascii_letters + string.digits + "-._~@")


def quote(value: str) -> str:
    """A value as it goes into a URL: percent-encoded (UTF-8) but for `_KEPT` (as
    `urllib.parse.quote(value, safe="@")`; the core does no URL handling of its own)."""
    return "".join(
        char if char in _KEPT else "".join(f"%{byte:02X}" for byte in char.encode())
        for char in value
    )


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with each `{name}` replaced by its URL-quoted value."""
    return _PLACEHOLDER.sub(lambda m: quote(values.get(m[1], "")), template)


def row_key(key: str, used: Mapping[str, str]) -> str:
    """The row `url_key` of the templated target `key` for the values of its fields: the
    same values give the same key, another owner another."""
    digest = hashlib.sha256(json.dumps(dict(used), sort_keys=True).encode()).hexdigest()[:12]
    return f"{key}{SEPARATOR}{digest}"


@dataclass(frozen=True, slots=True)
class Resolved:
    """A target as one message's row names it: its key and display form, and why it is
    skipped ("" when it is sent)."""

    url_key: str
    url_display: str
    skipped: str = ""

    @classmethod
    def of(cls, target: Target, fields: Mapping[str, str], people: People) -> Resolved:
        """`target` for a message with event `fields`: a plain target as it is; a templated
        one with its values (skipped when one is empty)."""
        if not target.fields:
            return cls(target.url_key, target.url_display)
        values = url_values(fields, people, scheme_of(target.url_display))
        used = {name: values.get(name, "") for name in target.fields}
        display = _PLACEHOLDER.sub(
            lambda m: quote(used[m[1]]) if m[1] in used else m[0], target.url_display
        )
        empty = [name for name in target.fields if not used[name]]
        key = row_key(target.url_key, used)
        if empty:
            why = ", ".join(f"{{{name}}}" for name in empty)
            return cls(key, display, f"skipped: {why} empty for this message")
        return cls(key, display)


def channel_rows(
    channel: Channel,
    event: Event,
    *,
    job_key: str,
    old_state: str,
    new_state: str,
    created_at: datetime,
) -> list[OutboxEntry]:
    """The outbox rows of `event` for every URL of `channel`: a templated URL's with the
    event's values, or skipped (transitions and notices alike)."""
    fields = event.field_map()
    return [
        OutboxEntry(
            job_key=job_key,
            channel=channel.name,
            url_key=to.url_key,
            url_display=to.url_display,
            old_state=old_state,
            new_state=new_state,
            created_at=created_at,
            event=event,
            skipped=to.skipped,
        )
        for to in (Resolved.of(target, fields, channel.people) for target in channel.targets)
    ]
