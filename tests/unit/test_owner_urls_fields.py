"""Channel URLs with message fields (`core.url_fields`) and their targets in the notifier."""

from __future__ import annotations

from datetime import UTC, datetime

from watcher.core.conditions import Condition, ConditionName
from watcher.core.decide import diff
from watcher.core.delivery import Channel, Target
from watcher.core.kinds import JobKind
from watcher.core.model import JobRef, JobSnapshot
from watcher.core.notices import api_condition, condition_notice, notice_entries
from watcher.core.people import People, Person
from watcher.core.url_fields import Resolved, placeholders, render, template_key, unknown
from watcher.notify.apprise_sender import AppriseNotifier

PEOPLE = People.of([Person("alice@example.com", "Alice", slack="U012ABCDEF")])
TEMPLATE = Target("k" * 24, "json://h/hook?:owner={owner}", ("owner",))


def test_placeholders_and_unknown_names() -> None:
    url = "json://h/{owner_name}?:owner={owner}&:again={owner}"
    assert placeholders(url) == ("owner_name", "owner")
    assert unknown(url) is None
    assert unknown("json://h/{ownr}") == "ownr"
    assert placeholders("json://h/hook") == ()


def test_values_are_quoted_where_they_go() -> None:
    assert render(
        "json://h/{owner_name}?to={owner}", {"owner_name": "A B/c", "owner": "a+b@x.io"}
    ) == ("json://h/A%20B%2Fc?to=a%2Bb@x.io")


def test_same_values_same_key_other_owner_other_key() -> None:
    alice = Resolved.of(TEMPLATE, {"owner": "alice@example.com", "job_id": "1"}, PEOPLE)
    again = Resolved.of(TEMPLATE, {"owner": "alice@example.com", "job_id": "2"}, PEOPLE)
    bob = Resolved.of(TEMPLATE, {"owner": "bob@example.com"}, PEOPLE)
    assert alice.url_key == again.url_key != bob.url_key
    assert template_key(alice.url_key) == template_key(bob.url_key) == TEMPLATE.url_key
    assert not alice.skipped
    assert not bob.skipped
    assert "alice%40example.com" in alice.url_display or "alice@example.com" in alice.url_display


def test_an_empty_field_is_skipped() -> None:
    nobody = Resolved.of(TEMPLATE, {"owner": ""}, PEOPLE)
    assert nobody.skipped == "skipped: {owner} empty for this message"
    by_slack = Target("s" * 24, "json://h/{owner_slack}", ("owner_slack",))
    assert not Resolved.of(by_slack, {"owner": "alice@example.com"}, PEOPLE).skipped
    assert Resolved.of(by_slack, {"owner": "bob@example.com"}, PEOPLE).skipped


def test_plain_target_is_unchanged() -> None:
    plain = Target("p" * 24, "json://h/hook")
    assert Resolved.of(plain, {"owner": ""}, PEOPLE) == Resolved(plain.url_key, plain.url_display)


def test_a_templated_url_keeps_its_password_secret() -> None:
    url = "json://user:s3cret@127.0.0.1:9/{owner}"
    notifier = AppriseNotifier([("channel[0].urls[0]", url)])
    target = notifier.target(url)
    assert target.fields == ("owner",)
    assert "s3cret" not in target.url_display
    assert "s3cret" in notifier.secrets()
    resolved = Resolved.of(target, {"owner": "alice@example.com"}, PEOPLE)
    assert "s3cret" not in resolved.url_display + resolved.url_key


NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OWNED = Channel("owners", (TEMPLATE, Target("p" * 24, "json://plain")), people=PEOPLE)


def snap(job_id: str, state: str, created_by: str) -> JobSnapshot:
    return JobSnapshot(JobRef(JobKind.SFT, job_id), "acme", state, created_by=created_by)


def test_a_decision_makes_a_row_per_owner_and_skips_the_ownerless() -> None:
    """Two owners: two keys of one template; no owner: a skipped row; a plain URL as ever."""
    last = {
        snap(j, "RUNNING", c).ref.key: snap(j, "RUNNING", c)
        for j, c in (("a", "alice@example.com"), ("b", "bob@example.com"), ("n", ""))
    }
    observed = [snap(s.ref.job_id, "COMPLETED", s.created_by) for s in last.values()]
    rows = diff(last, observed, channels=[OWNED], now=NOW).entries
    templated = {e.job_key: e for e in rows if e.url_key.startswith(TEMPLATE.url_key)}
    plain = [e for e in rows if e.url_key == "p" * 24]
    assert len({e.url_key for e in templated.values()}) == 3
    assert {template_key(e.url_key) for e in templated.values()} == {TEMPLATE.url_key}
    assert [e.job_key for e in templated.values() if e.skipped] == ["sft/n"]
    assert not any(e.skipped for e in plain)
    assert len(plain) == 3


def test_a_notice_about_a_job_takes_its_owner_and_the_api_down_one_is_skipped() -> None:
    """A condition about alice's job reaches her target; the watcher's own trouble has no
    owner: a templated target records it as skipped (a plain one still hears it)."""
    job = snap("a", "RUNNING", "alice@example.com")
    job = JobSnapshot(job.ref, "acme", "RUNNING", created_by=job.created_by, owner=job.created_by)
    stalled = Condition(job.ref.key, ConditionName.STALLED, NOW, "no progress")
    down = api_condition(detail="503", opened_at=NOW)
    for notice, skipped in (
        (condition_notice(stalled, job), False),
        (condition_notice(down, None), True),
    ):
        event = notice.event(NOW)
        rows = notice_entries([OWNED], notice, event, now=NOW)
        by_template = {template_key(e.url_key): e for e in rows}
        assert bool(by_template[TEMPLATE.url_key].skipped) is skipped
        assert not by_template["p" * 24].skipped
