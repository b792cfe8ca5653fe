"""How the account's own health reads: its suspension, a change of reason, its end."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watcher.core.delivery import ChannelPolicy
from watcher.core.kinds import NOT_FOUND, JobKind
from watcher.core.messages import notify_type, render
from watcher.core.model import JobRef, JobSnapshot, Transition

AT = datetime(2026, 12, 1, 10, 2, tzinfo=UTC)
REF = JobRef(JobKind.ACCOUNT, "acme-prod")


def account(state: str, *, message: str = "") -> JobSnapshot:
    reason = state if state not in ("UNSUSPENDED", NOT_FOUND) else ""
    return JobSnapshot(
        ref=REF,
        account_id="acme-prod",
        state=state,
        status_message=message,
        display_name="Acme Prod",
        account_state="READY",
        reason=reason,
    )


def moved(old: str | None, new: str, *, message: str = "") -> Transition:
    before = None if old is None else account(old)
    return Transition(before, account(new, message=message), AT)


@pytest.mark.parametrize(
    ("old", "new", "title", "tone"),
    [
        (
            "UNSUSPENDED",
            "CREDIT_DEPLETED",
            "account acme-prod suspended (CREDIT_DEPLETED)",
            "failure",
        ),
        (
            "CREDIT_DEPLETED",
            "MONTHLY_SPEND_LIMIT_EXCEEDED",
            "account acme-prod suspended (MONTHLY_SPEND_LIMIT_EXCEEDED, was CREDIT_DEPLETED)",
            "failure",
        ),
        (
            "BLOCKED_BY_ABUSE_RULE",
            "UNSUSPENDED",
            "account acme-prod no longer suspended (was BLOCKED_BY_ABUSE_RULE)",
            "success",
        ),
        (None, "FAILED_PAYMENTS", "account acme-prod suspended (FAILED_PAYMENTS)", "failure"),
        ("UNSUSPENDED", NOT_FOUND, "Acme Prod (acme-prod): UNSUSPENDED → NOT_FOUND", "failure"),
    ],
    ids=["suspended", "another-reason", "back", "first-seen-suspended", "gone"],
)
def test_the_title_says_suspended_and_why_or_that_it_is_back(
    old: str | None, new: str, title: str, tone: str
) -> None:
    """A suspension is named with its reason (and the one before it); its end says which
    suspension ended; a 404 reads as any resource's."""
    message = render(moved(old, new))

    assert (title, tone) == (message.title, notify_type(new))


def test_the_body_says_what_it_means_and_keeps_the_details() -> None:
    """The body says the jobs cannot run, with the account's own state and console link."""
    body = render(moved("UNSUSPENDED", "CREDIT_DEPLETED")).body
    back = render(moved("CREDIT_DEPLETED", "UNSUSPENDED")).body

    assert body.startswith(
        "**Acme Prod** (account `acme-prod`) is suspended: **CREDIT_DEPLETED**. Its jobs "
        "cannot run until this is resolved; running ones may be paused."
    )
    assert "- Reason: CREDIT_DEPLETED" in body
    assert "- Account state: READY" in body
    assert "- Console: https://app.fireworks.ai/account/home" in body
    assert back.startswith(
        "**Acme Prod** (account `acme-prod`) is no longer suspended (was **CREDIT_DEPLETED**): "
        "its jobs can run again."
    )


def test_the_status_message_follows_the_reason_and_templates_get_the_fields() -> None:
    """The account's status message (when the API gives one) ends the title; a channel's
    template may use `{reason}` and `{account_state}`."""
    transition = moved("UNSUSPENDED", "CREDIT_DEPLETED", message="add credits")

    plain = render(transition)
    custom = render(transition, title="{job_id} {reason} {account_state}")

    assert "account acme-prod suspended (CREDIT_DEPLETED): add credits" == plain.title
    assert "acme-prod CREDIT_DEPLETED READY" == custom.title


@pytest.mark.parametrize(
    ("state", "initial", "heard"),
    [
        ("UNSUSPENDED", False, False),
        ("UNSUSPENDED", True, False),
        ("CREDIT_DEPLETED", False, False),
        ("CREDIT_DEPLETED", True, True),
    ],
)
def test_a_healthy_account_first_seen_is_no_news(state: str, initial: bool, heard: bool) -> None:
    """`notify_initial` announces an account first seen suspended, never one first seen
    healthy (watched by default, it would otherwise greet every channel at each start)."""
    policy = ChannelPolicy(notify_initial=initial)

    assert heard is policy.hears_sighting(moved(None, state))
