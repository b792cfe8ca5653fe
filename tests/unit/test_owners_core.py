"""Owners and the people directory: the derivation table, the owner first seen, `{owner_mention}`
per target, `[[person]]` validation and `owners = "directory"`. Pure parts, table-tested."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from watcher import config
from watcher.cli import main
from watcher.core import decide, owners, transitions
from watcher.core.delivery import Channel, Event, OutboxEntry, Target
from watcher.core.errors import ConfigError
from watcher.core.grouping import render_entry
from watcher.core.kinds import JobKind
from watcher.core.messages import event_fields
from watcher.core.model import JobRef, JobSnapshot, Transition
from watcher.core.people import People, Person
from watcher.core.rules import Subject, channel_rule, matches
from watcher.core.text import ZERO_WIDTH_SPACE
from watcher.stores.rows import decode_snapshot, encode_snapshot

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "watcher.example.toml"
ACME = "acme"


def snap(kind: JobKind, job_id: str, state: str = "RUNNING", **fields: str) -> JobSnapshot:
    return JobSnapshot(ref=JobRef(kind, job_id), account_id=ACME, state=state, **fields)


def name(collection: str, job_id: str, account: str = ACME) -> str:
    return f"accounts/{account}/{collection}/{job_id}"


SFT_JOB = snap(JobKind.SFT, "j1", created_by="alice@example.com")
MODEL = snap(
    JobKind.MODEL,
    "m1",
    "READY",
    fine_tuning_job=name("supervisedFineTuningJobs", "j1"),
)
DEPLOYMENT = snap(JobKind.DEPLOYMENT, "d1", "READY", model=name("models", "m1"))
DEPLOYED = snap(JobKind.DEPLOYED_MODEL, "dm1", "DEPLOYED", model=name("models", "m1"))
KNOWN = {s.ref.key: s for s in (SFT_JOB, MODEL, DEPLOYMENT, DEPLOYED)}


# --- the derivation table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("snapshot", "known", "owner"),
    [
        pytest.param(SFT_JOB, {}, "alice@example.com", id="createdBy"),
        pytest.param(MODEL, KNOWN, "alice@example.com", id="model from its job"),
        pytest.param(DEPLOYMENT, KNOWN, "alice@example.com", id="deployment from its model"),
        pytest.param(DEPLOYED, KNOWN, "alice@example.com", id="deployed model from its model"),
        pytest.param(MODEL, {}, "", id="job not watched"),
        pytest.param(DEPLOYED, {MODEL.ref.key: MODEL}, "", id="chain broken"),
        pytest.param(
            replace(MODEL, fine_tuning_job=name("supervisedFineTuningJobs", "j1", "other")),
            KNOWN,
            "",
            id="another account's job",
        ),
        pytest.param(
            replace(MODEL, fine_tuning_job="accounts/acme/unknownThings/j1"),
            KNOWN,
            "",
            id="unknown collection",
        ),
        pytest.param(replace(MODEL, fine_tuning_job="j1"), KNOWN, "", id="not a name"),
        pytest.param(
            replace(DEPLOYED, model=name("models", "m2")),
            {"model/m2": replace(MODEL, ref=JobRef(JobKind.MODEL, "m2"), owner="bob@x.io")},
            "bob@x.io",
            id="parent's kept owner",
        ),
        pytest.param(snap(JobKind.DEPLOYMENT, "d2", model=""), KNOWN, "", id="no parent"),
    ],
)
def test_owner_is_created_by_else_the_parents(
    snapshot: JobSnapshot, known: dict[str, JobSnapshot], owner: str
) -> None:
    """`createdBy` where the kind has it; else the owner of the resource its field names, in its
    own account, as far as the watcher holds it; else nobody."""
    assert owner == owners.derive(snapshot, known.get)


def test_the_table_names_a_parent_field_for_every_kind_without_created_by() -> None:
    """Each kind either reads `createdBy` or has a parent field it reads from the API; the
    kinds that read `createdBy` have no parent entry."""
    # (tests/contract/test_owners_sdk.py checks the table against the SDK's models)
    for kind in JobKind:
        fields = kind.spec.fields
        parent = owners.PARENTS.get(kind)
        if kind in owners.OWNERLESS:
            assert "created_by" not in fields, kind
            assert parent is None, kind
            continue
        assert ("created_by" in fields) != (parent is not None), kind
        if parent is not None:
            assert parent in fields, kind


def test_a_cycle_of_parents_ends() -> None:
    """Parents that name each other (never from the API, but a store may hold anything) end
    after `MAX_DEPTH` steps with no owner."""
    loop = {
        "deployment/a": snap(JobKind.DEPLOYMENT, "a", model=name("deployments", "b")),
        "deployment/b": snap(JobKind.DEPLOYMENT, "b", model=name("deployments", "a")),
    }

    assert "" == owners.derive(loop["deployment/a"], loop.get)


# --- the owner first seen ---------------------------------------------------------------------

TRAINER = snap(JobKind.RLOR, "t1", created_by="bob@example.com", owner="bob@example.com")


@pytest.mark.parametrize(
    ("previous", "observed", "owner"),
    [
        pytest.param(
            TRAINER,
            replace(TRAINER, state="ARCHIVED", created_by="carol@example.com", owner=""),
            "bob@example.com",
            id="tombstone names the deleter",
        ),
        pytest.param(
            replace(TRAINER, owner=""),
            replace(TRAINER, state="ARCHIVED", created_by="carol@example.com", owner=""),
            "bob@example.com",
            id="a row stored before owners",
        ),
        pytest.param(
            TRAINER,
            replace(TRAINER, state="NOT_FOUND", created_by="", owner=""),
            "bob@example.com",
            id="404",
        ),
        pytest.param(
            None, replace(TRAINER, owner="carol@example.com"), "carol@example.com", id="first"
        ),
        pytest.param(
            replace(MODEL, owner=""),
            replace(MODEL, owner="alice@example.com"),
            "alice@example.com",
            id="derived later",
        ),
    ],
)
def test_merge_keeps_the_owner_first_seen(
    previous: JobSnapshot | None, observed: JobSnapshot, owner: str
) -> None:
    """The stored snapshot and the transition keep the first owner, whatever `createdBy` says
    later; an owner not known before is taken when it is."""
    assert owner == transitions.merge(previous, observed).owner
    moved = transitions.diff(previous, observed, at=AT)
    assert moved is None or owner == moved.new.owner


def test_decide_derives_in_one_cycle_and_keeps_the_first() -> None:
    """One poll's answers: a model derives its owner from its job answered in the same cycle
    (and a deployed model through both); a tombstoned trainer keeps its stored owner."""
    last = {TRAINER.ref.key: TRAINER}
    answers = [
        replace(DEPLOYED, owner=""),
        replace(MODEL, owner=""),
        SFT_JOB,
        replace(TRAINER, state="ARCHIVED", created_by="carol@example.com", owner=""),
    ]

    decided = decide.diff(last, answers, channels=(), now=AT)

    stored = {s.ref.key: s.owner for s in decided.snapshots}
    assert {
        "deployed-model/dm1": "alice@example.com",
        "model/m1": "alice@example.com",
        "sft/j1": "alice@example.com",
        "rlor/t1": "bob@example.com",
    } == stored
    (archived,) = [t for t in decided.transitions if t.old is not None]
    assert "bob@example.com" == event_fields(archived)["owner"]
    assert "carol@example.com" == event_fields(archived)["created_by"]


def test_the_owner_is_stored_and_an_older_row_reads_without_one() -> None:
    """The owner goes into the store's snapshot with the other fields; a row written before
    it (no `owner` key) reads back with none."""
    stored = replace(MODEL, owner="alice@example.com")
    cell = encode_snapshot(stored)
    old_cell = cell.replace('"owner": "alice@example.com", ', "").replace(
        '"fine_tuning_job": "accounts/acme/supervisedFineTuningJobs/j1", ', ""
    )

    assert stored == decode_snapshot("model/m1", cell)
    assert '"owner"' not in old_cell
    assert replace(MODEL, fine_tuning_job="") == decode_snapshot("model/m1", old_cell)


# --- {owner_mention} per target ---------------------------------------------------------------

PEOPLE = People.of(
    [
        Person("Alice@Example.com", "Alice", slack="U012ABCDEF", discord="123456789012345678"),
        Person("bob@example.com", "Bob"),
        Person("dan@example.com"),
    ]
)
TEMPLATE = "{job_id}: {owner_mention}"


def entry_for(owner: str, url_display: str, display_name: str = "") -> OutboxEntry:
    job = snap(JobKind.SFT, "j1", "COMPLETED", owner=owner, display_name=display_name)
    fields = event_fields(Transition(replace(job, state="RUNNING"), job, AT))
    event = Event("sft/j1", "RUNNING", "COMPLETED", AT, tuple(fields.items()))
    return OutboxEntry("sft/j1", "c", "k", url_display, "RUNNING", "COMPLETED", AT, event)


@pytest.mark.parametrize(
    ("owner", "url", "mention"),
    [
        pytest.param("alice@example.com", "slack://T1/B1/****", "<@U012ABCDEF>", id="slack"),
        pytest.param(
            "ALICE@example.com", "discord://1/****", "<@123456789012345678>", id="discord"
        ),
        pytest.param("alice@example.com", "mailtos://u:****@mail.example.com", "Alice", id="mail"),
        pytest.param("bob@example.com", "slack://T1/B1/****", "Bob", id="no slack id"),
        pytest.param("dan@example.com", "discord://1/****", "dan@example.com", id="no name"),
        pytest.param("carol@example.com", "slack://T1/B1/****", "carol@example.com", id="stranger"),
        pytest.param("", "slack://T1/B1/****", "", id="nobody"),
    ],
)
def test_owner_mention_is_rendered_per_target(owner: str, url: str, mention: str) -> None:
    """Slack and Discord get the mention that notifies; elsewhere the name, else the e-mail;
    an owner not in the directory is the bare owner."""
    channel = Channel("c", (Target("k", url),), title=TEMPLATE, body=TEMPLATE, people=PEOPLE)

    message = render_entry(entry_for(owner, url), channel)

    assert f"j1: {mention}" == message.title
    assert f"j1: {mention}" == message.body


def test_mentions_from_the_api_stay_defused() -> None:
    """The directory's mention is the user's own and is sent as is; a mention inside what the
    API said (an owner or a display name) is broken, so it pings no one."""
    template = "{display_name} {owner_mention}"
    channel = Channel("c", (), title=template, body=template, people=PEOPLE)
    hostile = "<!channel> <@U999>"

    ours = render_entry(entry_for("alice@example.com", "slack://x", hostile), channel)
    theirs = render_entry(entry_for("<@U999>", "slack://x"), channel)

    assert ours.title.endswith(" <@U012ABCDEF>")
    assert "<!channel>" not in ours.title
    assert "<@U999>" not in ours.title
    assert "<@U999>" not in ours.body
    assert f"<{ZERO_WIDTH_SPACE}@U999>" in theirs.title
    assert "<@U999>" not in theirs.body


# --- [[person]] and owners = "directory" ------------------------------------------------------


def settings(**top: Any) -> config.Settings:
    data: dict[str, Any] = {
        "fireworks": {"account_id": ACME},
        "channel": [{"name": "team", "urls": ["json://127.0.0.1:9/x"]}],
        **top,
    }
    return config.parse(data, {}, source="w.toml")


def problem(**top: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        settings(**top)
    message = str(caught.value)
    assert 1 == len(message.splitlines())
    return message


ALICE = {"email": "alice@example.com", "slack": "U012ABCDEF", "discord": "123456789012345678"}


@pytest.mark.parametrize(
    ("people", "message"),
    [
        pytest.param([{**ALICE, "slack": "alice"}], "person[0].slack: must be a Slack member id"),
        pytest.param([{**ALICE, "slack": "C012ABCDEF"}], "person[0].slack: must be a Slack"),
        pytest.param([{**ALICE, "discord": "12345"}], "person[0].discord: must be a Discord"),
        pytest.param([{**ALICE, "discord": 123456789012345678}], "person[0].discord: must be a"),
        pytest.param([{**ALICE, "email": "alice"}], "person[0].email: must be an e-mail"),
        pytest.param([{"name": "Alice"}], "person[0].email: required"),
        pytest.param([ALICE, {"email": "x@y.z", "teams": "a"}], "person[1].teams: unknown key"),
        pytest.param(
            [ALICE, {"email": "ALICE@example.com"}],
            "person[1].email: same e-mail as person[0]",
        ),
        pytest.param({"email": "a@b.c"}, "person: must be an array of tables: write [[person]]"),
    ],
)
def test_bad_person_is_one_line_naming_the_key(people: Any, message: str) -> None:
    """Each problem of the directory is one line naming `person[N].key`."""
    assert message in problem(person=people)


def test_a_person_is_read_whole() -> None:
    """The keys land in the settings; the example config shows each of them."""
    (person,) = settings(person=[{**ALICE, "name": "Alice"}]).people

    assert ("alice@example.com", "Alice", "U012ABCDEF", "123456789012345678") == (
        person.email,
        person.name,
        person.slack,
        person.discord,
    )
    text = EXAMPLE.read_text()
    assert [] == [k for k in type(person).model_fields if f"{k} =" not in text]


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        ({"owners": "everyone"}, 'channel[0].owners: must be an array of globs or "directory"'),
        ({"owners": "directory"}, 'channel[0].owners: "directory" but no [[person]]'),
    ],
)
def test_bad_owners_is_one_line(channel: dict[str, Any], message: str) -> None:
    """`owners` is an array of globs or the word "directory", which needs a directory."""
    data = {"name": "team", "urls": ["json://127.0.0.1:9/x"], **channel}

    assert message in problem(channel=[data])


def test_a_bad_person_exits_2_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` on a config with a bad Slack id: exit 2, one line naming the key."""
    path = tmp_path / "watcher.toml"
    path.write_text(
        '[fireworks]\naccount_id = "acme"\n\n[[person]]\nemail = "a@b.c"\nslack = "nope"\n'
    )

    code = main(["check", "-c", str(path)])

    err = capsys.readouterr().err
    assert 2 == code
    assert 1 == len(err.strip().splitlines())
    assert "person[0].slack: must be a Slack member id" in err


@pytest.mark.parametrize(
    ("owners_key", "owner", "heard"),
    [
        ("directory", "alice@example.com", True),
        ("directory", "ALICE@EXAMPLE.COM", True),
        ("directory", "b*b@example.com", True),
        ("directory", "bob@example.com", False),  # "b*b" is an address, not a glob
        ("directory", "carol@example.com", False),
        ("directory", "", False),
        (["directory", "carol@*"], "carol@example.com", True),
        (["directory", "carol@*"], "alice@example.com", True),
        (["ALICE@*"], "alice@example.com", True),
        (["ALICE@*"], "bob@example.com", False),
    ],
)
def test_owners_directory_matches_anyone_in_it(owners_key: Any, owner: str, heard: bool) -> None:
    """`owners = "directory"` lets through the owners the directory lists, any case, each
    address only itself; beside globs it adds the directory to them."""
    parsed = settings(
        person=[{"email": "Alice@Example.com"}, {"email": "b*b@example.com"}],
        channel=[{"name": "team", "urls": ["json://127.0.0.1:9/x"], "owners": owners_key}],
    )
    directory = [p.email for p in parsed.people]
    rule = channel_rule(parsed.channels[0], directory)

    assert heard == matches(rule, Subject(kind="sft", owner=owner))


def test_a_derived_owner_is_routed() -> None:
    """A channel's `owners` matches a model by the owner derived from its job (no createdBy)."""
    rule = channel_rule(settings().channels[0].model_copy(update={"owners": ("alice@*",)}))
    job = replace(MODEL, owner="alice@example.com")

    assert matches(rule, Subject.of_job(job))
    assert not matches(rule, Subject.of_job(replace(job, owner="")))
