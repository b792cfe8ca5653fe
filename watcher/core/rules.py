"""The one rule engine: which messages a channel hears and which a silence mutes. Pure.

A `Subject` is what a message is about (a job's kind, id, name, state, owner...), built from a
transition, a job snapshot or a stored event's fields. A `Rule` holds criteria, one per
matchable field; `matches(rule, subject)` tests them all. `MATCHERS` is the table that says,
for each field, how to read it from a subject, how one criterion tests it, and which config
key (`[[channel]]`) and which silence field (`silence add --FLAG`, the store's column) give it.

Adding a matchable field is one `Matcher` in the table (with its `Rule` criterion and, when
the subject lacks it, its `Subject` field) and its tests.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final

from watcher.core.kinds import JobKind, meaning_of
from watcher.core.model import JobSnapshot, Transition
from watcher.core.owners import first_owner


@dataclass(frozen=True, slots=True)
class Subject:
    """What one message is about, as rules see it; "" is unknown (or not about a job).

    Attributes:
        account: the account the job belongs to (its id for now).
        kind: the job's kind (`sft`, `dpo`...).
        job_id: the job's id.
        display_name: the job's display name.
        state: the state it moved to (a transition), or is in (a notice).
        meaning: what that state means (`failure`, `active`...).
        owner: whom the job belongs to (`core.owners`: `createdBy`, or derived).
        channel: the channel the message goes to (silences match it).
    """

    account: str = ""
    kind: str = ""
    job_id: str = ""
    display_name: str = ""
    state: str = ""
    meaning: str = ""
    owner: str = ""
    channel: str = ""

    @classmethod
    def of_job(cls, job: JobSnapshot, *, channel: str = "") -> Subject:
        """A job as it stands in this snapshot."""
        return cls(
            account=job.account_id,
            kind=str(job.ref.kind),
            job_id=job.ref.job_id,
            display_name=job.display_name,
            state=job.state,
            meaning=str(job.meaning),
            owner=first_owner(job),
            channel=channel,
        )

    @classmethod
    def of_transition(cls, transition: Transition, *, channel: str = "") -> Subject:
        """The job a transition moved, in the state it moved to."""
        return cls.of_job(transition.new, channel=channel)

    @classmethod
    def of_fields(cls, fields: Mapping[str, str], *, channel: str = "") -> Subject:
        """From a stored event's fields: a transition's message fields, or a notice's
        subject fields (`notices.subject_fields`)."""
        kind = fields.get("kind", "")
        state = fields.get("job_state") or fields.get("new_state", "")
        return cls(
            account=fields.get("account_id", ""),
            kind=kind,
            job_id=fields.get("job_id", ""),
            display_name=fields.get("display_name", ""),
            state=state,
            meaning=_meaning(kind, state),
            owner=fields.get("owner") or fields.get("created_by", ""),
            channel=channel,
        )


def _meaning(kind: str, state: str) -> str:
    if not state:
        return ""
    if kind in JobKind._value2member_map_:
        return str(JobKind(kind).spec.meaning(state))
    return str(meaning_of(state))


@dataclass(frozen=True, slots=True)
class Rule:
    """Criteria on a subject, one tuple per matcher of `MATCHERS` (same names). An empty tuple
    lets every subject through; a non-empty one lets through a subject that one of its values
    matches. Every criterion must pass.

    Attributes:
        jobs: globs on the job id or display name.
        kinds: globs on the kind name (`"dpo*"`).
        owners: globs on the owner, ignoring case (`"alice@*"`); no owner matches none. A
            channel's `owners = "directory"` is every e-mail of the people directory, each a
            glob matching only itself (`channel_rule`).
        states: state names the subject must be in.
        channels: channel names (silences only).
    """

    jobs: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    owners: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()

    def any_state(self) -> Rule:
        """This rule without its states: a notice that is not a move (a condition, a
        milestone, a digest's line) is heard whatever states a channel wants moves to."""
        return dataclasses.replace(self, states=())


def glob(criterion: str, value: str) -> bool:
    """A shell-style glob, case as written."""
    return fnmatchcase(value, criterion)


def glob_any_case(criterion: str, value: str) -> bool:
    """A shell-style glob, ignoring case (e-mail addresses)."""
    return fnmatchcase(value.casefold(), criterion.casefold())


def equal(criterion: str, value: str) -> bool:
    """The same name."""
    return criterion == value


@dataclass(frozen=True, slots=True)
class Matcher:
    """One matchable field.

    Attributes:
        name: the `Rule` criterion it tests.
        read: the subject's values it is tested against ("" values never match).
        test: whether one criterion matches one value.
        config_key: the `[[channel]]` key that gives the criterion ("" for none).
        silence_field: the `Silence` field (CLI flag `--FIELD`, store column) that gives
            it, one value ("" for none).
        directory: a config value `"directory"` stands for every e-mail of the people
            directory (`[[person]]`), each a glob of only itself.
    """

    name: str
    read: Callable[[Subject], tuple[str, ...]]
    test: Callable[[str, str], bool]
    config_key: str = ""
    silence_field: str = ""
    directory: bool = False


MATCHERS: Final[tuple[Matcher, ...]] = (
    Matcher("jobs", lambda s: (s.job_id, s.display_name), glob, "jobs", "job"),
    Matcher("kinds", lambda s: (s.kind,), glob, "kinds", "kind"),
    Matcher("owners", lambda s: (s.owner,), glob_any_case, "owners", "owner", directory=True),
    Matcher("states", lambda s: (s.state,), equal, "to_states", "state"),
    Matcher("channels", lambda s: (s.channel,), equal, "", "channel"),
)


def matches(rule: Rule, subject: Subject) -> bool:
    """Whether every criterion of `rule` lets `subject` through."""
    for matcher in MATCHERS:
        criteria: tuple[str, ...] = getattr(rule, matcher.name)
        if criteria and not any(
            matcher.test(criterion, value)
            for value in matcher.read(subject)
            if value
            for criterion in criteria
        ):
            return False
    return True


#: `[[channel]] owners = "directory"`: anyone in the people directory (`[[person]]`).
DIRECTORY: Final = "directory"


def channel_rule(section: object, directory: Iterable[str] = ()) -> Rule:
    """A `[[channel]]` section's rule: each matcher reads its `config_key` attribute; where
    the matcher says so, the value `"directory"` stands for the e-mails of `directory`."""
    emails = [literal_glob(email) for email in directory]
    return Rule(
        **{
            m.name: _criteria(
                value
                for value in getattr(section, m.config_key) or ()
                for value in (emails if m.directory and value == DIRECTORY else (value,))
            )
            for m in MATCHERS
            if m.config_key
        }
    )


def literal_glob(text: str) -> str:
    """A glob that matches `text` only (`*`, `?` and `[` bracketed)."""
    return _GLOB_MAGIC.sub(r"[\1]", text)


_GLOB_MAGIC: Final = re.compile(r"([*?\[])")


def silence_rule(silence: object) -> Rule:
    """A silence's rule: each matcher reads its `silence_field` attribute ("" for none)."""
    return Rule(
        **{
            m.name: _criteria((getattr(silence, m.silence_field),))
            for m in MATCHERS
            if m.silence_field
        }
    )


def _criteria(values: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(sorted(v for v in values or () if v))
