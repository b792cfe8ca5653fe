"""The people directory (`[[person]]`): who an owner is, and how each service mentions them.

`MENTIONS` is the table: a target's URL scheme -> the person's id for that service and how
the service writes a mention that notifies. Elsewhere a mention is the person's name, else
their e-mail. Pure data and pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True, slots=True)
class Person:
    """One `[[person]]`: `email` is matched against owners, ignoring case; `slack` is a member
    id (`U012ABCDEF`), `discord` a user id (a snowflake); "" for none."""

    email: str
    name: str = ""
    slack: str = ""
    discord: str = ""


@dataclass(frozen=True, slots=True)
class Mention:
    """How one service writes a mention: the `Person` field holding the id, and the form."""

    id_field: str
    form: str


#: Scheme (as apprise writes a target's URL) -> its mention. Slack reads `<@U…>` in the
#: text; apprise's Discord plugin moves `<@id>` of the body into `content` with
#: `allow_mentions` (in embed mode) or sends it in `content` (else): both notify.
MENTIONS: Final[Mapping[str, Mention]] = MappingProxyType(
    {
        "slack": Mention("slack", "<@{}>"),
        "discord": Mention("discord", "<@{}>"),
    }
)


def scheme_of(url_display: str) -> str:
    """A target's scheme from its URL's display form (`slack://T1/B1/****` -> `slack`)."""
    scheme, sep, _ = url_display.partition("://")
    return scheme.lower() if sep else ""


@dataclass(frozen=True, slots=True)
class People:
    """The directory, by e-mail folded to lower case."""

    by_email: Mapping[str, Person] = field(default_factory=dict)

    @classmethod
    def of(cls, persons: Iterable[Person]) -> People:
        """A directory of `persons` (the first of two with one e-mail wins; config refuses it)."""
        found: dict[str, Person] = {}
        for person in persons:
            found.setdefault(person.email.casefold(), person)
        return cls(MappingProxyType(found))

    @property
    def emails(self) -> tuple[str, ...]:
        """Every e-mail of the directory, as written."""
        return tuple(person.email for person in self.by_email.values())

    def find(self, owner: str) -> Person | None:
        """The person whose e-mail is `owner` (any case), or None."""
        return self.by_email.get(owner.strip().casefold()) if owner else None

    def mention(self, owner: str, scheme: str) -> str | None:
        """How a target of `scheme` mentions `owner`: the service's mention where the person
        has an id for it, else their name, else their e-mail; None when `owner` is not in the
        directory (the bare owner is then API text, defused like any)."""
        person = self.find(owner)
        if person is None:
            return None
        how = MENTIONS.get(scheme)
        ident = getattr(person, how.id_field) if how is not None else ""
        if how is not None and ident:
            return how.form.format(ident)
        return person.name or person.email
