"""The digest planner and the digest's content: pure, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from watcher.core import digest
from watcher.core.conditions import Condition, ConditionName
from watcher.core.delivery import Channel, ChannelPolicy, Event
from watcher.core.messages import BODY_LIMIT, TITLE_LIMIT
from watcher.core.model import JobKind, JobRef, JobSnapshot
from watcher.core.notices import DIGEST, DIGEST_STATE
from watcher.core.rules import Rule
from watcher.core.text import ZERO_WIDTH_SPACE

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- period_at -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "tz", "now", "start", "end", "hours"),
    [
        pytest.param(
            "hourly", UTC, "2026-12-02T10:00", "2026-12-02T09:00+00:00", "2026-12-02T10:00+00:00",
            1, id="hourly at the hour",
        ),
        pytest.param(
            "hourly", UTC, "2026-12-02T10:59:59", "2026-12-02T09:00+00:00",
            "2026-12-02T10:00+00:00", 1, id="hourly within the hour",
        ),
        pytest.param(
            "hourly", UTC, "2026-12-02T09:59:59.999", "2026-12-02T08:00+00:00",
            "2026-12-02T09:00+00:00", 1, id="hourly just before the hour",
        ),
        pytest.param(
            "hourly", KOLKATA, "2026-12-02T04:40", "2026-12-02T09:00+05:30",
            "2026-12-02T10:00+05:30", 1, id="hourly on local hours (+05:30)",
        ),
        pytest.param(
            "hourly", PARIS, "2026-03-29T01:30", "2026-03-29T01:00+01:00",
            "2026-03-29T03:00+02:00", 1, id="hourly over the spring gap",
        ),
        pytest.param(
            "hourly", PARIS, "2026-10-25T00:30", "2026-10-25T01:00+02:00",
            "2026-10-25T02:00+02:00", 1, id="hourly to the first 02:00 of autumn",
        ),
        pytest.param(
            "hourly", PARIS, "2026-10-25T01:30", "2026-10-25T02:00+02:00",
            "2026-10-25T02:00+01:00", 1, id="hourly between the two 02:00s",
        ),
        pytest.param(
            "hourly", PARIS, "2026-10-25T02:30", "2026-10-25T02:00+01:00",
            "2026-10-25T03:00+01:00", 1, id="hourly after the repeated hour",
        ),
        pytest.param(
            "09:00", UTC, "2026-12-02T09:00", "2026-12-01T09:00+00:00", "2026-12-02T09:00+00:00",
            24, id="daily at the time",
        ),
        pytest.param(
            "09:00", UTC, "2026-12-02T08:59", "2026-11-30T09:00+00:00", "2026-12-01T09:00+00:00",
            24, id="daily before the time: yesterday's",
        ),
        pytest.param(
            "09:00", PARIS, "2026-12-02T08:30", "2026-12-01T09:00+01:00",
            "2026-12-02T09:00+01:00", 24, id="daily in Paris, winter",
        ),
        pytest.param(
            "09:00", PARIS, "2026-03-29T07:00", "2026-03-28T09:00+01:00",
            "2026-03-29T09:00+02:00", 23, id="Paris 2026-03-29: a 23 h day",
        ),
        pytest.param(
            "09:00", PARIS, "2026-03-30T07:00", "2026-03-29T09:00+02:00",
            "2026-03-30T09:00+02:00", 24, id="the day after spring",
        ),
        pytest.param(
            "09:00", PARIS, "2026-10-25T08:00", "2026-10-24T09:00+02:00",
            "2026-10-25T09:00+01:00", 25, id="Paris 2026-10-25: a 25 h day",
        ),
        pytest.param(
            "09:00", PARIS, "2026-10-25T07:59", "2026-10-23T09:00+02:00",
            "2026-10-24T09:00+02:00", 24, id="autumn day, before its 09:00 (CET)",
        ),
        pytest.param(
            "02:30", PARIS, "2026-03-29T12:00", "2026-03-28T02:30+01:00",
            "2026-03-29T03:30+02:00", 24, id="a time in the spring gap is the instant after",
        ),
        pytest.param(
            "02:30", PARIS, "2026-10-25T12:00", "2026-10-24T02:30+02:00",
            "2026-10-25T02:30+02:00", 24, id="a repeated time is its first occurrence",
        ),
        pytest.param(
            "00:00", NEW_YORK, "2026-12-02T04:59", "2026-11-30T00:00-05:00",
            "2026-12-01T00:00-05:00", 24, id="midnight west of UTC, just before it",
        ),
        pytest.param(
            "23:30", KOLKATA, "2026-12-02T18:00", "2026-12-01T23:30+05:30",
            "2026-12-02T23:30+05:30", 24, id="late evening east of UTC",
        ),
    ],
)  # fmt: skip
def test_period_at(schedule: str, tz: ZoneInfo, now: str, start: str, end: str, hours: int) -> None:
    """The latest period that has ended at or before now, in local time, DST-correct."""
    period = digest.period_at(schedule, tz, utc(now))

    assert start == period.start.isoformat(timespec="minutes")
    assert end == period.id
    assert end == period.end.isoformat(timespec="minutes")
    assert timedelta(hours=hours) == period.length
    assert (schedule == "hourly") == period.hourly
    assert period.end <= utc(now)


def test_period_id_names_the_zone() -> None:
    """The id is the end's local time with its offset; the zone name is shown beside it."""
    period = digest.period_at("09:00", PARIS, utc("2026-12-02T09:00"))

    assert "2026-12-02T09:00+01:00" == period.id
    assert "Europe/Paris" == period.zone
    assert "UTC" == digest.period_at("hourly", UTC, utc("2026-12-02T09:00")).zone


@pytest.mark.parametrize(
    ("schedule", "now"),
    [
        pytest.param("9am", utc("2026-12-02T09:00"), id="not a time"),
        pytest.param("24:00", utc("2026-12-02T09:00"), id="out of range"),
        pytest.param("hourly", datetime(2026, 12, 2, 9), id="naive now"),
    ],
)
def test_period_at_refuses(schedule: str, now: datetime) -> None:
    """A schedule that is not one, or a time without a zone, is a ValueError."""
    with pytest.raises(ValueError):  # noqa: PT011 (the messages are durations' own)
        digest.period_at(schedule, UTC, now)


# -- due / advance ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "tz", "now", "last", "send", "mark"),
    [
        pytest.param(
            "09:00", UTC, "2026-12-02T10:30", None, None, "2026-12-02T09:00+00:00",
            id="first start: today's period is the baseline, not sent",
        ),
        pytest.param(
            "09:00", UTC, "2026-12-02T10:30", "2026-12-02T09:00+00:00", None, None,
            id="sent already",
        ),
        pytest.param(
            "09:00", UTC, "2026-12-03T09:00", "2026-12-02T09:00+00:00",
            "2026-12-03T09:00+00:00", "2026-12-03T09:00+00:00", id="the next day at 09:00",
        ),
        pytest.param(
            "09:00", UTC, "2026-12-05T12:00", "2026-12-02T09:00+00:00",
            "2026-12-05T09:00+00:00", "2026-12-05T09:00+00:00",
            id="down for days: the latest period only",
        ),
        pytest.param(
            "09:00", UTC, "2026-12-02T10:30", "2026-12-04T09:00+00:00", None, None,
            id="clock behind the last digest: wait",
        ),
        pytest.param(
            "09:00", UTC, "2026-12-02T10:30", "garbage", None, "2026-12-02T09:00+00:00",
            id="unreadable id: a new baseline",
        ),
        pytest.param(
            "09:00", UTC, "2026-12-02T10:30", "2026-12-02T09:00", None,
            "2026-12-02T09:00+00:00", id="an id without offset is unreadable",
        ),
        pytest.param(
            "09:00", PARIS, "2026-12-02T08:10", "2026-12-02T08:00+00:00", None, None,
            id="same instant in another offset (a zone change): sent already",
        ),
        pytest.param(
            "09:00", UTC, "2026-12-02T09:10", "2026-12-02T08:00+00:00",
            "2026-12-02T09:00+00:00", "2026-12-02T09:00+00:00",
            id="hourly to daily: the daily period ends later",
        ),
        pytest.param(
            "hourly", PARIS, "2026-10-25T01:30", "2026-10-25T02:00+02:00",
            "2026-10-25T02:00+01:00", "2026-10-25T02:00+01:00",
            id="the repeated 02:00 is a period of its own",
        ),
        pytest.param(
            "09:00", PARIS, "2026-03-29T07:00", "2026-03-28T09:00+01:00",
            "2026-03-29T09:00+02:00", "2026-03-29T09:00+02:00", id="the 23 h day is sent",
        ),
    ],
)  # fmt: skip
def test_advance(
    schedule: str, tz: ZoneInfo, now: str, last: str | None, send: str | None, mark: str | None
) -> None:
    """What to send now and what to store, given the last stored period id."""
    step = digest.advance(schedule, tz, utc(now), last)

    assert send == (step.send.id if step.send else None)
    assert mark == step.mark
    assert step.send == digest.due(schedule, tz, utc(now), last)


def test_a_fresh_deploy_sends_its_first_digest_the_next_day() -> None:
    """Deployed at 10:30 with digest 09:00: nothing today, one digest tomorrow at 09:00,
    then nothing until the day after, polled every 5 minutes throughout."""
    now, stored, sent = utc("2026-12-02T10:30"), None, []
    while now < utc("2026-12-04T10:00"):
        step = digest.advance("09:00", UTC, now, stored)
        if step.send is not None:
            sent.append((now.isoformat(timespec="minutes"), step.send.id))
        stored = step.mark or stored
        now += timedelta(minutes=5)

    assert [
        ("2026-12-03T09:00+00:00", "2026-12-03T09:00+00:00"),
        ("2026-12-04T09:00+00:00", "2026-12-04T09:00+00:00"),
    ] == sent


@pytest.mark.parametrize(
    ("tz", "day", "count"),
    [
        pytest.param(PARIS, "2026-03-29", 23, id="spring day: 23 hourly digests"),
        pytest.param(PARIS, "2026-10-25", 25, id="autumn day: 25 hourly digests"),
        pytest.param(UTC, "2026-10-25", 24, id="UTC: 24"),
    ],
)
def test_hourly_digests_over_a_dst_day(tz: ZoneInfo, day: str, count: int) -> None:
    """Every local hour of a day is one digest, none twice, however long the day is."""
    start = datetime.fromisoformat(f"{day}T00:00").replace(tzinfo=tz)
    end = start + timedelta(days=1)
    now, stored, sent = start.astimezone(UTC), "1970-01-01T00:00+00:00", []
    while now < end.astimezone(UTC) - timedelta(minutes=1):
        now += timedelta(minutes=1)
        step = digest.advance("hourly", tz, now, stored)
        if step.send is not None:
            sent.append(step.send.id)
        stored = step.mark or stored

    assert count == len(sent) == len(set(sent))


# -- content ---------------------------------------------------------------------------------

PERIOD = digest.period_at("09:00", UTC, utc("2026-12-02T09:30"))
TEAM = Channel("team", ())


def moved(
    job_id: str,
    old: str,
    new: str,
    at: str = "2026-12-01T14:00",
    kind: str = "dpo",
    **fields: str,
) -> Event:
    values = {"job_id": job_id, "display_name": job_id, "kind": kind} | fields
    return Event(f"{kind}/{job_id}", old, new, utc(at), tuple(values.items()))


def job(job_id: str, state: str = "RUNNING", **fields: str) -> JobSnapshot:
    return JobSnapshot(JobRef(JobKind.SFT, job_id), "acme", state, **fields)


def condition(subject: str, name: ConditionName = ConditionName.STALLED) -> Condition:
    return Condition(subject, name, utc("2026-12-02T07:10"), "no progress at 40% for 2h")


def test_a_digest_names_each_section() -> None:
    """Completed with duration and cost, failed with its reason, running with progress, open
    conditions; the title counts them; the cost is summed."""
    completed, failed = digest.outcomes(
        [
            moved("job-a", "RUNNING", "COMPLETED", duration="2h 03m 10s",
                  estimated_cost="USD 12.50", display_name="Nightly SFT"),
            moved("job-c", "RUNNING", "FAILED", "2026-12-02T08:15", status_code="INTERNAL",
                  status_message="CUDA OOM at step 7", duration="5m 00s"),
        ]
    )  # fmt: skip
    running = [job("job-d", progress="45", estimated_cost="USD 3.75"), job("job-e", "PENDING")]
    message = digest.build(
        PERIOD,
        completed=completed,
        failed=failed,
        running=running,
        conditions=[condition("sft/job-d")],
        channel=TEAM,
        jobs={j.ref.key: j for j in running},
    )

    assert message is not None
    assert (
        "Digest 2026-12-02 09:00 (UTC): 1 completed, 1 failed, 2 active, 1 open condition"
        == message.title
    )
    assert [
        "Digest for 2026-12-01 09:00 to 2026-12-02 09:00 (UTC, 24h).",
        "",
        "**Completed (1)**",
        "- **Nightly SFT** (`job-a`) COMPLETED at 12-01 14:00 after 2h 03m 10s · USD 12.50",
        "",
        "**Failed (1)**",
        "- **job-c** FAILED at 12-02 08:15 after 5m 00s: INTERNAL: CUDA OOM at step 7",
        "",
        "**Active (2)**",
        "- **job-d** RUNNING, 45% · USD 3.75",
        "- **job-e** PENDING",
        "",
        "**Open conditions (1)**",
        "- **job-d**: stalled since 12-02 07:10: no progress at 40% for 2h",
        "",
        "**Estimated cost**: USD 16.25 (2 jobs with an estimate)",
    ] == message.body.splitlines()


def test_an_hourly_title_shows_the_hour() -> None:
    """An hourly digest names its hour, and times within it as HH:MM."""
    period = digest.period_at("hourly", PARIS, utc("2026-12-02T09:10"))
    message = digest.build(
        period,
        completed=[moved("x", "RUNNING", "COMPLETED", "2026-12-02T08:20")],
        failed=[],
        running=[],
        conditions=[],
        channel=TEAM,
    )

    assert message is not None
    assert "Digest 2026-12-02 09:00-10:00 (Europe/Paris): 1 completed" == message.title
    assert "- **x** COMPLETED at 09:20" in message.body


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param(ChannelPolicy(digest="09:00"), None, id="empty: not sent"),
        pytest.param(
            ChannelPolicy(digest="09:00", digest_empty=True),
            "Digest 2026-12-02 09:00 (UTC): nothing to report",
            id="digest_empty: sent",
        ),
    ],
)
def test_an_empty_digest(policy: ChannelPolicy, expected: str | None) -> None:
    """Nothing in the period and nothing active: no digest, unless the channel asks."""
    message = digest.build(
        PERIOD,
        completed=[],
        failed=[],
        running=[],
        conditions=[],
        channel=Channel("team", (), policy=policy),
    )

    assert expected == (message.title if message else None)
    assert message is None or "Nothing to report" in message.body


def test_the_channel_job_globs_filter_every_section() -> None:
    """A channel with `jobs = ["prod-*"]` hears of its jobs (by id or display name) and of
    the watcher's own trouble, nothing else."""
    channel = Channel("prod", (), Rule(jobs=("prod-*",)))
    completed, failed = digest.outcomes(
        [
            moved("prod-1", "RUNNING", "COMPLETED"),
            moved("dev-1", "RUNNING", "COMPLETED"),
            moved("x9", "RUNNING", "FAILED", display_name="prod-nightly"),
        ]
    )
    message = digest.build(
        PERIOD,
        completed=completed,
        failed=failed,
        running=[job("prod-2"), job("dev-2")],
        conditions=[
            condition("sft/dev-2"),
            condition("sft/prod-2"),
            Condition("api", ConditionName.API_DOWN, utc("2026-12-02T08:00"), "timeout"),
        ],
        channel=channel,
    )

    assert message is not None
    assert "1 completed, 1 failed, 1 active, 2 open conditions" in message.title
    assert "dev-" not in message.body
    assert "**api**: unreachable since" in message.body


def test_only_moves_into_an_outcome_count() -> None:
    """A status change within a state, a baseline first sight, a notice or a resume is no
    outcome; a job created since is; each job appears once per list, at its latest."""
    notice = Event("api", "", "API_UNREACHABLE", utc("2026-12-01T10:00"), (), True, "condition")
    completed, failed = digest.outcomes(
        [
            moved("a", "FAILED", "FAILED", status_message="changed"),
            moved("b", "", "COMPLETED"),
            moved("c", "", "COMPLETED", new_job="1"),
            moved("d", "COMPLETED", "RUNNING"),
            moved("e", "RUNNING", "FAILED", "2026-12-01T10:00"),
            moved("e", "RUNNING", "FAILED", "2026-12-01T11:00", status_message="again"),
            moved("f", "RUNNING", "CANCELLED"),
            moved("g", "UPDATING", "READY", kind="deployment"),
            notice,
        ]
    )

    assert ["dpo/c", "deployment/g"] == [e.job_key for e in completed]
    assert [("dpo/e", "again"), ("dpo/f", "")] == [
        (e.job_key, e.field_map().get("status_message", "")) for e in failed
    ]


def test_sections_are_capped() -> None:
    """Twenty lines a section, then a count of the rest."""
    completed = [moved(f"job-{n:02d}", "RUNNING", "COMPLETED") for n in range(25)]
    message = digest.build(
        PERIOD, completed=completed, failed=[], running=[], conditions=[], channel=TEAM
    )

    assert message is not None
    lines = message.body.splitlines()
    assert "**Completed (25)**" in lines
    assert 20 == sum(line.startswith("- ") for line in lines)
    assert "… and 5 more" == lines[-1]


def test_a_hostile_history_stays_within_bounds() -> None:
    """Thousands of jobs with huge names and reasons: the title and body stay within the
    message limits, every section says how many it left out, mentions are defused."""
    huge = "@everyone " + "x" * 5000
    events = [
        moved(f"j{n}", "RUNNING", "FAILED" if n % 2 else "COMPLETED", display_name=huge,
              status_message=huge, estimated_cost="USD 1.00")
        for n in range(3000)
    ]  # fmt: skip
    completed, failed = digest.outcomes(events)
    running = [job(f"r{n}", display_name=huge, progress="5" * 100) for n in range(3000)]
    message = digest.build(
        PERIOD,
        completed=completed,
        failed=failed,
        running=running,
        conditions=[condition(f"sft/r{n}") for n in range(3000)],
        channel=TEAM,
        cut=True,
    )

    assert message is not None
    assert len(message.title) <= TITLE_LIMIT
    assert len(message.body) <= BODY_LIMIT
    assert "@everyone" not in message.body
    assert f"@{ZERO_WIDTH_SPACE}everyone" in message.body
    assert "**Estimated cost**: USD 3000.00 (3000 jobs with an estimate)" in message.body
    assert "too many" in message.body
    assert 4 == message.body.count(" more")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("USD 12.50", ("USD", Decimal("12.50")), id="money"),
        pytest.param("3.75", ("", Decimal("3.75")), id="a bare number"),
        pytest.param(" USD 0 ", ("USD", Decimal(0)), id="padded"),
        pytest.param("", None, id="empty"),
        pytest.param("USD -1.00", None, id="negative"),
        pytest.param("1e9999", None, id="exponent"),
        pytest.param("NaN", None, id="not a number"),
        pytest.param("USD " + "9" * 30, None, id="too many digits"),
        pytest.param("9" * 100, None, id="too long"),
        pytest.param("usd 1", None, id="lowercase currency"),
    ],
)
def test_parse_cost(text: str, expected: tuple[str, Decimal] | None) -> None:
    """Estimated costs are read within bounds; anything else is no cost."""
    assert expected == digest.parse_cost(text)


def test_costs_in_several_currencies_are_summed_apart() -> None:
    """Each currency has its own total; an unreadable cost is not counted."""
    message = digest.build(
        PERIOD,
        completed=[],
        failed=[],
        running=[
            job("a", estimated_cost="USD 1.50"),
            job("b", estimated_cost="EUR 2"),
            job("c", estimated_cost="USD 1.25"),
            job("d", estimated_cost="lots"),
        ],
        conditions=[],
        channel=TEAM,
    )

    assert message is not None
    assert "**Estimated cost**: EUR 2.00, USD 2.75 (3 jobs with an estimate)" in message.body


def test_active_jobs_are_the_active_ones() -> None:
    """Running, pending and creating jobs count as active; outcomes and paused ones do not."""
    jobs = [job("b", "PENDING"), job("a"), job("c", "COMPLETED"), job("d", "PAUSED")]

    assert ["sft/a", "sft/b"] == [j.ref.key for j in digest.active(jobs)]


def test_a_digest_notice_is_for_its_channel_only() -> None:
    """The notice names its channel, the digest kind and state, and its period."""
    message = digest.build(
        PERIOD, completed=[], failed=[], running=[job("a")], conditions=[], channel=TEAM
    )
    assert message is not None
    notice = digest.digest_notice("team", PERIOD, message)

    assert frozenset({"team"}) == notice.channels
    assert (DIGEST, DIGEST_STATE, "digest") == (notice.kind, notice.new_state, notice.job_key)
    assert ("period", PERIOD.id) in notice.fields
    assert ("job_id", "") in notice.fields
