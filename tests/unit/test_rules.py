"""The one rule engine (`watcher.core.rules`): the matcher table, the subjects it reads, how
the config and silences map onto it, and every kind of message going through it. Pure."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from watcher import config
from watcher.core import digest, progress, reminders
from watcher.core.conditions import Condition, ConditionName, Since
from watcher.core.decide import outbox_entries, transition_event
from watcher.core.delivery import Channel, ChannelPolicy, Event, Target
from watcher.core.errors import ConfigError
from watcher.core.model import JobKind, JobRef, JobSnapshot, Transition
from watcher.core.notices import condition_notice, hears, notice_entries, subject_fields
from watcher.core.rules import MATCHERS, Rule, Subject, channel_rule, matches
from watcher.core.silences import Silence, silencing

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
URL = (Target("k", "json://x"),)


def job(
    job_id: str, kind: JobKind = JobKind.DPO, *, owner: str = "", state: str = "RUNNING"
) -> JobSnapshot:
    return JobSnapshot(
        ref=JobRef(kind, job_id),
        account_id="acme",
        state=state,
        display_name=f"Run {job_id}",
        created_by=owner,
        progress="10",
    )


ALICE_DPO = job("a-dpo", owner="alice@example.com")
BOB_DPO = job("b-dpo", owner="bob@example.com")
ALICE_SFT = job("a-sft", JobKind.SFT, owner="Alice@Example.COM")
NOBODY_SFT = job("n-sft", JobKind.SFT)


# --- the table ----------------------------------------------------------------------------


def test_the_table_and_the_rule_name_the_same_criteria() -> None:
    """Every criterion of a `Rule` has one matcher, and every matcher a criterion: a
    criterion the table does not know would be silently ignored."""
    names = [m.name for m in MATCHERS]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(Rule))
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("rule", "subject", "expected"),
    [
        pytest.param(Rule(), Subject(), True, id="no criteria: everything"),
        pytest.param(Rule(jobs=("prod-*",)), Subject(job_id="prod-1"), True, id="jobs: id"),
        pytest.param(
            Rule(jobs=("prod-*",)),
            Subject(job_id="x", display_name="prod-big"),
            True,
            id="jobs: display name",
        ),
        pytest.param(Rule(jobs=("Prod-*",)), Subject(job_id="prod-1"), False, id="jobs: case"),
        pytest.param(Rule(jobs=("*",)), Subject(), False, id="jobs: no name matches nothing"),
        pytest.param(Rule(kinds=("dpo",)), Subject(kind="dpo"), True, id="kinds: name"),
        pytest.param(Rule(kinds=("dpo",)), Subject(kind="sft"), False, id="kinds: miss"),
        pytest.param(Rule(kinds=("d*",)), Subject(kind="deployment"), True, id="kinds: glob"),
        pytest.param(Rule(kinds=("sft", "dpo*")), Subject(kind="dpo"), True, id="kinds: any glob"),
        pytest.param(Rule(kinds=("dpo",)), Subject(), False, id="kinds: no kind"),
        pytest.param(
            Rule(owners=("alice@*",)), Subject(owner="alice@example.com"), True, id="owners"
        ),
        pytest.param(
            Rule(owners=("alice@*",)),
            Subject(owner="ALICE@Example.com"),
            True,
            id="owners: any case",
        ),
        pytest.param(
            Rule(owners=("ALICE@*",)),
            Subject(owner="alice@example.com"),
            True,
            id="owners: glob in any case",
        ),
        pytest.param(
            Rule(owners=("alice@*",)), Subject(owner="bob@example.com"), False, id="owners: miss"
        ),
        pytest.param(Rule(owners=("*",)), Subject(owner=""), False, id="owners: none matches no"),
        pytest.param(Rule(states=("FAILED",)), Subject(state="FAILED"), True, id="states"),
        pytest.param(Rule(states=("FAILED",)), Subject(state="FAIL*"), False, id="states: exact"),
        pytest.param(Rule(channels=("ops",)), Subject(channel="ops"), True, id="channels"),
        pytest.param(Rule(channels=("ops",)), Subject(channel="dev"), False, id="channels: miss"),
        pytest.param(
            Rule(kinds=("dpo",), owners=("alice@*",)),
            Subject(kind="dpo", owner="bob@x"),
            False,
            id="every criterion must pass",
        ),
    ],
)
def test_matches(rule: Rule, subject: Subject, expected: bool) -> None:
    """Each matcher of the table: globs on id or name, kinds and owners; names for states and
    channels; an empty criterion lets everything through."""
    assert expected == matches(rule, subject)


def test_subjects_from_a_job_a_transition_and_stored_fields_agree() -> None:
    """A job, its transition and the transition's stored event give the same subject, owner
    (the API's `createdBy`) and meaning included; a notice's subject fields too."""
    moved = Transition(old=dataclasses.replace(ALICE_DPO), new=ALICE_DPO, observed_at=NOW)
    failed = dataclasses.replace(ALICE_DPO, state="FAILED")

    from_job = Subject.of_job(ALICE_DPO)
    assert (
        Subject(
            account="acme",
            kind="dpo",
            job_id="a-dpo",
            display_name="Run a-dpo",
            state="RUNNING",
            meaning="active",
            owner="alice@example.com",
        )
        == from_job
    )
    assert from_job == Subject.of_transition(moved)
    assert from_job == Subject.of_fields(transition_event(moved).field_map())
    assert Subject.of_job(failed, channel="ops") == Subject.of_fields(
        dict(subject_fields(failed, failed.ref.key)), channel="ops"
    )
    assert "failure" == Subject.of_job(failed).meaning


# --- the config ---------------------------------------------------------------------------


def parse_channel(**keys: Any) -> config.ChannelSettings:
    data = {
        "fireworks": {"account_id": "acme"},
        "channel": [{"name": "team", "urls": ["json://127.0.0.1:9/x"], **keys}],
    }
    return config.parse(data, {}).channels[0]


def test_the_channel_keys_map_onto_the_rule_through_the_table() -> None:
    """`jobs`, `kinds`, `owners` and `to_states` land in the channel's rule."""
    channel = parse_channel(
        jobs=["prod-*"],
        kinds=["SFT", "dpo*", "Batch_Inference"],
        owners=["alice@*"],
        to_states=["failed"],
    )

    assert Rule(
        jobs=("prod-*",),
        kinds=("batch-inference", "dpo*", "sft"),
        owners=("alice@*",),
        states=("FAILED",),
    ) == channel_rule(channel)
    assert Rule() == channel_rule(parse_channel())


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        pytest.param(
            {"kinds": ["sft", "sfx"]},
            "channel[0].kinds[1]: matches no job kind (dpo, sft,",
            id="unknown kind",
        ),
        pytest.param({"kinds": ["zz*"]}, "channel[0].kinds[0]: matches no job kind", id="glob"),
        pytest.param({"kinds": "sft"}, "channel[0].kinds: must be an array", id="not a list"),
        pytest.param({"kinds": [""]}, "channel[0].kinds[0]: matches no job kind", id="empty"),
        pytest.param({"owners": [" "]}, "channel[0].owners[0]: must not be empty", id="owner"),
        pytest.param({"owners": "a@b"}, "channel[0].owners: must be an array", id="owners"),
    ],
)
def test_bad_kinds_and_owners_are_one_line_naming_the_key(
    keys: dict[str, Any], message: str
) -> None:
    """A typo in `kinds` or `owners` is one line naming the key and the value."""
    with pytest.raises(ConfigError) as caught:
        parse_channel(**keys)

    assert 1 == len(str(caught.value).splitlines())
    assert message in str(caught.value)
    if keys.get("kinds") == ["sft", "sfx"]:
        assert "'sfx'" in str(caught.value)


# --- every kind of message goes through it --------------------------------------------------

DPO_ONLY = Channel("dpo", URL, Rule(kinds=("dpo",)), policy=ChannelPolicy(repeat_interval=3600))
ALICE = Channel("alice", URL, Rule(owners=("alice@*",)), policy=ChannelPolicy(repeat_interval=3600))
CHANNELS = (DPO_ONLY, ALICE)
EVERY_JOB = (ALICE_DPO, BOB_DPO, ALICE_SFT, NOBODY_SFT)

#: Who hears what: the dpo channel the two DPO jobs, alice's channel her two jobs.
HEARD = {"dpo": {"a-dpo", "b-dpo"}, "alice": {"a-dpo", "a-sft"}}


def heard(pairs: list[tuple[str, str]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {c.name: set() for c in CHANNELS}
    for channel, job_id in pairs:
        found[channel].add(job_id)
    return found


def test_transitions_go_through_the_rule() -> None:
    """A move is heard by the channels whose kinds and owners match."""
    pairs = []
    for snapshot in EVERY_JOB:
        moved = Transition(dataclasses.replace(snapshot, state="PENDING"), snapshot, NOW)
        pairs += [
            (e.channel, snapshot.ref.job_id)
            for e in outbox_entries(CHANNELS, moved, transition_event(moved))
        ]

    assert HEARD == heard(pairs)


def test_conditions_go_through_the_rule_and_the_watchers_own_trouble_to_all() -> None:
    """A stalled job is heard as its moves are; the API down goes to every channel."""
    pairs = []
    for snapshot in EVERY_JOB:
        stalled = Condition(snapshot.ref.key, ConditionName.STALLED, NOW, "no progress")
        notice = condition_notice(stalled, snapshot)
        event = notice.event(NOW)
        pairs += [
            (e.channel, snapshot.ref.job_id)
            for e in notice_entries(CHANNELS, notice, event, now=NOW)
        ]
    api = condition_notice(Condition("api", ConditionName.API_DOWN, NOW, "refused"), None)

    assert HEARD == heard(pairs)
    assert all(hears(channel, api) for channel in CHANNELS)


def test_a_condition_is_heard_whatever_states_the_channel_wants_moves_to() -> None:
    """`to_states` filters moves; a condition is not one."""
    outcomes = Channel("outcomes", URL, Rule(states=("COMPLETED",), kinds=("dpo",)))
    stalled = condition_notice(
        Condition(ALICE_DPO.ref.key, ConditionName.STALLED, NOW, "no progress"), ALICE_DPO
    )
    bob = condition_notice(
        Condition(ALICE_SFT.ref.key, ConditionName.STALLED, NOW, "no progress"), ALICE_SFT
    )

    assert (True, False) == (hears(outcomes, stalled), hears(outcomes, bob))


def test_reminders_go_through_the_rule() -> None:
    """A job left FAILED is reminded to the channels that heard it fail, and no other."""
    failed = {j.ref.key: dataclasses.replace(j, state="FAILED") for j in EVERY_JOB}
    began = NOW - timedelta(hours=2)
    since = {key: Since(began, began, entered=True) for key in failed}
    items = reminders.remindables(failed, since, [])

    plan = reminders.plan_reminders(
        items, CHANNELS, {}, now=NOW, silenced=lambda _channel, _item: False
    )

    pairs = [(next(iter(n.channels or ())), n.job_key.partition("/")[2]) for n in plan.notices]
    assert HEARD == heard(pairs)


def test_milestones_go_through_the_rule() -> None:
    """Progress milestones reach only the channels whose kinds and owners match."""
    every_25 = ChannelPolicy(progress_every=25)
    channels = [dataclasses.replace(c, policy=every_25) for c in CHANNELS]
    pairs = []
    for snapshot in (ALICE_SFT, dataclasses.replace(NOBODY_SFT, created_by="bob@x")):
        later = dataclasses.replace(snapshot, progress="30")
        found = progress.milestones(snapshot, later, Since(NOW, NOW), channels, now=NOW)
        pairs += [(name, snapshot.ref.job_id) for n in found for name in n.channels or ()]

    assert {"dpo": set(), "alice": {"a-sft"}} == heard(pairs)


def test_digests_go_through_the_rule() -> None:
    """A digest lists, per channel, the outcomes, active jobs and conditions its rule lets
    through."""
    period = digest.Period(NOW - timedelta(days=1), NOW, "UTC", hourly=False)
    done = [
        transition_event(Transition(j, dataclasses.replace(j, state="COMPLETED"), NOW))
        for j in (ALICE_DPO, NOBODY_SFT)
    ]
    stalled = [Condition(BOB_DPO.ref.key, ConditionName.STALLED, NOW, "no progress")]
    jobs = {j.ref.key: j for j in EVERY_JOB}
    bodies = {}
    for channel in CHANNELS:
        message = digest.build(
            period,
            completed=done,
            failed=[],
            running=[ALICE_SFT],
            conditions=stalled,
            channel=channel,
            jobs=jobs,
        )
        assert message is not None
        bodies[channel.name] = message.body

    assert "a-dpo" in bodies["dpo"]
    assert "b-dpo" in bodies["dpo"]
    assert "sft" not in bodies["dpo"]
    assert "a-dpo" in bodies["alice"]
    assert "a-sft" in bodies["alice"]
    assert "b-dpo" not in bodies["alice"]
    assert "n-sft" not in bodies["alice"]


# --- silences -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("silence", "muted"),
    [
        pytest.param(Silence(1, "*", owner="alice@*"), {"a-dpo", "a-sft"}, id="owner"),
        pytest.param(Silence(1, "*", kind="sft"), {"a-sft", "n-sft"}, id="kind"),
        pytest.param(Silence(1, "*", kind="s*"), {"a-sft", "n-sft"}, id="kind glob"),
        pytest.param(Silence(1, "*", kind="dpo", owner="BOB@*"), {"b-dpo"}, id="kind and owner"),
        pytest.param(Silence(1, "a-*"), {"a-dpo", "a-sft"}, id="job"),
        pytest.param(Silence(1, "*", owner="*", channel="ops"), set(), id="other channel"),
    ],
)
def test_silences_go_through_the_rule(silence: Silence, muted: set[str]) -> None:
    """A silence's job, kind and owner globs (and its channel) match through the table."""
    active = dataclasses.replace(silence, created_at=NOW, ends_at=NOW + timedelta(hours=1))
    found = set()
    for snapshot in EVERY_JOB:
        moved = Transition(dataclasses.replace(snapshot, state="PENDING"), snapshot, NOW)
        subject = Subject.of_fields(transition_event(moved).field_map(), channel="team")
        if silencing([active], subject, NOW) is not None:
            found.add(snapshot.ref.job_id)

    assert muted == found


def test_an_event_stored_before_owners_matches_no_owner_silence() -> None:
    """An event of an older version has no owner field: an owner glob does not mute it."""
    old = Event("dpo/x", "RUNNING", "FAILED", NOW, (("job_id", "x"), ("kind", "dpo")))
    silence = Silence(1, "*", owner="*", created_at=NOW, ends_at=NOW + timedelta(hours=1))

    assert silencing([silence], Subject.of_fields(old.field_map()), NOW) is None
